"""The `power` job: power against animals per arm by replicate virtual studies (`vtrial power`).

Outputs (written atomically): `power.csv` (`n`, `test`, `comparison`, `power`, `ci_low`,
`ci_high`, `replicates`), `power.png` (power against n with the target line) and
`study_size.json` (the smallest n per test and comparison that reaches the target power,
null when no n of the range does, and the analysis settings).
"""

from __future__ import annotations

from vtrial.analysis.design_plots import plot_power
from vtrial.design.power import power
from vtrial.io.optimize_config import BuiltPower, PowerConfig
from vtrial.io.writers import save_figure, write_csv, write_json
from vtrial.jobs.context import RunContext


def run_power(cfg: PowerConfig, ctx: RunContext) -> dict:
    built = BuiltPower(cfg)
    seed = cfg.seed if ctx.seed is None else ctx.seed
    result = power(
        built.model, built.arms, built.population, control=cfg.control_arm, endpoint=built.endpoint, times_h=built.times_h,
        sampling_times_h=built.sampling, animals_per_arm=cfg.animals_per_arm, replicates=cfg.replicates, alpha=cfg.alpha,
        tests=cfg.tests, correction=cfg.correction, target_power=cfg.target_power, seed=seed, options=built.options,
        chunk_size=ctx.chunk_size or cfg.chunk_size, progress=ctx.progress,
    )
    facts = {"seed": seed, "model": cfg.model, "target_power": cfg.target_power, "smallest_n": result.smallest_n, **result.facts}
    if not ctx.writer:
        return facts
    out = ctx.out_dir
    write_csv(result.table, out / "power.csv")
    e = built.endpoint
    write_json({
        "smallest_n": result.smallest_n, "target_power": cfg.target_power, "alpha": cfg.alpha, "tests": cfg.tests,
        "correction": cfg.correction if len(cfg.arms) > 2 else "none (one comparison)", "replicates": cfg.replicates,
        "control_arm": cfg.control_arm, "animals_per_arm": sorted(set(cfg.animals_per_arm)),
        "endpoint": {"name": e.name, "observable": e.observable, "statistic": e.statistic, "start_h": e.start_h, "end_h": e.end_h},
    }, out / "study_size.json")
    title = f"{cfg.name}: {cfg.description}" if cfg.description else cfg.name
    save_figure(plot_power(result.table, cfg.target_power, title=title), out / "power.png")
    return facts
