"""The `fit` job: a population fit of a registry model to a NONMEM-style dataset (`vtrial fit`).

Outputs (written atomically into the run folder):
- `parameters.csv`: `name`, `estimate`, `se`, `rse_pct`, `ci_low`, `ci_high`, `unit`,
  `fixed`, `scale`: every typical value by its model name (on its natural scale; `scale`
  names the one it was estimated on), `omega2_<p>` and `cv_pct_<p>` (exponential random
  effects only), `omega_<p1>_<p2>`, `<observable>.additive` / `<observable>.proportional`;
- `individual.csv`: per ID the EBEs, individual parameters, the model's derived
  quantities and shrinkage;
- `predictions.csv`: per observation ID, TIME, observable, DV, PRED, IPRED, RES, IWRES, CWRES,
  CENS (1/-1: a censored row, DV its limit, residuals empty);
- `fit.json`: `ofv`, `ofv_with_constant`, `aic`, `bic`, `n_subjects`, `n_observations`,
  `method`, `converged`, `covariance_step`, `iterations`, `seconds`, `device`, `warnings`, `censoring`, `n_censored`,
  `eta_shrinkage_pct` (per parameter) and `epsilon_shrinkage_pct` (per observable);
- `gof.png`: DV against PRED and IPRED, CWRES against TIME and PRED;
- `vpc.png` (and `vpc.csv`, its numbers): a visual predictive check: `[vpc] replicates`
  studies simulated from the estimates with the dataset's own doses, covariates and
  observation times; observed 5th, 50th, 95th percentiles against the 90% intervals of
  the simulated ones; with censored observations, the share below the LLOQ per bin too;
- `trial_seed.toml`: the estimates as a trial config's `[parameters]`,
  `[variability.omega2]`, `[[variability.correlation]]` and `[residual.*]` tables.

A fit that did not converge, or whose covariance step failed, still writes its outputs
(they say so: `fit.json` `converged` / `covariance_step`); `vtrial fit` then exits with
status 3.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vtrial.analysis.fit_plots import plot_gof, plot_vpc, vpc_table
from vtrial.design.occasions import dataset_occasions
from vtrial.design.population import Population, ResidualError
from vtrial.design.replicate_study import simulate_replicate_studies
from vtrial.engine import distributed
from vtrial.errors import DataError, SpecError
from vtrial.estimation.censoring import censored_rows, resolve_censoring
from vtrial.estimation.occasions import n_occasions
from vtrial.estimation.population_data import PopulationData
from vtrial.estimation.population_spec import exponent_name
from vtrial.io.config import read_toml, validate
from vtrial.io.fit_config import BuiltFit, FitConfig, trial_config_fragment
from vtrial.io.nonmem import read_nonmem
from vtrial.io.writers import atomic_write, preload_matplotlib, save_figure, write_csv, write_json
from vtrial.jobs.context import RunContext
from vtrial.limits import MAX_FIT_DOSE_RECORDS
from vtrial.models.base import Model

#: Keys of `fit.json` taken from the fit result.
FIT_FACTS = ("ofv", "ofv_with_constant", "aic", "bic", "n_subjects", "n_observations", "method", "converged",
             "covariance_step", "iterations", "seconds", "warnings", "eta_shrinkage_pct", "epsilon_shrinkage_pct",
             "censoring", "n_censored")


def _refuse_trial_options(ctx: RunContext) -> None:
    for option, given in (("--animals", ctx.animals is not None), ("--animals-per-arm", ctx.animals_per_arm is not None),
                          ("--typical", ctx.typical), ("--chunk-size", ctx.chunk_size is not None),
                          ("--dataset", ctx.dataset_out is not None)):
        if given:
            raise SpecError(option, "does not apply to a fit config (a fit reads its subjects from the dataset)")


def check_data(built: BuiltFit, data: PopulationData, file: str = "the dataset") -> None:
    """Every observable the dataset observes has a residual error model; every subject
    observed nonzero has a dose when the model's predictions come from doses alone."""
    names = built.model.observable_names
    for j in np.unique(np.asarray(data.obs_observable)[np.asarray(data.obs_mask)]):
        if names[j] not in built.residual:
            raise SpecError(f"residual.{names[j]}", f"the dataset observes {names[j]!r}; give its residual error model "
                                                    f"[residual.{names[j]}] (initial additive and/or proportional SD)")
    _check_undosed_subjects(built.model, data, file)
    n_occasions(data, built.estimation_spec())  # inter-occasion variability needs the dataset's occasions


def _check_undosed_subjects(model: Model, data: PopulationData, file: str) -> None:
    """A model whose states are all linear PK compartments starts empty and moves only by
    doses: a subject without a dose of positive amount is predicted 0 throughout, so its
    nonzero observations cannot be fitted (a proportional error then has zero variance)."""
    if model.linear_pk is None or set(model.state_names) != set(model.linear_pk.states):
        return  # other states (disease, baseline) may explain observations without a dose
    dosed = np.any(np.asarray(data.doses.amount) > 0, axis=1)
    mask = np.asarray(data.obs_mask) & (np.asarray(data.dv) != 0)
    undosed = np.flatnonzero(~dosed & mask.any(axis=1))
    if undosed.size:
        i = undosed[0]
        row = int(np.asarray(data.obs_row)[i][mask[i]][0])
        ids = ", ".join(str(data.ids[k]) for k in undosed[:10]) + (" ..." if undosed.size > 10 else "")
        raise DataError(f"{file}, row {row} (line {row + 1} of the file): subject(s) {ids} have no dose with AMT > 0 but "
                        f"observations other than 0; model {model.name} has only PK compartments, which start empty, so it "
                        "predicts 0 for them: add their doses, or leave these subjects out")


def prepare_fit(cfg: FitConfig, ctx: RunContext) -> tuple[BuiltFit, PopulationData | None]:
    """The config lowered and the dataset read (None when no dataset is given), checked
    against each other; nothing is compiled."""
    built = BuiltFit(cfg, ctx.method)
    _refuse_trial_options(ctx)
    if ctx.data is None:
        return built, None
    needs = {e.covariate: f"covariate_effects.{i} ({e.parameter} ~ {e.covariate})" for i, e in enumerate(cfg.covariate_effects)}
    for i, c in enumerate(cfg.covariate_search.candidates if cfg.covariate_search else []):
        needs.setdefault(c.covariate, f"covariate_search.candidates.{i} ({c.parameter} ~ {c.covariate})")
    data = read_nonmem(ctx.data, built.model, cfg.data, required_covariates=needs, max_dose_records=MAX_FIT_DOSE_RECORDS)
    check_data(built, data, str(ctx.data))
    resolve_censoring(data, built.censoring, built.method)  # M3/M4 against the method, before any compilation
    return built, data


def covariate_defaults(model: Model, data: PopulationData) -> dict[str, str]:
    """The model's covariates the dataset lacks, each at the model's reference value for
    every subject (what `vtrial check` reports; a covariate effect's covariate is never
    among them: the dataset must have it)."""
    return {c.name: f"{c.reference:g} {c.unit} (the model's reference; not in the dataset)"
            for c in model.covariates if c.name not in data.covariates}


def check_fit(cfg: FitConfig, ctx: RunContext) -> dict:
    """Everything `run_fit` checks before its first solve (see `vtrial.jobs.context.Job`)."""
    built, data = prepare_fit(cfg, ctx)
    out = {"model": cfg.model, "method": built.method, "estimated": [n for n in built.parameter_names() if n not in built.fixed],
           "random_effects": list(built.iiv_names)}
    if cfg.covariate_search is not None:
        out["covariate_candidates"] = [c.label for c in cfg.covariate_search.candidates]
    if data is not None:
        out.update(n_subjects=int(len(data.ids)), n_observations=int(np.asarray(data.obs_mask).sum()),
                   n_censored=int(np.sum(censored_rows(data) != 0)), censoring=resolve_censoring(data, built.censoring, built.method))
        defaults = covariate_defaults(built.model, data)
        if defaults:
            out["covariates_not_in_dataset"] = defaults
        if built.iov:
            out["occasions"] = n_occasions(data, built.estimation_spec())
    else:
        out["dataset"] = "not given (vtrial fit CONFIG DATA.csv reads one)"
    return out


def _fit(built: BuiltFit, data: PopulationData, on_iteration: Callable[[int, float], None] | None):
    from vtrial.estimation import fit_population

    return fit_population(
        built.model, data, built.estimation_spec(), method=built.method, solver=built.options,
        max_iterations=built.max_iterations, tolerance=built.tolerance, covariance=built.covariance, on_iteration=on_iteration,
        censoring=built.censoring,
    )


def _json_value(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, tuple | list):
        return [_json_value(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    return v


def fit_facts(fit) -> dict[str, Any]:
    """The `fit.json` entries of a `PopulationFit` (non-finite numbers as null)."""
    return {k: _json_value(getattr(fit, k)) for k in FIT_FACTS}


def run_fit(cfg: FitConfig, ctx: RunContext) -> dict:
    built, data = prepare_fit(cfg, ctx)
    if data is None:
        raise SpecError("DATA", "a fit needs a dataset: vtrial fit CONFIG DATA.csv")
    if ctx.writer and ctx.figures:
        preload_matplotlib()  # the figures' import overlaps the fit, as a run's overlaps its solve
    fit = _fit(built, data, ctx.on_iteration)
    facts = {"model": cfg.model, **fit_facts(fit), "device": distributed.device_summary()}
    if not ctx.writer:
        return facts
    write_fit_outputs(fit, built, data, ctx.out_dir, title=f"{cfg.name}: {cfg.description}" if cfg.description else cfg.name,
                      figures=ctx.figures)
    return facts


def estimated_population(model: Model, parameters: pd.DataFrame, dv_scale, covariate_effects=(), additive=()) -> Population:
    """The population a fit estimated, from its `parameters.csv` rows (`name`, `estimate`):
    typical values, Omega, `covariate_effects` with the exponents the fit estimated
    (rows `exponent_<p>_<covariate>`), and residual error in the model's units (an
    additive SD in the dataset's DV unit is divided by `dv_scale`)."""
    est = dict(zip(parameters["name"], parameters["estimate"].astype(float)))
    typical = {k: v for k, v in est.items() if k in model.parameter_names}
    iiv = tuple(k.removeprefix("omega2_") for k in est if k.startswith("omega2_"))
    omega = np.diag([est[f"omega2_{p}"] for p in iiv]) if iiv else np.zeros((0, 0))
    for i, a in enumerate(iiv):
        for j, b in enumerate(iiv):
            for name in (f"omega_{a}_{b}", f"omega_{b}_{a}"):
                if i != j and name in est:
                    omega[i, j] = est[name]
    residual = {}
    scale = np.asarray(dv_scale, float)
    for j, obs in enumerate(model.observable_names):
        add, prop = est.get(f"{obs}.additive", 0.0), est.get(f"{obs}.proportional", 0.0)
        if add > 0 or prop > 0:
            residual[obs] = ResidualError(add / scale[j], prop)
    effects = tuple(
        dataclasses.replace(e, exponent=est.get(exponent_name(e.parameter, e.covariate), e.exponent)) for e in covariate_effects
    )
    iov = {k.removeprefix("iov_omega2_"): v for k, v in est.items() if k.startswith("iov_omega2_")}  # occasions' variances
    return Population(model, typical=typical, iiv_names=iiv, omega=omega, covariate_effects=effects, residual=residual,
                      additive=tuple(p for p in additive if p in iiv), iov=iov)


def trial_config_from_fit(fit, model: Model | str, dv_scale=None, *, covariate_effects=(), path: str | Path | None = None,
                          source: str = "a population fit") -> str:
    """A fitted result as the population of a trial config (TOML text: `model`,
    `[parameters]`, `[variability.omega2]`, `[[variability.correlation]]`,
    `[[covariate_effects]]`, `[residual.*]` in the model's units); written atomically to
    `path` when given. Add `[[arms]]` and `[output]` to simulate a study of it.

    `fit`: a `PopulationFit` (anything with `to_frame()` rows `name`, `estimate`);
    `dv_scale`: the dataset's DV unit per model unit, which converts an additive residual SD
    back to the model's unit: one number per observable of the model
    (`PopulationData.dv_scale`) or one number for all (default 1)."""
    from vtrial.models import load_model

    model = load_model(model) if isinstance(model, str) else model
    n = len(model.observables)
    scale = np.asarray(1.0 if dv_scale is None else dv_scale, float)
    if scale.ndim == 0:
        scale = np.full(n, float(scale))
    if scale.shape != (n,) or not np.all(np.isfinite(scale) & (scale > 0)):
        raise SpecError("dv_scale", f"give one positive number, or one per observable of {model.name} "
                                    f"({', '.join(model.observable_names)}); got {dv_scale!r}")
    text = trial_config_fragment(model, estimated_population(model, fit.to_frame(), scale, covariate_effects), source=source)
    if path is not None:
        atomic_write(path, lambda p: p.write_text(text))
    return text


def write_fit_outputs(fit, built: BuiltFit, data: PopulationData, out: Path, *, title: str = "", figures: bool = True) -> list[Path]:
    """Write a fit's files (see the module docstring) into `out`; returns their paths.
    `figures=False`: no gof.png and vpc.png (the VPC's numbers are still written)."""
    out = Path(out)
    written = []
    parameters = fit.to_frame()
    predictions = fit.predictions_frame()
    written.append(write_csv(parameters, out / "parameters.csv"))
    written.append(write_csv(fit.individual_frame(), out / "individual.csv"))
    written.append(write_csv(predictions, out / "predictions.csv"))
    written.append(write_json({**fit_facts(fit), "device": distributed.device_summary()}, out / "fit.json"))
    model = built.model
    units = {name: (o.unit if o.unit is not None else model.observable(name).unit) for name, o in built.data.observables.items()}
    units = {name: units.get(name, model.observable(name).unit) for name in model.observable_names}  # the DV units
    population = estimated_population(model, parameters, data.dv_scale, built.covariate_effects, built.additive)
    written.append(atomic_write(out / "trial_seed.toml",
                                lambda p: p.write_text(trial_config_fragment(model, population, source=title or "fit"))))
    replicates = built.cfg.vpc.replicates
    # The goodness-of-fit figure is drawn in a thread while the VPC's studies are simulated
    # (the simulation runs outside Python's lock): its numbers, predictions.csv, are
    # written; a figure that cannot be drawn is a warning, as ever.
    gof = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vtrial-gof")
    drawn_gof = gof.submit(save_figure, lambda: plot_gof(predictions, units=units, title=title), out / "gof.png", skip=not figures)
    gof.shutdown(wait=False)
    try:
        if replicates > 0:
            mask = np.asarray(data.obs_mask)
            sims = simulate_replicate_studies(population, data.doses, data.covariates, data.obs_time_h, data.obs_observable,
                                              replicates=replicates, seed=built.cfg.vpc.seed, options=built.options,
                                              occasions=dataset_occasions(data))
            observable = np.asarray(data.obs_observable)[mask]
            scale = np.asarray(data.dv_scale, float)[observable]
            cens = censored_rows(data)[mask]
            table = vpc_table(observable, np.asarray(data.obs_time_h)[mask], np.asarray(data.dv)[mask], sims[:, mask] * scale[None],
                              model.observable_names, cens=cens)
            written.append(write_csv(table, out / "vpc.csv"))
            points = pd.DataFrame({"observable": np.asarray(model.observable_names, dtype=object)[observable],
                                   "time": np.asarray(data.obs_time_h)[mask], "dv": np.asarray(data.dv)[mask], "cens": cens})
            dv = points["dv"].to_numpy()
            log_scale = bool(dv.size and dv.min() > 0 and dv.max() / dv.min() > 50)
    finally:  # never left drawing into a folder that an error is about to discard
        written.append(drawn_gof.result())
    # The VPC's figure after its numbers: a figure that cannot be drawn is a warning.
    if replicates > 0:
        written.append(save_figure(lambda: plot_vpc(table, points=points, units=units, log_scale=log_scale, title=title),
                                   out / "vpc.png", skip=not figures))
    return [p for p in written if p is not None]


def fit(config: str | Path | Mapping[str, Any], data: str | Path, *, method: str | None = None,
        on_iteration: Callable[[int, float], None] | None = None):
    """Fit a population model to a NONMEM-style dataset, in Python (`vtrial fit` without files).

    **Arguments:**
    - `config`: a fit config (`kind = "fit"`): a TOML file or its table as a mapping;
    - `data`: the dataset (CSV), read with the config's `[data]` mapping;
    - `method`: overrides `[estimation] method` ("focei", "foce", "laplace", "fo");
    - `on_iteration(iteration, ofv)`: called after each outer iteration.

    **Returns:** the `vtrial.estimation.PopulationFit` (`to_frame()`, `individual_frame()`,
    `predictions_frame()`, `ofv`, `converged`, ...). **Raises:** `SpecError` /
    `DataError` naming the key, file, row or column, before anything is compiled.
    """
    if isinstance(config, Mapping):
        table, folder = dict(config), None
    else:
        (table, _), folder = read_toml(config), Path(config).parent
    kind = table.pop("kind", "fit")
    if kind != "fit":
        raise SpecError("kind", f"vtrial.fit needs a fit config (kind = \"fit\"), got {kind!r}")
    cfg = validate(FitConfig, table, folder)
    if not Path(data).is_file():
        raise SpecError("DATA", f"{data}: file not found")
    built, population_data = prepare_fit(cfg, RunContext(out_dir=Path("."), data=Path(data), method=method))
    return _fit(built, population_data, on_iteration)
