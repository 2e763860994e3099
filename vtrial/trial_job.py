"""The `trial` job: a config-driven virtual trial written to one output folder.

Outputs (all written atomically):
- `trajectories.parquet`: arm, animal, time_h, one column per observable (predictions);
- `observations.parquet`: the same columns at each observable's sampling times, with
  residual error (none under `--typical`); unsampled cells are empty (NaN);
- `animals.parquet`: one row per animal: parameters, covariates, status, n_steps;
- `summary.csv`: per arm, time and observable: n_animals, mean, median, p05, p95;
- `endpoints.csv`: per arm and endpoint: n_animals, mean, median, p05, p95;
- `report.png`: median and 90% band per arm, observation points, dosing shaded.

The population streams through chunk by chunk (`vtrial.simulate.iter_population_chunks`):
summaries are computed on the fly (`SummaryAccumulator`), and the two per-animal-per-time
tables are written row group by row group, only when asked for (`ctx.trajectories`;
by default when animals x times <= `TRAJECTORY_ROWS_AUTO`). What is kept for the whole
population is one row per animal (parameters, status, steps, endpoint values): a run of
a million CIA-1 animals peaks at about 1.4 GB resident. Rows appear in simulation order: animals
grouped by expected cost (arms with fewer dose events first), in their original order
within a group.
"""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np
import pandas as pd

from vtrial import distributed
from vtrial.io.trial_config import BuiltTrial, TrialConfig
from vtrial.io.writers import ParquetStream, write_csv, write_parquet
from vtrial.jobs import RunContext, register
from vtrial.report import dosing_windows, plot_trial_report
from vtrial.simulate import STATUS_NAMES, iter_population_chunks
from vtrial.summaries import SummaryAccumulator, animal_endpoints, endpoint_table
from vtrial.trial import observation_frame, prepare_trial, sampling_masks, trajectory_frame

#: Write trajectories/observations by default up to this many animal-times.
TRAJECTORY_ROWS_AUTO = 10_000_000
#: Observation points of up to this many animals per arm are drawn in the report.
REPORT_ANIMALS_PER_ARM = 100


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
    model, times = built.model, built.times_h
    inputs = prepare_trial(model, built.arms, built.population, times_h=times, seed=seed, typical=ctx.typical, animals=ctx.animals)
    table = inputs.animals
    n = len(table)
    sampling = built.sampling or {name: times for name in built.population.residual}
    masks = sampling_masks(times, sampling, model.observable_names)
    write_rows = ctx.trajectories if ctx.trajectories is not None else n * times.size <= TRAJECTORY_ROWS_AUTO
    chunks = iter_population_chunks(
        model, inputs.params, inputs.doses, times, options=built.options, chunk_size=ctx.chunk_size or cfg.chunk_size,
        states=False, store=ctx.chunk_store,
    )
    ep = cfg.endpoints
    window_h = (ep.inhibition_window_days[0] * 24.0, ep.inhibition_window_days[1] * 24.0)
    arm_order = [a.name for a in built.arms]
    arm_name, arm_index, animal = (table[c].to_numpy() for c in ("arm", "arm_index", "animal"))
    rank_in_arm = np.arange(n) - np.searchsorted(arm_index, arm_index)  # rows are sorted by arm
    summary = SummaryAccumulator(arm_order, times, model.observable_names, n)
    status, steps = np.zeros(n, np.int32), np.zeros(n, np.int64)
    per_animal: dict[str, np.ndarray] = {}
    report_points, done = [], 0
    writer = ctx.writer and distributed.is_writer()
    with ExitStack() as files:
        if writer and write_rows:
            trajectories = files.enter_context(ParquetStream(ctx.out_dir / "trajectories.parquet"))
            observations = files.enter_context(ParquetStream(ctx.out_dir / "observations.parquet"))
        for chunk in chunks:
            done += chunk.animals.size
            if ctx.progress is not None:
                ctx.progress(done, n)
            if not writer:  # other processes only help compute
                continue
            i, obs = chunk.animals, chunk.observables
            status[i], steps[i] = chunk.status, chunk.n_steps
            summary.add(arm_index[i], obs)
            for name, v in animal_endpoints(times, obs[ep.concentration], obs[ep.response], window_h).items():
                per_animal.setdefault(name, np.full(n, np.nan))[i] = v
            shown = rank_in_arm[i] < REPORT_ANIMALS_PER_ARM
            if not (write_rows or shown.any()):
                continue
            rows = slice(None) if write_rows else shown
            noisy = observation_frame(
                arm_name[i][rows], arm_index[i][rows], animal[i][rows], times, {k: v[rows] for k, v in obs.items()},
                masks, built.population, seed, with_error=not ctx.typical, pad_to=chunks.plan.chunk_size,
            )
            if write_rows:
                trajectories.write(trajectory_frame(arm_name[i], animal[i], times, obs))
                observations.write(noisy)
                noisy = noisy[np.repeat(shown, len(noisy) // max(1, i.size))]
            report_points.append(noisy)
    facts = {
        "seed": seed,
        "model": cfg.model,
        "typical": ctx.typical,
        "n_animals": n,
        "animals_per_arm": {a.name: int(np.sum(arm_name == a.name)) for a in built.arms},
        "compile_seconds": round(chunks.compile_seconds, 3),
        "run_seconds": round(chunks.run_seconds, 3),
        "chunk_size": chunks.plan.chunk_size,
        "n_chunks": chunks.plan.n_chunks,
        "chunks_computed": chunks.chunks_computed,
        "chunks_resumed": chunks.chunks_resumed,
        **distributed.describe(chunks.mesh),
    }
    if not writer:
        return facts

    out = ctx.out_dir
    animals = table.drop(columns=["arm_index"])
    animals["status"] = np.asarray(STATUS_NAMES, dtype=object)[status]
    animals["n_steps"] = steps
    write_parquet(animals, out / "animals.parquet")
    summary_frame = summary.table()
    write_csv(summary_frame, out / "summary.csv")

    conc_unit = unit_of(ep.concentration)
    units = {
        "cmax": conc_unit,
        "tmax_h": "h",
        "auc": f"{conc_unit}*h",
        "response_auc_window": f"{unit_of(ep.response)}*h",
        "inhibition_pct": "%",
    }
    endpoints = endpoint_table(arm_name, arm_order, per_animal, ep.reference_arm, units)
    endpoints.insert(2, "window_days", f"{ep.inhibition_window_days[0]:g}-{ep.inhibition_window_days[1]:g}")
    write_csv(endpoints, out / "endpoints.csv")

    panels = [(ep.concentration, ep.concentration), ("paw_volume_ml", "paw volume (mL)")]
    panels = [(o, lab) for o, lab in panels if o in model.observable_names]
    windows = dosing_windows({a.name: a.regimen.records(model) for a in built.arms})
    title = f"{cfg.name}: {cfg.description}" if cfg.description else cfg.name
    points = pd.concat(report_points, ignore_index=True) if report_points else pd.DataFrame(columns=["arm", "time_h"])
    plot_trial_report(summary_frame, points, panels, windows, out / "report.png", title=title)
    return {
        **facts,
        "n_failed": int(np.count_nonzero(status)),
        "mean_steps_per_animal": float(np.mean(steps)),
        "max_steps_per_animal": int(np.max(steps)),
        "lockstep_waste": round(chunks.lockstep_waste, 6),
        "trajectories": bool(write_rows),
        "summary_quantiles": summary.method,
    }
