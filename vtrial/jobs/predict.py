"""`vtrial predict CONFIG DATA.csv`: a model's predictions for a dataset's own records.

The config is a fit config (its values used as given, as NONMEM's MAXEVAL=0) or a trial
config (its model and population). The dataset is read as `vtrial fit` reads it
(`vtrial.io.nonmem.read_nonmem`, with a fit config's `[data]` mapping; a trial config
uses the default mapping, which reads what `vtrial run --dataset` writes).

`predictions.csv` keeps every row of the dataset, in its order, with all its columns as
written, and adds (on observation rows; empty on dose and other rows), in the DV unit:
- `PRED`: the prediction at the typical values (no random effects; covariate effects
  with the subject's covariates);
- `IPRED`: the prediction at the subject's individual values: from `--individual FILE`
  (a fit's `individual.csv`, or any table with `ID` and columns named after model
  parameters), else from dataset columns named after model parameters (`CL` for `cl`,
  one value per subject), else for a fit config with random effects the EBEs at the
  config's values (NONMEM's POSTHOC with MAXEVAL=0), else, without random effects, PRED;
  empty for a trial config with random effects and no individual values;
- with `replicates` N > 0 (NONMEM's $SIMULATION with N subproblems), the long form: the
  dataset's rows repeated N times, a first column `REP` (1..N) and `SIM_DV`, a simulated
  observation with new random effects and residual error (seeded: `seed`).

The simulations are those of the fit's VPC (`vtrial.design.replicate_study`); the EBEs
come from the estimation itself (`vtrial.estimation.fit_population` with no iterations).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from vtrial.design.occasions import dataset_occasions
from vtrial.design.population import Population, ResidualError
from vtrial.design.replicate_study import simulate_replicate_studies
from vtrial.engine import distributed
from vtrial.errors import DataError, SpecError
from vtrial.io.fit_config import BuiltFit
from vtrial.io.nonmem import DataSpec, read_nonmem
from vtrial.io.nonmem_source import read_source
from vtrial.io.run_folder import RunFolder, output_folder
from vtrial.io.tables import read_table
from vtrial.io.trial_config import BuiltTrial
from vtrial.io.writers import write_csv
from vtrial.limits import MAX_SEED
from vtrial.version import __version__

#: Replicates allowed (each repeats the dataset's rows in predictions.csv).
MAX_REPLICATES = 10_000


@dataclass(frozen=True)
class Predictions:
    """What `predict` computed: `table` (predictions.csv), `ipred_source` (where IPRED
    came from), `ofv` (the objective at the config's values when the EBEs were computed,
    else None), `replicates`."""

    table: pd.DataFrame
    ipred_source: str
    ofv: float | None
    replicates: int


def _population(prepared) -> tuple[object, Population, DataSpec, object, object]:
    """(model, population, data mapping, solver options, BuiltFit or None) of a fit or trial config."""
    if prepared.kind == "fit":
        built = BuiltFit(prepared.spec)
        population = Population(built.model, typical=built.typical, iiv_names=built.iiv_names, omega=built.omega,
                                covariate_effects=built.covariate_effects, residual=dict(built.residual), iov=dict(built.iov))
        return built.model, population, built.data, built.options, built
    built = BuiltTrial(prepared.spec)
    return built.model, built.population, DataSpec(), built.options, None


def _id_key(v) -> str:
    try:
        f = float(v)
        return repr(int(f)) if f.is_integer() else repr(f)
    except (TypeError, ValueError):
        return str(v).strip()


def _individual_values(model, ids, table: pd.DataFrame, source: str, per_row: bool) -> dict[str, np.ndarray]:
    """Model parameters given per subject by `table` (columns matched case-insensitively)."""
    by_lower = {c.lower(): c for c in table.columns}
    params = [p for p in model.parameter_names if p.lower() in by_lower]
    if not params:
        return {}
    id_col = by_lower.get("id")
    if id_col is None:
        raise DataError(f"{source}: no ID column to match its individual values to the dataset's subjects")
    keys = table[id_col].map(_id_key)
    out = {}
    for p in params:
        col = by_lower[p.lower()]
        values = pd.to_numeric(table[col], errors="coerce")
        first = values.groupby(keys, sort=False).first()
        if per_row and (values.groupby(keys, sort=False).nunique() > 1).any():
            raise DataError(f"{source}, column {col}: an individual value of {p} must be the same on every row of a subject")
        wanted = [_id_key(i) for i in ids]
        missing = [i for i in wanted if i not in first.index]
        if missing:
            raise DataError(f"{source}: no row for subject ID {missing[0]} (column {col})")
        v = first.loc[wanted].to_numpy(float)
        if not np.all(np.isfinite(v)):
            raise DataError(f"{source}, column {col}: subject ID {wanted[int(np.flatnonzero(~np.isfinite(v))[0])]} has no number")
        out[p] = v
    model.validate_values(out, source)
    return out


def predict(config, data, *, individual=None, replicates: int = 0, seed: int = 0) -> Predictions:
    """Predictions of a fit or trial config's model for the records of a NONMEM-style
    dataset (see the module docstring). **Raises** `SpecError`/`DataError` naming the key,
    file, row or column, before anything is compiled."""
    from vtrial.jobs.run import _kind_of, _prepare, _read_config

    if isinstance(replicates, bool) or not isinstance(replicates, int) or not 0 <= replicates <= MAX_REPLICATES:
        raise SpecError("--replicates", f"must be a whole number in [0, {MAX_REPLICATES:,}], got {replicates!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise SpecError("--seed", f"must be a whole number in [0, {MAX_SEED}], got {seed!r}")
    if not Path(data).is_file():
        raise SpecError("DATA", f"{data}: file not found")
    kind = _kind_of(_read_config(config)[0])
    if kind not in ("fit", "trial"):
        raise SpecError("kind", f"vtrial predict takes a fit or trial config; this is a {kind!r} config")
    prepared = _prepare(config, seed=None, animals_per_arm=None, chunk_size=None, animals=None)
    model, population, spec, options, built = _population(prepared)
    # Observation rows need no DV to be predicted (NONMEM's $SIMULATION datasets have none).
    dataset = read_nonmem(data, model, spec, dv_required=False)
    data_source = getattr(spec, "source", None)  # an imported control stream's $INPUT/$DATA: the rows it reads
    rows = read_source(data_source, Path(data)) if data_source is not None else pd.read_csv(data, dtype=str, keep_default_na=False)
    scale = np.asarray(dataset.dv_scale, float)
    # A fit config's additive residual SDs are in the DV unit; the simulation's in the model's.
    if built is not None:
        population = replace(population, residual={
            k: ResidualError(r.additive / scale[model.observable_names.index(k)], r.proportional) for k, r in population.residual.items()})
    mask = np.asarray(dataset.obs_mask, bool)
    row = np.asarray(dataset.obs_row)[mask] - 1  # 0-based rows of the dataset's observations
    obs_scale = scale[np.asarray(dataset.obs_observable)[mask]]

    def simulate(pop: Population, covariates, n: int = 1, seed: int = 0) -> np.ndarray:
        sims = simulate_replicate_studies(pop, dataset.doses, covariates, dataset.obs_time_h, dataset.obs_observable,
                                          replicates=n, seed=seed, options=options, occasions=dataset_occasions(dataset))
        return sims[:, mask] * obs_scale[None]

    given, source = {}, ""
    if individual is not None:
        if not Path(individual).is_file():
            raise SpecError("--individual", f"{individual}: file not found")
        table = read_table(individual)
        if any(str(c).lower() == "occ" for c in table.columns):
            raise DataError(f"{individual}: per-occasion individual values (an OCC column, as a fit with [variability.occasions] "
                            "writes) are not taken by --individual; leave it out: a fit config's IPRED then comes from the EBEs "
                            "at its values, occasion by occasion")
        given = _individual_values(model, dataset.ids, table, str(individual), per_row=False)
        if not given:
            raise DataError(f"{individual}: no column names a parameter of model {model.name} ({', '.join(model.parameter_names)})")
        source = f"individual values of {Path(individual).name}"
    else:
        given = _individual_values(model, dataset.ids, rows, str(data), per_row=True)
        columns = [c for c in rows.columns if c.lower() in given]
        source = f"individual values in the dataset's columns {', '.join(columns)}" if given else ""
    typical_only = replace(population, iiv_names=(), omega=np.zeros((0, 0)), residual={}, iov={})
    pred = simulate(typical_only, dataset.covariates)[0]
    ofv = None
    if given:
        effects = tuple(e for e in population.covariate_effects if e.parameter not in given)
        ipred = simulate(replace(typical_only, covariate_effects=effects), {**dataset.covariates, **given})[0]
    elif built is not None and built.iiv_names and dataset.n_observations:
        from vtrial.estimation import fit_population

        fit = fit_population(model, dataset, built.estimation_spec(), method=built.method, solver=options,
                             max_iterations=0, covariance=None)
        ipred = fit.predictions.set_index("row").loc[row + 1, "IPRED"].to_numpy(float)
        ofv, source = float(fit.ofv), f"EBEs at the config's values ({built.method}, as NONMEM's MAXEVAL=0)"
    elif not population.iiv_names:
        ipred, source = pred, "PRED (the config has no random effects)"
    else:
        ipred, source = np.full(pred.shape, np.nan), "none: the config has random effects and nothing gives individual values"
    table = rows.copy()
    for name, values in (("PRED", pred), ("IPRED", ipred)):
        column = np.full(len(rows), np.nan)
        column[row] = values
        table[name] = column
    if replicates:
        sims = simulate(population, dataset.covariates, replicates, seed)
        replicates = sims.shape[0]  # fewer when the study is very large (see simulate_replicate_studies)
        long = pd.concat([table] * replicates, ignore_index=True)
        long.insert(0, "REP", np.repeat(np.arange(1, replicates + 1), len(rows)))
        sim_dv = np.full((replicates, len(rows)), np.nan)
        sim_dv[:, row] = sims
        long["SIM_DV"] = sim_dv.reshape(-1)
        table = long
    return Predictions(table, source, ofv, replicates)


def predict_to_folder(config, data, *, out=None, individual=None, replicates: int = 0, seed: int = 0,
                      command: str | None = None) -> tuple[Path, dict]:
    """`predict`, written into a new run folder (`predictions.csv`, `run.json`), atomically:
    nothing is left behind on bad input or failure. Returns (folder, run.json's facts)."""
    start = time.perf_counter()
    result = predict(config, data, individual=individual, replicates=replicates, seed=seed)
    name = Path(config).stem if isinstance(config, str | Path) else "predict"
    folder = RunFolder(output_folder(out, f"{name}-predict"), {"kind": "predict"})
    try:
        write_csv(result.table, folder.path / "predictions.csv")
        facts = {
            "kind": "predict", "vtrial_version": __version__, "config": str(config), "data": str(data),
            "individual": str(individual) if individual is not None else None, "ipred": result.ipred_source,
            "ofv_at_config_values": result.ofv, "replicates": result.replicates, "seed": seed, "rows": int(len(result.table)),
            "device": distributed.device_summary(), "wall_seconds": round(time.perf_counter() - start, 3),
            "command": command if command is not None else " ".join(sys.argv),
        }
        written = folder.commit(facts)
    except BaseException:
        folder.discard()
        raise
    return written, facts
