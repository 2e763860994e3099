"""The `power` job: power against animals per arm by replicate virtual studies (`vtrial power`).

Outputs (written atomically): `power.csv` (`n`, `test`, `comparison`, `power`, `ci_low`,
`ci_high`, `replicates`), `power.png` (power against n with the target line) and
`study_size.json` (the smallest n per test and comparison that reaches the target power,
null when no n of the range does, and the analysis settings).
"""

from __future__ import annotations

from vtrial.analysis.design_plots import plot_power
from vtrial.design.power import check_power_study, power
from vtrial.errors import SpecError
from vtrial.io.optimize_config import BuiltPower, PowerConfig
from vtrial.io.writers import save_figure, write_csv, write_json
from vtrial.jobs.context import RunContext
from vtrial.jobs.optimize import without_variability


def _prepare(cfg: PowerConfig, ctx: RunContext) -> tuple[BuiltPower, dict]:
    """The config with the command line's overrides, checked as `power` checks it:
    (built config, keyword arguments of `power` besides model and arms).

    `--animals-per-arm N` studies N animals per arm only; `--typical` makes every animal
    the typical one (animals then differ by residual error only); `--animals` does not
    apply (each replicate study draws its own animals)."""
    if ctx.animals is not None:
        raise SpecError("--animals", "does not apply to a power config: every replicate study draws its own animals")
    if ctx.animals_per_arm is not None and ctx.animals_per_arm < 2:
        raise SpecError("--animals-per-arm", f"a study needs at least 2 animals per arm, got {ctx.animals_per_arm}")
    built = BuiltPower(cfg)
    population = without_variability(built.population) if ctx.typical else built.population
    kwargs = dict(
        population=population, control=cfg.control_arm, endpoint=built.endpoint, times_h=built.times_h,
        sampling_times_h=built.sampling,
        animals_per_arm=[int(ctx.animals_per_arm)] if ctx.animals_per_arm is not None else cfg.animals_per_arm,
        replicates=cfg.replicates, alpha=cfg.alpha, tests=tuple(cfg.tests), correction=cfg.correction,
        target_power=cfg.target_power,
    )
    check_power_study(built.model, built.arms, **kwargs)
    return built, kwargs


def check_power(cfg: PowerConfig, ctx: RunContext) -> dict:
    """Everything `run_power` checks before its first solve (see `vtrial.jobs.context.Job`)."""
    built, kw = _prepare(cfg, ctx)
    return {"model": cfg.model, "arms": [a.name for a in built.arms], "animals_per_arm": sorted(set(kw["animals_per_arm"])),
            "replicates": cfg.replicates, "tests": list(kw["tests"]), "endpoint": built.endpoint.name}


def run_power(cfg: PowerConfig, ctx: RunContext) -> dict:
    built, kw = _prepare(cfg, ctx)
    seed = cfg.seed if ctx.seed is None else ctx.seed
    result = power(built.model, built.arms, seed=seed, options=built.options, chunk_size=ctx.chunk_size or cfg.chunk_size,
                   progress=ctx.progress, **kw)
    facts = {"seed": seed, "model": cfg.model, "typical": ctx.typical, "target_power": cfg.target_power, "smallest_n": result.smallest_n, **result.facts}
    if not ctx.writer:
        return facts
    out = ctx.out_dir
    write_csv(result.table, out / "power.csv")
    e = built.endpoint
    write_json({
        "smallest_n": result.smallest_n, "target_power": cfg.target_power, "alpha": cfg.alpha, "tests": cfg.tests,
        "correction": cfg.correction if len(cfg.arms) > 2 else "none (one comparison)", "replicates": cfg.replicates,
        "control_arm": cfg.control_arm, "animals_per_arm": sorted(set(kw["animals_per_arm"])),
        "endpoint": {"name": e.name, "observable": e.observable, "statistic": e.statistic, "start_h": e.start_h, "end_h": e.end_h},
    }, out / "study_size.json")
    title = f"{cfg.name}: {cfg.description}" if cfg.description else cfg.name
    comparisons = len(cfg.arms) - 1 if len(cfg.arms) > 2 and cfg.correction != "none" else 1
    save_figure(lambda: plot_power(result.table, cfg.target_power, title=title, alpha=cfg.alpha, comparisons=comparisons), out / "power.png",
                skip=not ctx.figures)
    return facts
