"""Schema of a population-fit config (`kind = "fit"`), and its lowering to library objects.

A fit config says which model to fit (a registry name, an entry point, or
`"file.py:factory"` relative to the config's folder: `vtrial.models.load_model`), where its estimation starts and what it
estimates; the dataset is given separately (`vtrial fit CONFIG DATA.csv`). It shares the
trial config's pieces: `[parameters]`, `[variability.cv_percent]`, `[[covariate_effects]]`,
`[residual.<observable>]` and `[solver]` mean the same (initial values here; residual SDs:
additive in the dataset's DV unit, proportional as a fraction), plus:

- `[parameters]`: initial values of the typical values to estimate (every other model
  parameter keeps the model's value);
- `fixed = [...]`: names kept at their initial values: typical values by their model
  name, `omega2_<p>` (a variance of Omega; every variance of a correlated block fixes
  the whole block, as NONMEM's BLOCK FIX), `<observable>.additive` /
  `<observable>.proportional` (the row names of `parameters.csv`);
- `[[covariate_effects]]`: as in trial configs (power model: `parameter`, `covariate`,
  `reference`, `exponent`), plus `estimate = true` to estimate the exponent from its given
  value (row `exponent_<p>_<covariate>` of `parameters.csv`; default false: as given);
- `[bounds]`: `name = [lower, upper]` (`inf`/`-inf` for none) of an estimated typical
  value, as NONMEM's `$THETA (low, init, up)`: within the model's range of the
  parameter (the default); they set the scale it is estimated on (log for (0, inf),
  logit for a finite range, identity for none: `vtrial.estimation.population_spec`);
- `[variability.omega]`: initial variances of the random effects on the log scale
  (or `[variability.cv_percent]`, omega^2 = ln(1 + CV^2));
- `[variability.kind]`: `name = "exponential"` (default: NONMEM's `CL = THETA*EXP(ETA)`,
  log-normal; omega on the log scale) or `"additive"` (`THETA + ETA`, normal; omega in
  the parameter's unit squared, given in `[variability.omega]`);
- `[[variability.block]]`: correlated random effects, `parameters = [...]` with an
  initial `correlation` (a number for every pair, or the full matrix), or the block's
  full `covariance` matrix (then its variances are not given in omega/cv_percent);
- `[variability.occasions]`: `name = variance`: inter-occasion variability, one random
  effect per occasion (the dataset's `OCC` column, or `[data] occasion`) sharing this
  initial variance (NONMEM's `$OMEGA BLOCK(1) ... SAME`), of the parameter's kind
  (`[variability.kind]`); row `iov_omega2_<p>` of `parameters.csv`, which `fixed` takes;
- `[data]`: how the dataset maps onto the model (`vtrial.io.nonmem.DataSpec`: `amt_unit`,
  `time_unit`, `[data.routes]`, `[data.observables.<name>]` with `dvid`/`cmt` and `unit`,
  `[data.covariates]`, `[data.source]`: the dataset read as a control stream's $INPUT/$DATA
  read it, `vtrial.io.nonmem_source`; its `file` is the dataset when none is given);
- `[estimation]`: `method` (focei, foce, laplace, fo), `max_iterations` (outer
  iterations, default 200), `tolerance` (converged when every estimate is within
  `tolerance` of its standard error from the optimum, by the gradient and the curvature;
  default 1e-3; see `vtrial.estimation.fit_population`), `covariance` (sandwich, r, s;
  none skips the step, as leaving out NONMEM's `$COV`: no SEs), `censoring` (m3, m4, drop:
  the likelihood of censored rows, CENS/BLQ/LLOQ; default m3 when the dataset has any,
  with method laplace: `vtrial.estimation.censoring`);
- `[vpc]`: replicates of the visual predictive check and its seed;
- `[covariate_search]`: candidate covariate relations of `vtrial covariates`
  (`vtrial.io.covariate_search`); `vtrial fit` fits the base model without them.

See `configs/bolus_2cpt_fit.toml`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from vtrial.design.population import MAX_OMEGA2, CovariateEffect, ResidualError, omega_from_cv
from vtrial.errors import SpecError
from vtrial.estimation.population_spec import EstimationSpec, build_layout
from vtrial.io.config import NamesModel, Strict
from vtrial.io.covariate_search import CovariateSearchSpec, check_candidates
from vtrial.io.nonmem import DataSpec, check_data_spec
from vtrial.io.trial_config import CovariateEffectSpec, ResidualSpec, SolverSpec
from vtrial.limits import (INITIAL_VALUE_RANGE, MAX_CV_PERCENT, MAX_SEED, MIN_INITIAL_CV_PERCENT, MIN_INITIAL_OMEGA2,
                           PROPORTIONAL_SD_RANGE)
from vtrial.models import Model
from vtrial.models.loader import model_reference

#: Estimation methods (`vtrial.estimation.fit_population`).
METHODS = ("focei", "foce", "laplace", "fo")
#: Covariance steps: R^-1 S R^-1 (NONMEM's default), R^-1, S^-1.
COVARIANCES = ("sandwich", "r", "s")


class BlockSpec(Strict):
    """Correlated random effects: `parameters` with an initial `correlation` (one number
    for every pair, or the full matrix with ones on the diagonal) or `covariance` (the
    full matrix, log scale)."""

    parameters: Annotated[list[str], Field(min_length=2)]
    correlation: Annotated[float, Field(gt=-1, lt=1)] | list[list[float]] | None = None
    covariance: list[list[float]] | None = None

    @model_validator(mode="after")
    def _one_of(self):
        if (self.correlation is None) == (self.covariance is None):
            raise ValueError("give exactly one of correlation (a number or a matrix) or covariance (a matrix)")
        if len(set(self.parameters)) != len(self.parameters):
            raise ValueError("parameters: each parameter once")
        return self


class FitCovariateEffectSpec(CovariateEffectSpec):
    """A trial config's covariate effect; `estimate = true` estimates its exponent (the
    coefficient of the other shapes); `shape`: power (default), linear, exponential or
    categorical (`vtrial.design.population.CovariateEffect`); `below`: a categorical
    effect where the covariate is below `reference` (e.g. APGR < 5)."""

    reference: float  # > 0 for a power effect (checked by CovariateEffect); any category otherwise
    estimate: bool = False


class FitVariabilitySpec(Strict):
    # Additive random effects' variances are in the parameter's unit squared: the caps of
    # log-scale variances apply in `_omega`, by kind.
    omega: dict[str, Annotated[float, Field(gt=0)]] = {}
    cv_percent: dict[str, Annotated[float, Field(ge=MIN_INITIAL_CV_PERCENT, le=MAX_CV_PERCENT)]] = {}
    block: list[BlockSpec] = []
    kind: dict[str, Literal["exponential", "additive"]] = {}
    occasions: dict[str, Annotated[float, Field(gt=0)]] = {}


class EstimationSettings(Strict):
    method: Literal["focei", "foce", "laplace", "fo"] = "focei"
    max_iterations: Annotated[int, Field(ge=1, le=100_000)] = 200
    tolerance: Annotated[float, Field(gt=0, lt=1)] = 1e-3
    covariance: Literal["sandwich", "r", "s", "none"] = "sandwich"
    censoring: Literal["m3", "m4", "drop"] | None = None


class VpcSpec(Strict):
    replicates: Annotated[int, Field(ge=0, le=10_000)] = 200
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0


class FitConfig(NamesModel):
    name: str = "fit"
    description: str = ""
    model: str
    parameters: dict[str, float] = {}
    # [lower, upper]; inf / -inf for none (NaN is refused when the bounds are checked)
    bounds: dict[str, Annotated[list[Annotated[float, Field(allow_inf_nan=True)]], Field(min_length=2, max_length=2)]] = {}
    fixed: list[str] = []
    variability: FitVariabilitySpec = FitVariabilitySpec()
    covariate_effects: list[FitCovariateEffectSpec] = []
    residual: dict[str, ResidualSpec] = {}
    data: DataSpec = DataSpec()
    estimation: EstimationSettings = EstimationSettings()
    solver: SolverSpec = SolverSpec()
    vpc: VpcSpec = VpcSpec()
    covariate_search: CovariateSearchSpec | None = None  # `vtrial covariates` (vtrial.io.covariate_search)

    def data_file(self) -> Path | None:
        """`[data.source].file` (an imported control stream's `$DATA`), relative to the
        config's folder: the dataset `vtrial fit CONFIG` reads when no DATA is given."""
        if self.data.source is None:
            return None
        return (self._config_folder or Path(".")) / self.data.source.file


class BuiltFit:
    """What a `FitConfig` lowers to (all validated against the model, nothing compiled).

    - `model`; `typical`: initial values of the typical values to estimate (`[parameters]`);
    - `iiv_names`, `omega`: the parameters with random effects and their initial
      covariance matrix (log scale; zero between parameters in no common block);
    - `blocks`: the correlated groups (tuples of parameter names);
    - `covariate_effects`: `CovariateEffect`s; `residual`: observable -> `ResidualError`;
    - `fixed`: names kept at their initial values; `data`: the `DataSpec`;
    - `method`, `max_iterations`, `tolerance`, `covariance`, `options` (`SolverOptions`).
    """

    def __init__(self, cfg: FitConfig, method: str | None = None):
        self.cfg = cfg
        try:
            self.model: Model = cfg.load_model()
        except SpecError as e:
            raise SpecError("model", e.problem) from None
        model = self.model
        model.validate_values(cfg.parameters, "parameters")
        covs = [k for k in cfg.parameters if k in model.covariate_names]
        if covs:
            raise SpecError(f"parameters.{covs[0]}", "is a covariate: its values come from the dataset")
        if not cfg.parameters:
            raise SpecError("parameters", f"missing: give initial values of the parameters to estimate; model {model.name} has: "
                                          f"{', '.join(model.parameter_names)}")
        self.typical = dict(cfg.parameters)  # estimated (unless fixed); other parameters keep the model's values
        for name in cfg.bounds:
            if name not in self.typical:
                raise SpecError(f"bounds.{name}", f"bounds apply to the typical values of [parameters]; given: {', '.join(self.typical)}")
        self.bounds = {k: (float(v[0]), float(v[1])) for k, v in cfg.bounds.items()}
        lo, hi = INITIAL_VALUE_RANGE
        log_scale = [k for k in self.typical if _log_like(self.bounds.get(k, (model.parameter(k).lower, model.parameter(k).upper)))]
        bad = [k for k in log_scale if not lo <= self.typical[k] <= hi]
        if bad:
            raise SpecError(f"parameters.{bad[0]}", f"an initial value estimated on the log scale must lie in [{lo:g}, {hi:g}] "
                                                    f"(in the parameter's unit), got {self.typical[bad[0]]!r}")
        self.iiv_names, self.omega, self.blocks = _omega(model, cfg.variability)
        for name, kind in cfg.variability.kind.items():
            if name not in self.iiv_names:
                raise SpecError(f"variability.kind.{name}", f"{name!r} has no random effect; give its variance in [variability.omega]")
            if kind == "additive" and name in cfg.variability.cv_percent:
                raise SpecError(f"variability.kind.{name}", "an additive random effect has no CV%: give its variance in [variability.omega]")
        self.additive = tuple(n for n in self.iiv_names if cfg.variability.kind.get(n) == "additive")
        self.iov = _occasions(model, cfg.variability, self.additive)
        self.covariate_effects = tuple(_effect(model, i, e) for i, e in enumerate(cfg.covariate_effects))
        self.estimate_exponents = tuple((e.parameter, e.covariate) for e in cfg.covariate_effects if e.estimate)
        if len(set(self.estimate_exponents)) != len(self.estimate_exponents):
            raise SpecError("covariate_effects", "an estimated exponent's parameter and covariate may appear once")
        self.residual = {}
        for name, r in cfg.residual.items():
            if name not in model.observable_names:
                raise SpecError(f"residual.{name}", f"unknown observable of model {model.name}; known: {', '.join(model.observable_names)}")
            if r.additive == 0 and r.proportional == 0:
                raise SpecError(f"residual.{name}", "give an initial additive or proportional SD > 0 (0 for both is no error model)")
            for kind, value, (lo, hi) in (("additive", r.additive, INITIAL_VALUE_RANGE),
                                          ("proportional", r.proportional, PROPORTIONAL_SD_RANGE)):
                if value != 0 and not lo <= value <= hi:
                    raise SpecError(f"residual.{name}.{kind}", f"an initial SD must be 0 (none) or lie in [{lo:g}, {hi:g}], "
                                                               f"got {value!r}")
            self.residual[name] = ResidualError(r.additive, r.proportional)
        if not self.residual:
            raise SpecError("residual", "missing: give [residual.<observable>] initial values for each fitted observable "
                                        f"(observables: {', '.join(model.observable_names)})")
        for name in cfg.data.observables:
            if name in model.observable_names and name not in self.residual:
                raise SpecError(f"residual.{name}", f"observable {name!r} is in [data.observables] but has no residual error model")
        self.fixed = tuple(cfg.fixed)
        known = set(self.parameter_names())
        for i, name in enumerate(cfg.fixed):
            if name not in known:
                raise SpecError(f"fixed.{i}", f"{name!r} is not an estimated quantity of this fit; known: {', '.join(sorted(known))}")
        if len(set(cfg.fixed)) != len(cfg.fixed):
            raise SpecError("fixed", "each name once")
        self.data = cfg.data
        check_data_spec(model, cfg.data)
        check_candidates(cfg.covariate_search, model, self.typical, self.fixed, self.covariate_effects)
        self.method = method or cfg.estimation.method
        if self.method not in METHODS:
            raise SpecError("--method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method != "fo" and not self.iiv_names:  # the estimator's own rule, found here so `check` finds it
            raise SpecError("variability.omega", f"method {self.method} needs random effects: give at least one initial "
                                                 "variance in [variability.omega] or [variability.cv_percent]")
        self.max_iterations = cfg.estimation.max_iterations
        self.tolerance = cfg.estimation.tolerance
        self.covariance = None if cfg.estimation.covariance == "none" else cfg.estimation.covariance
        self.censoring = cfg.estimation.censoring
        self.options = cfg.solver.build()
        # What only the estimation's layout knows (e.g. a block fixed in part), before any data.
        build_layout(model, self.estimation_spec(), np.ones(len(model.observables)))

    def parameter_names(self) -> list[str]:
        """The names `fixed` may hold: typical values, variances of Omega and residual SDs
        (as `parameters.csv` names their rows)."""
        names = list(self.typical) + [f"omega2_{p}" for p in self.iiv_names] + [f"iov_omega2_{p}" for p in self.iov]
        for obs, r in self.residual.items():
            names += [f"{obs}.{kind}" for kind in ("additive", "proportional") if getattr(r, kind) > 0]
        return names

    def correlation(self) -> dict[tuple[str, str], float]:
        """Initial correlations within blocks, `{(p1, p2): r}`."""
        sd = np.sqrt(np.diag(self.omega))
        out = {}
        for block in self.blocks:
            for a_i, a in enumerate(block):
                for b in block[a_i + 1:]:
                    i, j = self.iiv_names.index(a), self.iiv_names.index(b)
                    out[(a, b)] = float(self.omega[i, j] / (sd[i] * sd[j]))
        return out

    def estimation_spec(self):
        """The statistical model to estimate (`vtrial.estimation.EstimationSpec`)."""
        return EstimationSpec(
            typical=dict(self.typical),
            omega2={p: float(self.omega[i, i]) for i, p in enumerate(self.iiv_names)},
            blocks=self.blocks,
            correlation=self.correlation(),
            covariate_effects=self.covariate_effects,
            residual=dict(self.residual),
            fixed=self.fixed,
            estimate_exponents=self.estimate_exponents,
            bounds=dict(self.bounds),
            additive=self.additive,
            iov_omega2=dict(self.iov),
        )


def _occasions(model: Model, v: FitVariabilitySpec, additive) -> dict[str, float]:
    """`[variability.occasions]` checked: known parameters, variances in range by kind."""
    for p, var in v.occasions.items():
        where = f"variability.occasions.{p}"
        if p not in model.parameter_names:
            raise SpecError(where, f"not a parameter of model {model.name}; known: {', '.join(model.parameter_names)}")
        if p not in additive and not MIN_INITIAL_OMEGA2 <= var <= MAX_OMEGA2:
            raise SpecError(where, f"initial variance must lie in [{MIN_INITIAL_OMEGA2:g}, {MAX_OMEGA2:g}] (log scale), got {var!r}")
        if p in additive and not var < math.inf:
            raise SpecError(where, f"initial variance must be a finite number > 0, got {var!r}")
    return dict(v.occasions)


def _effect(model: Model, i: int, e: CovariateEffectSpec) -> CovariateEffect:
    if e.parameter not in model.parameter_names:
        raise SpecError(f"covariate_effects.{i}.parameter", f"unknown parameter {e.parameter!r} of model {model.name}")
    if e.covariate not in model.covariate_names:
        raise SpecError(f"covariate_effects.{i}.covariate", f"unknown covariate {e.covariate!r}; model {model.name} has: "
                                                           f"{', '.join(model.covariate_names) or 'none'}")
    try:
        return CovariateEffect(e.parameter, e.covariate, e.reference, e.exponent, e.shape, e.below)
    except SpecError as err:
        raise SpecError(f"covariate_effects.{i}", err.problem) from None


def _log_like(bounds: tuple[float, float]) -> bool:
    """Whether a typical value with these bounds is estimated on a log scale, (0, inf) or
    (a small a >= 0, inf), where initial values far from 1 overflow the likelihood."""
    return bounds[0] >= 0 and bounds[1] == math.inf


def _omega(model: Model, v: FitVariabilitySpec) -> tuple[tuple[str, ...], np.ndarray, tuple[tuple[str, ...], ...]]:
    """(names with random effects, initial Omega, blocks) from omega, cv_percent and blocks."""
    variances: dict[str, float] = {}
    for where, table in (("variability.omega", v.omega), ("variability.cv_percent", v.cv_percent)):
        for k in table:
            if k not in model.parameter_names:
                raise SpecError(f"{where}.{k}", f"unknown parameter of model {model.name}; known: {', '.join(model.parameter_names)}")
            if k in variances:
                raise SpecError(f"{where}.{k}", "given both in variability.omega and variability.cv_percent; give one")
        variances.update(dict(table) if where.endswith("omega") else omega_from_cv(table))
    covariance_blocks: dict[str, tuple[int, np.ndarray, list[str]]] = {}
    in_block: dict[str, int] = {}
    for b, block in enumerate(v.block):
        where = f"variability.block.{b}"
        for p in block.parameters:
            if p not in model.parameter_names:
                raise SpecError(f"{where}.parameters", f"unknown parameter {p!r} of model {model.name}")
            if p in in_block:
                raise SpecError(f"{where}.parameters", f"{p!r} is already in block {in_block[p]}")
            in_block[p] = b
        n = len(block.parameters)
        if block.covariance is not None:
            cov = _matrix(block.covariance, n, f"{where}.covariance")
            for p in block.parameters:
                if p in variances:
                    raise SpecError(f"{where}.covariance", f"{p!r} has its variance in this block's covariance and in "
                                                           "variability.omega/cv_percent; give it once")
            for i, p in enumerate(block.parameters):
                variances[p] = float(cov[i, i])
            corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
        else:
            missing = [p for p in block.parameters if p not in variances]
            if missing:
                raise SpecError(f"{where}.parameters", f"{missing[0]!r} needs an initial variance in variability.omega or cv_percent")
            if isinstance(block.correlation, list):
                corr = _matrix(block.correlation, n, f"{where}.correlation")
                if not np.allclose(np.diag(corr), 1.0):
                    raise SpecError(f"{where}.correlation", "a correlation matrix has ones on its diagonal")
            else:
                corr = np.full((n, n), float(block.correlation))
                np.fill_diagonal(corr, 1.0)
        if np.any(np.abs(corr[~np.eye(n, dtype=bool)]) >= 1):
            raise SpecError(f"{where}", "correlations must lie strictly between -1 and 1")
        covariance_blocks[str(b)] = (b, corr, list(block.parameters))
    for p, var in variances.items():
        if v.kind.get(p) == "additive":
            if not (0 < var < math.inf):
                raise SpecError(f"variability.omega.{p}", f"initial variance must be a finite number > 0, got {var!r}")
            continue  # in the parameter's unit squared: the log-scale bounds do not apply
        if not MIN_INITIAL_OMEGA2 <= var <= MAX_OMEGA2:
            raise SpecError(f"variability.omega.{p}", f"initial variance must lie in [{MIN_INITIAL_OMEGA2:g}, {MAX_OMEGA2:g}] "
                                                      f"(a CV of {MIN_INITIAL_CV_PERCENT:g}% to {MAX_CV_PERCENT:g}%), got {var!r}; "
                                                      "leave a random effect this small out")
    names = tuple(variances)
    sd = np.sqrt([variances[n] for n in names])
    corr = np.eye(len(names))
    for b, c, params in covariance_blocks.values():
        idx = [names.index(p) for p in params]
        corr[np.ix_(idx, idx)] = c
    omega = corr * np.outer(sd, sd)
    if names:
        try:
            np.linalg.cholesky(omega)
        except np.linalg.LinAlgError:
            raise SpecError("variability.block", "the initial Omega is not positive definite (check the correlations)") from None
    return names, omega, tuple(tuple(b.parameters) for b in v.block)


def _matrix(rows: list[list[float]], n: int, field: str) -> np.ndarray:
    m = np.asarray(rows, dtype=float) if all(len(r) == n for r in rows) and len(rows) == n else None
    if m is None:
        raise SpecError(field, f"must be a {n} x {n} matrix (one row per parameter of the block)")
    if not np.all(np.isfinite(m)) or not np.allclose(m, m.T):
        raise SpecError(field, "must be finite and symmetric")
    return m


def _number(v: float) -> str:
    return f"{float(v):.8g}" if "e" not in f"{float(v):.8g}" else repr(float(v))


def trial_config_fragment(model: Model, population, *, source: str = "fit") -> str:
    """A fitted population as trial-config TOML: `model`, `[parameters]` (typical values),
    `[variability.omega2]` and `[[variability.correlation]]` (Omega), `[residual.*]`
    (in the model's units). Add `[[arms]]` and `[output]` to simulate a study with it.

    `population`: a `vtrial.design.population.Population` (e.g.
    `vtrial.jobs.fit.estimated_population` of a fit)."""
    lines = [f"# Estimates of {source}, as the population of a trial config (kind = \"trial\").",
             "# Add [[arms]] and [output] to simulate a study of the fitted population.",
             f"model = \"{model_reference(model)}\"", "", "[parameters]"]
    units = {p.name: p.unit for p in model.parameters}
    for k, v in population.typical.items():
        lines.append(f"{k} = {_number(v)}  # {units.get(k, '')}")
    names = population.iiv_names
    omega = np.asarray(population.omega, float)
    if names:
        lines += ["", "[variability.omega2]  # variances of the random effects (log scale)"]
        lines += [f"{p} = {_number(omega[i, i])}" for i, p in enumerate(names)]
        additive = [p for p in names if p in getattr(population, "additive", ())]
        if additive:
            lines += ["", "[variability.kind]  # their omega2 is in the parameter's unit squared"]
            lines += [f"{p} = \"additive\"" for p in additive]
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                if omega[i, j] != 0:
                    r = omega[i, j] / math.sqrt(omega[i, i] * omega[j, j])
                    lines += ["", "[[variability.correlation]]", f"a = \"{names[i]}\"", f"b = \"{names[j]}\"", f"r = {_number(r)}"]
    iov = getattr(population, "iov", {})
    if iov:  # a trial draws a kappa per occasion from its start times
        lines += ["", "[variability.occasions]  # inter-occasion variances (one random effect per occasion)"]
        lines += [f"{p} = {_number(v)}" for p, v in iov.items()]
        lines += ["", "[occasions]", "start_h = [0.0]  # the occasions' start times (h): set them for the study"]
    for e in population.covariate_effects:
        lines += ["", "[[covariate_effects]]", f"parameter = \"{e.parameter}\"", f"covariate = \"{e.covariate}\"",
                  f"reference = {_number(e.reference)}", f"exponent = {_number(e.exponent)}"]
        if e.shape != "power":
            lines += [f"shape = \"{e.shape}\""] + (["below = true"] if e.below else [])
    if population.covariate_effects:
        lines += ["# (give the covariates' distributions in [covariates.<name>] of the trial config)"]
    for obs, err in population.residual.items():
        unit = model.observable(obs).unit
        lines += ["", f"[residual.{obs}]", f"additive = {_number(err.additive)}  # {unit}", f"proportional = {_number(err.proportional)}"]
    return "\n".join(lines) + "\n"
