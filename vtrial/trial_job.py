"""The `trial` job: a config-driven virtual trial written to one output folder.

Outputs (all written atomically):
- `trajectories.parquet`: arm, animal, time_h, one column per observable (predictions);
- `observations.parquet`: the same columns at each observable's sampling times, with
  residual error (none under `--typical`); unsampled cells are empty (NaN);
- `animals.parquet`: one row per animal: parameters, covariates, status, n_steps;
- `summary.csv`: per arm, time and observable: n_animals, mean, median, p05, p95;
- `endpoints.csv`: per arm and endpoint: n_animals, mean, median, p05, p95;
- `report.png`: median and 90% band per arm, observation points, dosing shaded.
"""

from __future__ import annotations

import numpy as np

from vtrial.io.trial_config import BuiltTrial, TrialConfig
from vtrial.io.writers import write_csv, write_parquet
from vtrial.jobs import RunContext, register
from vtrial.report import dosing_windows, plot_trial_report
from vtrial.summaries import animal_endpoints, endpoint_table, summary_table
from vtrial.trial import simulate


def unit_of(observable: str) -> str:
    """The unit an observable's name states: `conc_mg_per_l` -> `mg/L`, `paw_swelling_pct` -> `%`."""
    tail = observable.split("_", 1)[-1]
    for prefix in ("volume_", "swelling_"):
        tail = tail.removeprefix(prefix)
    unit = tail.replace("_per_", "/").replace("pct", "%")
    return unit[:-1] + "L" if unit.endswith("/l") else unit


@register("trial", TrialConfig, "virtual trial of a model under arms of dose regimens")
def run_trial(cfg: TrialConfig, ctx: RunContext) -> dict:
    built = BuiltTrial(cfg, ctx.animals_per_arm)
    seed = cfg.seed if ctx.seed is None else ctx.seed
    result = simulate(
        built.model,
        built.arms,
        built.population,
        times_h=built.times_h,
        seed=seed,
        typical=ctx.typical,
        animals=ctx.animals,
        options=built.options,
        chunk_size=cfg.chunk_size,
        on_chunk=ctx.progress,
    )
    out = ctx.out_dir
    arm_order = [a.name for a in built.arms]
    trajectories = result.to_frame()
    write_parquet(trajectories, out / "trajectories.parquet")
    sampling = built.sampling or {name: built.times_h for name in built.population.residual}
    observations = result.observations(sampling, with_error=not ctx.typical)
    write_parquet(observations, out / "observations.parquet")
    animals = result.animals.drop(columns=["arm_index"])
    write_parquet(animals, out / "animals.parquet")

    sol = result.solution
    arms = result.animals["arm"].to_numpy()
    summary = summary_table(arms, sol.times_h, sol.observables, arm_order)
    write_csv(summary, out / "summary.csv")

    ep = cfg.endpoints
    window_h = (ep.inhibition_window_days[0] * 24.0, ep.inhibition_window_days[1] * 24.0)
    per_animal = animal_endpoints(sol.times_h, sol.observables[ep.concentration], sol.observables[ep.response], window_h)
    conc_unit = unit_of(ep.concentration)
    units = {
        "cmax": conc_unit,
        "tmax_h": "h",
        "auc": f"{conc_unit}*h",
        "response_auc_window": f"{unit_of(ep.response)}*h",
        "inhibition_pct": "%",
    }
    endpoints = endpoint_table(arms, arm_order, per_animal, ep.reference_arm, units)
    endpoints.insert(2, "window_days", f"{ep.inhibition_window_days[0]:g}-{ep.inhibition_window_days[1]:g}")
    write_csv(endpoints, out / "endpoints.csv")

    panels = [(ep.concentration, ep.concentration), ("paw_volume_ml", "paw volume (mL)")]
    panels = [(o, lab) for o, lab in panels if o in sol.observables]
    windows = dosing_windows({a.name: a.regimen.records(built.model) for a in built.arms})
    title = f"{cfg.name}: {cfg.description}" if cfg.description else cfg.name
    plot_trial_report(summary, observations, panels, windows, out / "report.png", title=title)
    return {
        "seed": seed,
        "model": cfg.model,
        "typical": ctx.typical,
        "n_animals": int(len(result.animals)),
        "n_failed": int(sol.n_failed),
        "animals_per_arm": {a.name: int(np.sum(arms == a.name)) for a in built.arms},
        "compile_seconds": round(sol.compile_seconds, 3),
        "run_seconds": round(sol.run_seconds, 3),
        "mean_steps_per_animal": float(np.mean(sol.n_steps)),
        "max_steps_per_animal": int(np.max(sol.n_steps)),
    }
