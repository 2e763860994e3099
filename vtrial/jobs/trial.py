"""The `trial` job: a config-driven virtual trial streamed to one output folder.

Outputs (all written atomically):
- `trajectories.parquet`: arm, animal, time_h, one column per observable (predictions);
- `observations.parquet`: the same columns at each observable's sampling times, with
  residual error (none under `--typical`); unsampled cells are empty (NaN);
- `animals.parquet`: one row per animal: parameters, covariates, status, n_steps;
- `summary.csv`: per arm, time and observable: n_animals, mean, median, p05, p95;
- `endpoints.csv`: per arm and endpoint (the model's, as the config's `[endpoints]`
  changes them): window, unit, n_animals, mean, median, p05, p95;
- `report.png`: the model's report panels: median and 90% band per arm, observation
  points, dosing shaded;
- with `--dataset FILE.csv` (`ctx.dataset_out`), also the simulated study as a NONMEM
  dataset (`vtrial.io.nonmem`): ID (1 .. n in the order of `animals.parquet`), TIME, AMT
  (mg), RATE, EVID, CMT, DVID, DV (the observations, with residual error), MDV, the
  model's covariates and ARM; `vtrial fit` reads it back.

The population streams through the trial pipeline (`vtrial.design.trial.trial_chunks`)
chunk by chunk: summaries are accumulated on the fly (`SummaryAccumulator`), and the two
per-animal-per-time tables are written row group by row group, only when asked for
(`ctx.trajectories`; by default when animals x times <= `TRAJECTORY_ROWS_AUTO`). What is
kept for the whole population is one row per animal (parameters, status, steps,
endpoint values): a run of a million CIA-1 animals peaks at about 1.4 GB resident. Rows
appear in simulation order: animals grouped by expected cost (arms with fewer dose events
first), in their original order within a group.
"""

from __future__ import annotations

import warnings
from contextlib import ExitStack

import numpy as np
import pandas as pd

from vtrial.analysis.endpoints import endpoint_table, endpoint_values, nonfinite_endpoints
from vtrial.analysis.report import dosing_windows, plot_trial_report
from vtrial.analysis.summaries import SummaryAccumulator
from vtrial.analysis.tables import frame, observation_columns, trajectory_columns
from vtrial.design.trial import check_observed, check_trial, prepare_trial, sampling_masks, trial_chunks
from vtrial.engine import distributed
from vtrial.engine.solve import STATUS_NAMES
from vtrial.errors import RunWarning, SpecError
from vtrial.io.nonmem_writer import DatasetWriter, check_dataset_path, dataset_columns
from vtrial.io.trial_config import BuiltTrial, TrialConfig
from vtrial.io.writers import ParquetStream, preload_matplotlib, save_figure, write_csv, write_parquet
from vtrial.jobs.context import RunContext

#: Write trajectories/observations by default up to this many animal-times.
TRAJECTORY_ROWS_AUTO = 10_000_000
#: Observation points of up to this many animals per arm are drawn in the report.
REPORT_ANIMALS_PER_ARM = 100


def check_trial_config(cfg: TrialConfig, ctx: RunContext) -> dict:
    """Everything `run_trial` checks before its first solve (see `vtrial.jobs.context.Job`)."""
    built = BuiltTrial(cfg, ctx.animals_per_arm)
    arms, population, _, table = check_trial(built.model, built.arms, built.population, times_h=built.times_h, animals=ctx.animals)
    sampling = built.sampling or {name: built.times_h for name in population.residual}
    masks = sampling_masks(built.times_h, sampling, built.model.observable_names)
    if not ctx.typical:
        check_observed(population, tuple(masks))
    _check_dataset_out(ctx, masks)
    n = len(table) if table is not None else (len(arms) if ctx.typical else sum(a.n_animals for a in arms))
    return {"model": cfg.model, "arms": [a.name for a in arms], "n_animals": n, "n_times": int(built.times_h.size),
            "endpoints": [e.name for e in built.endpoints]}


def _check_dataset_out(ctx: RunContext, masks) -> None:
    """`--dataset FILE.csv` needs a CSV name and something sampled to write."""
    if ctx.dataset_out is None:
        return
    check_dataset_path(ctx.dataset_out)
    if not masks:
        raise SpecError("--dataset", "the trial samples no observable: add [sampling.<observable>] or "
                                     "[residual.<observable>] so that the dataset has observation rows")


def run_trial(cfg: TrialConfig, ctx: RunContext) -> dict:
    built = BuiltTrial(cfg, ctx.animals_per_arm)
    seed = cfg.seed if ctx.seed is None else ctx.seed
    model, times = built.model, built.times_h
    inputs = prepare_trial(model, built.arms, built.population, times_h=times, seed=seed, typical=ctx.typical, animals=ctx.animals)
    table = inputs.animals
    n = len(table)
    sampling = built.sampling or {name: times for name in built.population.residual}
    masks = sampling_masks(times, sampling, model.observable_names)
    _check_dataset_out(ctx, masks)
    write_rows = ctx.trajectories if ctx.trajectories is not None else n * times.size <= TRAJECTORY_ROWS_AUTO
    chunks = trial_chunks(
        model, inputs, times, seed=seed, observed=tuple(masks), with_error=not ctx.typical, options=built.options,
        chunk_size=ctx.chunk_size or cfg.chunk_size, store=ctx.chunk_store, endpoints=built.endpoints,
    )
    arm_order = [a.name for a in built.arms]
    arm_name, arm_index, animal = (table[c].to_numpy() for c in ("arm", "arm_index", "animal"))
    # Names and text IDs as codes, so the per-row columns hold no Python strings.
    arm_codes = pd.Categorical.from_codes(arm_index, categories=arm_order)
    animal_ids = pd.Categorical(animal) if animal.dtype == object else animal
    summary = SummaryAccumulator(arm_order, times, model.observable_names, n)
    status, steps = np.zeros(n, np.int32), np.zeros(n, np.int64)
    per_animal = {e.name: np.full(n, np.nan) for e in built.endpoints}
    report_points, done = [], 0
    writer = ctx.writer and distributed.is_writer()
    with ExitStack() as files:
        if writer and write_rows:
            trajectories = files.enter_context(ParquetStream(ctx.out_dir / "trajectories.parquet"))
            observations = files.enter_context(ParquetStream(ctx.out_dir / "observations.parquet"))
        if writer and ctx.dataset_out is not None:  # the simulated study as a NONMEM dataset, from the same chunks
            dataset = files.enter_context(DatasetWriter(ctx.dataset_out))
            covariate_names = [c for c in model.covariate_names if c in inputs.params]
        if writer and ctx.figures:
            preload_matplotlib()  # the report figure's import overlaps the solve
        for chunk in chunks:
            done += chunk.rows.size
            if ctx.progress is not None:
                ctx.progress(done, n)
            if not writer:  # other processes only help compute
                continue
            i, pred = chunk.rows, chunk.predictions
            status[i], steps[i] = chunk.status, chunk.n_steps
            summary.add(arm_index[i], pred)
            for name, v in endpoint_values(built.endpoints, times, pred, exact=chunk.exact).items():
                per_animal[name][i] = v
            if write_rows:
                trajectories.write_columns(trajectory_columns(arm_codes[i], animal_ids[i], times, pred))
                observations.write_columns(observation_columns(arm_codes[i], animal_ids[i], times, chunk.observations, masks))
            if ctx.dataset_out is not None:
                dataset.write(dataset_columns(
                    model, i + 1, inputs.doses.take(i), times, chunk.observations, masks,
                    {c: inputs.params[c][i] for c in covariate_names}, arm=arm_name[i],
                    occasion_start_h=built.population.occasion_start_h if built.population.iov else (),
                ))
            shown = inputs.position[i] < REPORT_ANIMALS_PER_ARM
            if shown.any():
                obs = {k: v[shown] for k, v in chunk.observations.items()}
                report_points.append(frame(observation_columns(arm_name[i][shown], animal[i][shown], times, obs, masks)))
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
    units = {e.name: e.unit(model.observable(e.observable).unit) for e in built.endpoints}
    treatments = {p.name for p in model.parameters if p.treatment}
    treated = [a.name for a in built.arms if a.regimen.doses or treatments & set(a.parameters)]
    endpoints = endpoint_table(arm_name, arm_order, per_animal, built.endpoints, units, times, cfg.endpoints.reference_arm,
                               treated_arms=treated, measures={o.name: o.description for o in model.observables})
    write_csv(endpoints, out / "endpoints.csv")
    for message in nonfinite_endpoints(arm_name, arm_order, per_animal, status == 0):
        warnings.warn(RunWarning(message), stacklevel=1)

    windows = dosing_windows({a.name: a.regimen.records(model) for a in built.arms})
    title = f"{cfg.name}: {cfg.description}" if cfg.description else cfg.name
    points = pd.concat(report_points, ignore_index=True) if report_points else pd.DataFrame(columns=["arm", "time_h"])
    save_figure(lambda: plot_trial_report(summary_frame, points, model.report_panels(), windows, title=title,
                                          time_unit=model.report_time_unit), out / "report.png", skip=not ctx.figures)
    return {
        **facts,
        "n_failed": int(np.count_nonzero(status)),
        "mean_steps_per_animal": float(np.mean(steps)),
        "max_steps_per_animal": int(np.max(steps)),
        "lockstep_waste": round(chunks.lockstep_waste, 6),
        "trajectories": bool(write_rows),
        **({"dataset": str(ctx.dataset_out)} if ctx.dataset_out is not None else {}),
        "summary_quantiles": summary.method,
    }
