"""The `optimize` job: the least-drug regimen meeting a target attainment (`vtrial optimize`).

Outputs (all written atomically into the run folder):
- `optimal_regimen.json`: feasible yes/no; the regimen (shape, daily dose, total drug per
  animal in mg/kg and mg), its PTA with a Clopper-Pearson 95% interval on the animals it
  was chosen on and on fresh animals, the share of animals meeting each requirement, the
  binding constraints, the agreement of the grid and gradient searches, the gradient
  search per shape, and (optionally) the PTA across typical-value draws; when infeasible,
  the best attainable PTA and the regimen that gives it instead;
- `attainment.csv`: one row per grid candidate (regimen parameters, PTA and interval,
  per requirement the share meeting it and the median of its endpoint); without a grid,
  one row per shape from the gradient search;
- `attainment.png`: PTA against daily dose per regimen shape, with the target line;
- `chosen_regimen.png`: the model's report panels and the target's observable under the
  chosen regimen (the best attainable one when infeasible) against vehicle, median and
  90% band of the training animals;
- `gradient_history.csv`: one row per evaluation of the gradient search.

Infeasibility is a result, not an error: the facts say `feasible: false` and the command
line exits with status 4 after the folder is written.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from vtrial.analysis.design_plots import plot_attainment
from vtrial.analysis.report import dosing_windows, plot_trial_report
from vtrial.analysis.summaries import summary_table
from vtrial.design.dosing import Regimen
from vtrial.design.optimize import OptimizationResult, check_optimization, optimize
from vtrial.design.population import Population
from vtrial.design.trial import Arm, simulate
from vtrial.io.optimize_config import BuiltOptimization, OptimizeConfig
from vtrial.errors import SpecError
from vtrial.limits import grid_size
from vtrial.io.writers import save_figure, write_csv, write_json
from vtrial.jobs.context import RunContext
from vtrial.models.base import Panel

#: Animals drawn in `chosen_regimen.png` (the first of the training animals).
FIGURE_ANIMALS = 500


def without_variability(population: Population) -> Population:
    """The same population with every animal the typical one (`--typical`): no random
    effects, covariates at their medians."""
    return replace(population, iiv_names=(), omega=np.zeros((0, 0)),
                   covariates=tuple(replace(c, cv=0.0) for c in population.covariates))


def _prepare(cfg: OptimizeConfig, ctx: RunContext) -> tuple[BuiltOptimization, dict]:
    """The config with the command line's overrides, checked as `optimize` checks it:
    (built config, keyword arguments of `optimize` besides model, space and requirements).

    `--animals-per-arm N` sets the training and the fresh animals to N; `--typical` makes
    every animal the typical one (one animal each, no variability); `--animals` does not
    apply (the animals are drawn from the population, the same for every candidate)."""
    if ctx.animals is not None:
        raise SpecError("--animals", "does not apply to an optimize config: its animals are drawn from the population "
                        "(set animals, verify_animals and [variability] instead)")
    built = BuiltOptimization(cfg)
    out = cfg.output
    grid_size("output", out.start_h, out.end_h, out.every_h)  # the span of chosen_regimen.png
    n, verify = cfg.animals, cfg.verify_animals
    if ctx.animals_per_arm is not None:
        n = verify = int(ctx.animals_per_arm)
    population = built.population
    if ctx.typical:
        population, n, verify = without_variability(population), 1, 1
    kwargs = dict(population=population, n_animals=n, verify_animals=verify, seed=cfg.seed if ctx.seed is None else ctx.seed,
                  methods=tuple(cfg.methods), every_h=cfg.output.every_h, options=built.options,
                  chunk_size=ctx.chunk_size or cfg.chunk_size, gradient=built.gradient, uncertainty=built.uncertainty)
    check_optimization(built.model, built.space, built.target, built.constraints, population, n_animals=n, verify_animals=verify,
                       methods=kwargs["methods"], every_h=kwargs["every_h"], uncertainty=built.uncertainty)
    return built, kwargs


def check_optimize(cfg: OptimizeConfig, ctx: RunContext) -> dict:
    """Everything `run_optimize` checks before its first solve (see `vtrial.jobs.context.Job`)."""
    built, kw = _prepare(cfg, ctx)
    n_candidates = built.space.n_shapes * built.space.grid_points
    return {"model": cfg.model, "methods": list(kw["methods"]), "shapes": built.space.n_shapes, "candidates": n_candidates,
            "animals": kw["n_animals"], "requirements": [built.target.name, *(c.name for c in built.constraints)]}


def run_optimize(cfg: OptimizeConfig, ctx: RunContext) -> dict:
    built, kw = _prepare(cfg, ctx)
    seed = kw["seed"]
    progress = None if ctx.progress is None else (lambda phase, done, total: ctx.progress(done, total))
    result = optimize(built.model, built.space, built.target, built.constraints, progress=progress, **kw)
    summary = optimal_regimen(result, built)
    facts = {"seed": seed, "model": cfg.model, "typical": ctx.typical, "feasible": result.feasible, "regimen": summary["regimen"],
             "best_attainable": summary["best_attainable"], "agreement": summary["method_agreement"], **result.facts}
    if not ctx.writer:
        return facts
    out = ctx.out_dir
    write_json(summary, out / "optimal_regimen.json")
    if result.attainment is not None:
        write_csv(result.attainment, out / "attainment.csv")
    else:
        write_csv(_gradient_rows(result.gradient["per_shape"]), out / "attainment.csv")
    if result.gradient is not None:
        write_csv(result.gradient["history"], out / "gradient_history.csv")
    title = f"{cfg.name}: {cfg.description}" if cfg.description else cfg.name
    table = result.attainment if result.attainment is not None else pd.DataFrame(columns=["shape", "daily_dose_mg_per_kg", "pta", "pta_ci_low", "pta_ci_high"])
    save_figure(lambda: plot_attainment(table, built.target.fraction, chosen=result.chosen,
                                        gradient=result.gradient["per_shape"] if result.gradient else None, title=title,
                                        target_label=built.target.describe()), out / "attainment.png", skip=not ctx.figures)
    shown = result.chosen or result.best_attainable
    if shown is not None:
        save_figure(lambda: _chosen_figure(built, result, shown, title), out / "chosen_regimen.png", skip=not ctx.figures)
    return facts


def _gradient_rows(per_shape: list[dict]) -> pd.DataFrame:
    """`attainment.csv` without a grid: one row per shape of the gradient search."""
    rows = []
    for g in per_shape:
        row = {k: v for k, v in g.items() if k not in ("shares", "binding_constraints")}
        row.update({f"{k}_share": v for k, v in g["shares"].items()}, binding_constraints=", ".join(g["binding_constraints"]))
        rows.append(row)
    return pd.DataFrame(rows)


def optimal_regimen(result: OptimizationResult, built: BuiltOptimization) -> dict:
    """The contents of `optimal_regimen.json`."""
    model = built.model
    units = {r.name: model.observable(r.endpoint.observable).unit for r in result.requirements}
    chosen = result.chosen
    message = ("the least-drug regimen meeting every requirement" if result.feasible else
               "no regimen in the space meets every requirement; best_attainable gives the highest PTA reached")
    return {
        "feasible": result.feasible,
        "message": message,
        "regimen": chosen["regimen"] if chosen else None,
        "chosen": chosen,
        "total_drug_mg_per_kg": chosen["total_mg_per_kg"] if chosen else None,
        "total_drug_mg_per_animal": chosen["total_mg_per_animal"] if chosen else None,
        "pta": chosen["pta"] if chosen else None,
        "pta_ci95": [chosen["pta_ci_low"], chosen["pta_ci_high"]] if chosen and "pta_ci_low" in chosen else None,
        "binding_constraints": chosen["binding_constraints"] if chosen else None,
        "best_attainable": result.best_attainable,
        "method_agreement": result.agreement,
        "requirements": [{"name": r.name, "role": "target" if i == 0 else "constraint", "fraction": r.fraction,
                          "description": r.describe(units[r.name])} for i, r in enumerate(result.requirements)],
        "gradient": None if result.gradient is None else {k: v for k, v in result.gradient.items() if k != "history"},
        "space": {"n_shapes": len(result.space.shapes()), "grid_points": result.space.grid_points,
                  "daily_dose_mg_per_kg": list(result.space.daily_dose_range), "grid_step_ratio": result.space.grid_step_ratio},
        "animals": {"training": len(result.animals), "mean_bw_kg": float(result.animals["bw"].mean())},
    }


def _chosen_figure(built: BuiltOptimization, result: OptimizationResult, shown: dict, title: str):
    """Vehicle against the shown regimen on the first training animals."""
    model, cfg = built.model, built.cfg
    space = result.space
    shape = next(s for s in space.shapes() if s.label == shown["shape"])
    regimen = shape.regimen(shown["daily_dose_mg_per_kg"], shown["regimen"])
    label = ("chosen: " if result.feasible else "best attainable: ") + shown["regimen"]
    arms = (Arm("vehicle", Regimen()), Arm(label, regimen))
    animals = result.animals.iloc[:FIGURE_ANIMALS]
    table = pd.concat([animals.assign(arm=a.name) for a in arms], ignore_index=True)
    times = np.unique(np.append(np.arange(cfg.output.start_h, cfg.output.end_h, cfg.output.every_h), cfg.output.end_h))
    sim = simulate(model, arms, built.population, times_h=times, animals=table, options=built.options,
                   chunk_size=min(cfg.chunk_size, 2 * len(animals)), states=False)
    summary = summary_table(sim.animals["arm"].to_numpy(), times, sim.solution.observables, [a.name for a in arms])
    panels = list(model.report_panels())
    for r in result.requirements:
        if r.endpoint.observable not in [p.observable for p in panels]:
            panels.append(Panel(r.endpoint.observable, f"{r.endpoint.observable} ({model.observable(r.endpoint.observable).unit})"))
    windows = dosing_windows({a.name: a.regimen.records(model) for a in arms})
    return plot_trial_report(summary, pd.DataFrame(columns=["arm", "time_h"]), panels, windows,
                             title=f"{title}\n{label}", time_unit=model.report_time_unit)
