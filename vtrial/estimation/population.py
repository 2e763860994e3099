r"""Population estimation by maximum likelihood, with NONMEM's conventions.

`fit_population(model, data, spec)` estimates typical values, Omega and the residual
error of a `PopulationData` by FOCE-I (default), FOCE, Laplace or FO
(`vtrial.estimation.focei`), with optax's L-BFGS and zoom line search over the
unconstrained vector of `vtrial.estimation.population_spec` (each parameter scaled by
its curvature, estimated from the subjects' gradients), the EBEs of every subject
re-optimised (warm-started) at every objective evaluation. Convergence is judged in
standard errors: every estimate within `tolerance` SEs of the optimum. `population_objective`
evaluates the objective (and its exact gradient) alone.

How the numbers map to NONMEM's:
- `ofv` is NONMEM's OBJECTIVE FUNCTION VALUE (-2 log-likelihood without
  $N_{obs} \log 2\pi$); `ofv_with_constant` adds it (nlmixr2's "OBJF with constant";
  AIC and BIC are computed from it);
- typical values are estimated on the scale their bounds imply (NONMEM's bounded THETA:
  log for (0, inf), logit for a finite range, identity for none; see
  `vtrial.estimation.population_spec`); the table reports them on their natural scale
  with the scale named (`scale`), the SE by the delta method and the 95% interval
  transformed from the estimation scale; `covariance_frame()` has the estimation scales;
- random effects are exponential (`CL = THETA * EXP(ETA)`) or additive (`THETA + ETA`,
  `EstimationSpec.additive`);
- `omega2_<p>` is OMEGA(p,p), `omega_<p1>_<p2>` the off-diagonal, `cv_pct_<p>` is
  $100\sqrt{e^{\omega^2} - 1}$; residual SDs are SIGMA's square roots (or THETA when
  SIGMA is fixed to 1);
- the covariance step is NONMEM's `$COV`: R = Hessian of the OFV (central differences
  of the exact gradient, the EBEs re-optimised), S = sum over subjects of the outer
  products of their OFV gradients; `sandwich` = R^-1 S R^-1 (NONMEM's default),
  `r` = 2 R^-1, `s` = 4 S^-1;
- shrinkage is SD-based: eta: $1 - SD(\hat\eta_p)/\omega_p$; epsilon: $1 - SD(IWRES)$.
"""

from __future__ import annotations

import math
import time
import warnings as warnings_module
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax.tree_utils as otu
import pandas as pd

from vtrial.design.population import Population, ResidualError
from vtrial.engine.solve import SolverOptions
from vtrial.errors import SpecError
from vtrial.estimation.censoring import censored_arrays, censored_rows, drop_warning, gaussian_rows, resolve_censoring
from vtrial.estimation.covariance import COVARIANCE_MATRICES, covariance_step
from vtrial.estimation.focei import METHODS, FOCEI_WITHOUT_VARIANCE_TERM, problem
from vtrial.estimation.occasions import n_occasions
from vtrial.estimation.outer_step import compile_step, curvature, distance_in_se, step_function, typed_state
from vtrial.estimation.subjects import subject_arrays, subject_mesh, subject_sharding
from vtrial.estimation.population_tables import individual_frame, parameter_table, predictions_frame, unfit_observation
from vtrial.estimation.population_data import PopulationData, check_population_data
from vtrial.estimation.population_spec import (
    EstimationSpec,
    build_layout,
    reported_names,
    reported_values,
    unpack,
)
from vtrial.models.base import Model

LOG_2PI = math.log(2.0 * math.pi)
#: An Omega variance below this (log scale) has collapsed.
COLLAPSED_OMEGA2 = 1e-4


class ObjectiveValue(NamedTuple):
    """What `population_objective` returns.

    - `ofv`, `ofv_with_constant`: as in the module docstring;
    - `gradient`: d ofv / d x (`x`: the unconstrained vector), or None;
    - `subject_ofv`: `(n_subjects,)` contributions; `subject_gradients`: `(n_subjects, n_x)` or None;
    - `eta`: `(n_subjects, n_eta)` the EBEs (in `iiv_names` order);
    - `x`: the unconstrained vector evaluated; `x_names`: what each entry is.
    """

    ofv: float
    ofv_with_constant: float
    gradient: np.ndarray | None
    subject_ofv: np.ndarray
    subject_gradients: np.ndarray | None
    eta: np.ndarray
    x: np.ndarray
    x_names: tuple[str, ...]


class PreparedProblem(NamedTuple):
    """What `prepare_problem` builds: the compiled `Problem`, the parameter layout and
    constants, the initial unconstrained vector, the subjects' arrays (padded, on their
    devices) and their order in the dataset."""

    problem: object
    layout: object
    constants: object
    x0: np.ndarray
    arrays: object
    order: np.ndarray
    n_obs: int  # observations with a Gaussian density (vtrial.estimation.censoring.gaussian_rows)
    censoring: str = "none"


def prepare_problem(model, data, spec, method, solver, censoring=None, *, one_device: bool = False) -> PreparedProblem:
    """The problem, layout and the subjects' arrays, on the devices they are split over
    (`one_device`: all on the default device, for a caller that batches otherwise, e.g.
    over bootstrap replicates): the one preparation every fit shares (`fit_population`,
    `population_objective`, the batched fits of `vtrial.estimation.batched_fit`, the
    covariate search)."""
    if method not in METHODS and method != FOCEI_WITHOUT_VARIANCE_TERM:
        raise SpecError("estimation.method", f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    if not isinstance(solver, SolverOptions):
        raise SpecError("solver", "must be a SolverOptions")
    layout, constants, x0 = build_layout(model, spec, np.ones(len(model.observables)))
    check_population_data(model, data, spec)
    layout, constants, x0 = build_layout(model, spec, data.dv_scale, n_occasions(data, spec))
    if method != "fo" and layout.n_eta == 0:
        raise SpecError("variability.omega", f"method {method} needs random effects; give at least one variance")
    mesh = None if one_device else subject_mesh(solver)
    arrays, order, t0 = subject_arrays(model, data, 1 if mesh is None else mesh.size, occasions=layout.n_kappa > 0,
                                       sharding=subject_sharding(mesh))
    censoring = resolve_censoring(data, censoring, method)
    arrays, censored_terms = censored_arrays(arrays, censoring)
    pr = problem(model, layout, method, solver, t0, mesh, censored_terms)
    return PreparedProblem(pr, layout, constants, x0, arrays, order, gaussian_rows(data, censoring), censoring)


def population_objective(
    model: Model,
    data: PopulationData,
    spec: EstimationSpec,
    *,
    method: str = "focei",
    solver: SolverOptions = SolverOptions(),
    x=None,
    eta=None,
    gradient: bool = True,
    censoring: str | None = None,
) -> ObjectiveValue:
    """The population objective of `data` at the initial values of `spec` (or at the
    unconstrained vector `x`), the EBEs optimised from `eta` (default zeros).

    With `gradient=True` also the exact gradient w.r.t. `x` and the per-subject gradients;
    `censoring` as in `fit_population`.
    """
    prep = prepare_problem(model, data, spec, method, solver, censoring)
    x = prep.x0 if x is None else np.asarray(x, float)
    if x.shape != prep.x0.shape:
        raise SpecError("x", f"expected {prep.x0.shape[0]} entries, got shape {x.shape}")
    n = data.n_subjects
    n_padded = prep.arrays.times.shape[0]
    eta0 = np.zeros((n_padded, prep.layout.n_eta))
    if eta is not None:
        eta0[:n] = np.asarray(eta, float)
    eta0 = jax.device_put(eta0, subject_sharding(prep.problem.mesh))  # as in fit_population: nothing to compile
    names = reported_names(prep.layout, model.observable_names)
    if gradient:
        ofv, g, ofv_i, jac, eta_hat, _ = prep.problem.evaluate(jax.device_put(x), prep.constants, prep.arrays, eta0)
        g, jac = np.asarray(g), np.asarray(jac)
    else:
        ofv, ofv_i, eta_hat = prep.problem.value_only(jax.device_put(x), prep.constants, prep.arrays, eta0)
        g = jac = None
    ofv = float(ofv)
    jac = None if jac is None else jac[:n]
    return ObjectiveValue(ofv, ofv + prep.n_obs * LOG_2PI, g, np.asarray(ofv_i)[:n], jac, np.asarray(eta_hat)[:n], x, names)


@dataclass(frozen=True)
class PopulationFit:
    """The result of `fit_population`.

    Scalars: `ofv`, `ofv_with_constant`, `aic`, `bic` (from `ofv_with_constant`),
    `n_subjects`, `n_observations`, `n_parameters` (estimated), `method`, `converged`,
    `covariance_step` ("ok" or "failed: why"), `iterations`, `seconds` (wall, compilation
    included), `timings` (seconds of "estimation", "covariance", "diagnostics"), `warnings`.
    `estimates`: table row name -> estimate. `estimation_names` / `estimation_values` /
    `covariance` / `correlation`: on NONMEM's estimation scales (log typical values,
    Omega elements, residual SDs); `covariance` is None when the step failed or was off.
    `eta_shrinkage_pct` (per parameter with a random effect), `epsilon_shrinkage_pct`
    (per observable). `x`: the unconstrained optimum.
    """

    model_name: str
    method: str
    estimates: dict[str, float]
    ofv: float
    ofv_with_constant: float
    aic: float
    bic: float
    n_subjects: int
    n_observations: int
    n_parameters: int
    converged: bool
    covariance_step: str
    iterations: int
    seconds: float
    timings: dict[str, float]
    warnings: list[str]
    estimation_names: tuple[str, ...]
    estimation_values: np.ndarray
    covariance: np.ndarray | None
    correlation: np.ndarray | None
    eta_shrinkage_pct: dict[str, float]
    epsilon_shrinkage_pct: dict[str, float]
    x: np.ndarray
    gradient: np.ndarray
    typical: dict[str, float] = field(repr=False)
    iiv_names: tuple[str, ...] = field(repr=False)
    omega: np.ndarray = field(repr=False)
    additive: tuple[str, ...] = field(repr=False)
    covariate_effects: tuple = field(repr=False)
    residual: dict = field(repr=False)
    table: pd.DataFrame = field(repr=False)
    individual: pd.DataFrame = field(repr=False)
    predictions: pd.DataFrame = field(repr=False)
    censoring: str = "none"  # "m3", "m4", "drop" or "none" (no censored rows)
    n_censored: int = 0

    def population(self, model: Model) -> Population:
        """The fitted population as a `vtrial.Population` of `model` (typical values,
        Omega, covariate effects, residual error in the model's observable units): what a
        trial simulated from the estimates uses (a VPC, a trial config seeded by the fit).
        Covariate distributions are not estimated: add them for a simulation."""
        if model.name != self.model_name:
            raise SpecError("model", f"the fit is of model {self.model_name}, not {model.name}")
        return Population(
            model=model,
            typical=dict(self.typical),
            iiv_names=self.iiv_names,
            omega=self.omega,
            covariate_effects=self.covariate_effects,
            residual=dict(self.residual),
            additive=self.additive,
            iov={k.removeprefix("iov_omega2_"): v for k, v in self.estimates.items() if k.startswith("iov_omega2_")},
        )

    def to_frame(self) -> pd.DataFrame:
        """Columns name, estimate, se, rse_pct, ci_low, ci_high, unit, fixed, scale (the
        scale a typical value was estimated on, `vtrial.estimation.population_spec.scale_label`;
        `identity` for the others, whose intervals are Wald intervals); one row per
        typical value (model name), `omega2_<p>`, `cv_pct_<p>`, `omega_<p1>_<p2>`,
        `<observable>.additive` / `<observable>.proportional`."""
        return self.table.copy()

    def individual_frame(self) -> pd.DataFrame:
        """Per ID: `eta_<p>` (EBEs), the individual parameters, `shrinkage_pct_<p>`, `ofv`."""
        return self.individual.copy()

    def predictions_frame(self) -> pd.DataFrame:
        """Per observation (file order): ID, TIME, observable, DV, PRED, IPRED, RES, IRES,
        IWRES, CWRES, CENS (1/-1: censored, DV is the limit, residuals missing), row (1-based CSV row)."""
        return self.predictions.copy()

    def covariance_frame(self) -> pd.DataFrame | None:
        """The covariance matrix on the estimation scales (None if the step failed)."""
        if self.covariance is None:
            return None
        return pd.DataFrame(self.covariance, index=list(self.estimation_names), columns=list(self.estimation_names))

    def correlation_frame(self) -> pd.DataFrame | None:
        if self.correlation is None:
            return None
        return pd.DataFrame(self.correlation, index=list(self.estimation_names), columns=list(self.estimation_names))

    @property
    def se(self) -> dict[str, float]:
        """Standard errors on the estimation scales (NaN when the covariance step failed)."""
        if self.covariance is None:
            return {n: math.nan for n in self.estimation_names}
        return dict(zip(self.estimation_names, np.sqrt(np.diag(self.covariance)).tolist()))


@lru_cache(maxsize=8)
def _jitted(fn):
    """`fn(layout, constants, x)` compiled (the layout static): one compiled function, kept
    in the persistent cache, instead of dozens of small operations compiled one by one."""
    return jax.jit(fn, static_argnums=0)


def _reported(layout, constants, x):
    """The reported values (NONMEM's estimation scales), their Jacobian in `x` and the
    model-scale values (`unpack`) at the optimum: one compiled function, read from the
    persistent cache in one piece."""
    return reported_values(layout, constants, x), jax.jacfwd(reported_values, argnums=2)(layout, constants, x), unpack(layout, constants, x)


def _unfit_detail(model, data, prep, x, bad_ids) -> str:
    """The first observation that makes the objective not finite, with its row and the
    likely cause (`unfit_observation`); empty when the diagnostics cannot tell."""
    n = data.n_subjects
    eta0 = jnp.zeros((prep.arrays.times.shape[0], prep.layout.n_eta))
    try:
        diag = jax.tree_util.tree_map(lambda a: a[:n], prep.problem.diagnostics(x, prep.constants, prep.arrays, eta0))
        with warnings_module.catch_warnings():
            warnings_module.simplefilter("ignore")
            frame, _ = predictions_frame(model, data, prep.order, diag)
    except Exception:  # noqa: BLE001 - the message without the detail rather than a second failure
        return ""
    return unfit_observation(frame, bad_ids)


def fit_population(
    model: Model,
    data: PopulationData,
    spec: EstimationSpec,
    *,
    method: str = "focei",
    solver: SolverOptions = SolverOptions(),
    max_iterations: int = 200,
    tolerance: float = 1e-3,
    covariance: str | None = "sandwich",
    on_iteration: Callable[[int, float], None] | None = None,
    censoring: str | None = None,
) -> PopulationFit:
    r"""Maximum-likelihood population fit of `model` to `data` (see the module docstring).

    - `method`: "focei" (default), "foce", "laplace" or "fo";
    - `max_iterations`: outer L-BFGS iterations allowed;
    - `tolerance`: converged when every parameter is within `tolerance` of its standard
      errors from the optimum, as the gradient says: $|g_i| / \sqrt{2 R_{ii}}$ below it
      (`g`: the OFV's gradient w.r.t. the unconstrained parameters, `R_ii` its curvature,
      estimated by half the spread of the subjects' gradients, S/2, floored at 1; the
      distance of a Newton step in SEs, whatever the parameter's scale: a disease-onset
      time's gradient is 1e4 times a variance's for the same distance). 1e-3 (default):
      within 0.1% of an SE, the OFV within about 1e-6 of its minimum;
    - `covariance`: "sandwich" (R^-1 S R^-1, NONMEM's default), "r", "s", or None (skip);
    - `on_iteration(iteration, ofv)`: called after every outer iteration;
    - `censoring`: "m3" (default when `data.cens` marks rows; needs "laplace"), "m4" or
      "drop" (`vtrial.estimation.censoring`).

    A fit that stops before converging, or whose covariance step fails, says so in
    `converged`, `covariance_step` and `warnings`; its standard errors are NaN then.
    """
    start = time.perf_counter()
    if covariance not in (*COVARIANCE_MATRICES, None):
        raise SpecError("estimation.covariance", f"must be one of {', '.join(COVARIANCE_MATRICES)} or none, got {covariance!r}")
    if not (isinstance(max_iterations, int) and max_iterations >= 0):
        raise SpecError("estimation.max_iterations", f"must be a whole number >= 0, got {max_iterations!r}")
    if not (tolerance > 0):
        raise SpecError("estimation.tolerance", f"must be > 0, got {tolerance!r}")
    prep = prepare_problem(model, data, spec, method, solver, censoring)
    layout, constants, arrays = prep.layout, prep.constants, prep.arrays
    names = reported_names(layout, model.observable_names)
    warnings: list[str] = [drop_warning(data)] if prep.censoring == "drop" else []

    # Host arrays put on the device (device_put compiles nothing, jnp.asarray and jnp.zeros
    # compile a small program each).
    x = jax.device_put(np.asarray(prep.x0, float))
    n = data.n_subjects
    eta = jax.device_put(np.zeros((arrays.times.shape[0], layout.n_eta)), subject_sharding(prep.problem.mesh))
    opt, step, context = step_function(prep.problem)
    # The objective's second piece, the optimiser's step, the diagnostics and the reported
    # values are compiled (or read from the caches) in a background thread while this one
    # compiles and runs the EBE step, evaluates and iterates: XLA compiles and loads
    # executables without holding the GIL, so on two cores much of that time is hidden.
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vtrial-compile")
    ready = [background.submit(prep.problem.compile_after_ebes, x, constants, arrays, eta)]
    step_compiled = background.submit(compile_step, opt, step, x)
    ready += [background.submit(prep.problem.diagnostics.compile, x, constants, arrays, eta),
              background.submit(lambda: _jitted(_reported).lower(layout, constants, x).compile())]
    background.shutdown(wait=False)
    value, grad, ofv_i, jac, eta, done = prep.problem.evaluate(x, constants, arrays, eta)
    if not np.isfinite(float(value)) or not np.all(np.isfinite(np.asarray(grad))):
        for piece in (step_compiled, *ready):
            piece.cancel()  # those not yet started: the error need not wait for them
        bad = [data.ids[i] for i in np.flatnonzero(~np.isfinite(np.asarray(ofv_i)[:n]))][:10]
        why = _unfit_detail(model, data, prep, x, bad) if bad else ""
        raise SpecError(
            "parameters",
            "the objective is not finite at the initial values"
            + (f" (subjects {', '.join(map(str, bad))})" if bad else "")
            + (f": {why}" if why else (": the solve failed or a prediction is 0 with a proportional error only" if bad else "")),
        )
    context.clear()
    # The optimiser steps in z = x * sqrt(R_ii), where the OFV's curvature is about 1 in
    # every parameter (R_ii at the start, from the subjects' gradients).
    scale = np.sqrt(curvature(np.asarray(jac)[:n]))
    context["constants"], context["arrays"], context["scale"] = constants, arrays, scale
    z = np.asarray(x) * scale
    state = typed_state(opt.init(z))
    step_compiled.result()
    converged = False
    iterations = 0
    stalls = 0
    for iterations in range(1, max_iterations + 1):
        if distance_in_se(grad, np.asarray(jac)[:n]) < tolerance:
            converged = True
            iterations -= 1
            break
        context["eta"] = eta
        z_new, state = step(z, state, np.asarray(value), np.asarray(grad) / scale)
        new_value = float(otu.tree_get(state, "value"))
        if not np.isfinite(new_value) or new_value > float(value):
            warnings.append(f"the line search found no decrease at iteration {iterations}")
            break
        stalls = stalls + 1 if float(value) - new_value <= 1e-12 * max(1.0, abs(new_value)) else 0
        z = np.asarray(z_new)
        x = jax.device_put(z / scale)
        if "z" in context and np.array_equal(context["z"], z):
            value, grad, ofv_i, jac, eta, done = context["result"]
        else:
            value, grad, ofv_i, jac, eta, done = prep.problem.evaluate(x, constants, arrays, eta)
        if on_iteration is not None:
            on_iteration(iterations, float(value))
        if stalls >= 3:
            break
    distance = distance_in_se(grad, np.asarray(jac)[:n])
    converged = converged or distance < tolerance
    if not converged:
        warnings.append(
            f"not converged after {iterations} iterations: a parameter is {distance:.3g} SEs from the optimum by the "
            f"gradient (tolerance {tolerance:g}; largest gradient entry {float(np.max(np.abs(grad))):.3g})"
        )
    if not bool(np.all(np.asarray(done)[:n])):
        n_bad = int(np.sum(~np.asarray(done)[:n]))
        warnings.append(f"the EBEs of {n_bad} subject(s) did not converge in {prep.problem.max_newton} Newton steps")

    for piece in ready:
        piece.result()
    t_estimated = time.perf_counter()
    x_np = np.asarray(x)
    rep_values, jr, u = jax.device_get(_jitted(_reported)(layout, constants, x))
    cov_x, cov_status, cov_warnings = (None, "not requested", [])
    if covariance is not None:
        if not converged:
            cov_status = "failed: the estimation did not converge"
        else:
            cov_x, cov_status, cov_warnings = covariance_step(prep.problem, prep.constants, prep.arrays, x_np, eta, np.asarray(jac), covariance, names)
    warnings += cov_warnings
    cov_rep = corr = None
    if cov_x is not None:
        cov_rep = jr @ cov_x @ jr.T
        d = np.sqrt(np.diag(cov_rep))
        corr = cov_rep / np.outer(d, d)

    t_covariance = time.perf_counter()
    omega = u.chol @ u.chol.T
    for i, name in enumerate(layout.iiv_names):
        if omega[i, i] < COLLAPSED_OMEGA2:
            warnings.append(f"omega2_{name} has collapsed to {omega[i, i]:.2g}: the data do not identify variability of {name}")

    diag = jax.tree_util.tree_map(lambda a: np.asarray(a)[:n], prep.problem.diagnostics(x, constants, arrays, eta))
    ofv = float(value)
    n_obs = int(np.sum(np.asarray(arrays.mask)))  # those in the likelihood
    predictions, eps_shrink = predictions_frame(model, data, prep.order, diag)
    eta_np = np.asarray(eta)[:n]
    eta_shrink = {
        name: float(100.0 * (1.0 - np.std(eta_np[:, i], ddof=1) / math.sqrt(omega[i, i]))) if n > 1 else math.nan
        for i, name in enumerate(layout.iiv_names)
    }
    individual = individual_frame(model, data, spec, layout, constants, u, eta_np, np.asarray(ofv_i)[:n], eta_shrink)
    table = parameter_table(model, spec, layout, names, rep_values, cov_rep, omega, u)
    n_par = layout.n_x
    ofv_c = ofv + prep.n_obs * LOG_2PI
    if cov_status != "ok" and covariance is not None:
        warnings.append(f"covariance step {cov_status}")
    return PopulationFit(
        model_name=model.name,
        method=method,
        estimates=dict(zip(table["name"], table["estimate"].astype(float))),
        ofv=ofv,
        ofv_with_constant=ofv_c,
        aic=ofv_c + 2 * n_par,
        bic=ofv_c + n_par * math.log(n_obs),
        n_subjects=data.n_subjects,
        n_observations=n_obs,
        n_parameters=n_par,
        converged=bool(converged),
        covariance_step=cov_status,
        iterations=iterations,
        seconds=time.perf_counter() - start,
        timings={
            "estimation": t_estimated - start,
            "covariance": t_covariance - t_estimated,
            "diagnostics": time.perf_counter() - t_covariance,
        },
        warnings=warnings,
        estimation_names=names,
        estimation_values=rep_values,
        covariance=cov_rep,
        correlation=corr,
        eta_shrinkage_pct=eta_shrink,
        epsilon_shrinkage_pct=eps_shrink,
        x=x_np,
        gradient=np.asarray(grad),
        typical={k: float(v) for k, v in u.typical.items()},
        iiv_names=layout.iiv_names,
        omega=omega,
        additive=layout.additive,
        covariate_effects=tuple(
            replace(e, exponent=float(u.effect_exponent[k])) for k, e in enumerate(spec.covariate_effects)
        ),
        residual={
            obs.name: ResidualError(
                additive=float(u.residual_sd[o, 0]) / float(data.dv_scale[o]), proportional=float(u.residual_sd[o, 1])
            )
            for o, obs in enumerate(model.observables)
            if obs.name in spec.residual
        },
        table=table,
        individual=individual,
        predictions=predictions,
        censoring=prep.censoring,
        n_censored=int(np.sum(censored_rows(data) != 0)),
    )
