"""Individual fits: every subject of a dataset fitted alone (no random effects).

Each subject's own typical values (those `spec` estimates) and residual SDs maximise its
own likelihood, $-2\\log L_i = \\sum_j [(y_j - f_j)^2 / V_j + \\log V_j]$ (NONMEM's
convention, without $n \\log 2\\pi$), with L-BFGS (`vtrial.engine.optimize.minimize_lbfgs`)
vmapped over subjects in one compiled call. Useful to look at the data subject by
subject and for starting values; with few observations per subject, fix the residual
error (`spec.fixed`) so that each fit is identifiable.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from vtrial.engine.optimize import minimize_lbfgs
from vtrial.engine.solve import SolverOptions, is_linear_pk_only, uses_closed_form
from vtrial.errors import DataError, SpecError
from vtrial.estimation.focei import Problem
from vtrial.estimation.subjects import subject_arrays
from vtrial.estimation.censoring import censored_rows
from vtrial.estimation.population_data import check_population_data
from vtrial.estimation.population_data import PopulationData
from vtrial.estimation.population_spec import EstimationSpec, build_layout, from_estimation_scale, reported_names, unpack
from vtrial.models.base import Model


@lru_cache(maxsize=16)
def _fitter(model: Model, layout, options: SolverOptions, t0: float, max_iterations: int, tolerance: float):
    # Reverse mode (L-BFGS's gradient): the closed form by superposition, or diffrax's
    # default adjoint.
    closed = uses_closed_form(model, options) and is_linear_pk_only(model)
    options = dataclasses.replace(options, events="superposition" if closed else "split", adjoint="checkpoint")
    pr = Problem(model, layout, "fo", options, t0)

    def one(x0, constants, s):
        def objective(x):
            u = unpack(layout, constants, x)
            f, status = pr.predict(u, constants, s, jnp.zeros(0))
            value = jnp.sum(pr._phi(u, s, f, None))
            return jnp.where(status == 0, value, jnp.inf)

        x, steps, _ = minimize_lbfgs(objective, x0, max_iterations, tolerance)
        value, grad = jax.value_and_grad(objective)(x)
        return x, value, jnp.max(jnp.abs(grad)), steps

    return jax.jit(jax.vmap(one, in_axes=(None, None, 0)))


def fit_individuals(
    model: Model,
    data: PopulationData,
    spec: EstimationSpec,
    *,
    solver: SolverOptions = SolverOptions(),
    max_iterations: int = 200,
    tolerance: float = 1e-6,
) -> pd.DataFrame:
    """Fit every subject alone, from the initial values of `spec` (its random effects
    and covariate effects are ignored; fixed values stay fixed).

    Returns one row per ID: the estimated typical values and residual SDs (by name, as
    in `PopulationFit.to_frame`), `ofv` (-2 log-likelihood without the constant),
    `n_observations`, `iterations`, `converged` (largest gradient entry on the
    unconstrained scale below `tolerance` x max(1, |ofv|))."""
    if not (isinstance(max_iterations, int) and max_iterations >= 1):
        raise SpecError("estimation.max_iterations", f"must be a whole number >= 1, got {max_iterations!r}")
    alone = dataclasses.replace(spec, omega2={}, blocks=(), correlation={}, covariate_effects=(), additive=())
    layout, constants, x0 = build_layout(model, alone, data.dv_scale)
    if layout.n_x == 0:
        raise SpecError("parameters", "nothing to estimate: every value is fixed")
    check_population_data(model, data, alone)  # the same checks as a population fit
    if np.any(censored_rows(data) != 0):
        raise DataError("data: censored observations (CENS/BLQ/LLOQ) are not handled by individual fits; leave them out "
                        "(MDV = 1), or fit the population (Laplace with M3: vtrial.estimation.censoring)")
    arrays, _, t0 = subject_arrays(model, data)
    fit = _fitter(model, layout, solver, float(t0), max_iterations, float(tolerance))
    x, value, grad_max, steps = (np.asarray(a)[: data.n_subjects] for a in fit(jnp.asarray(x0), constants, arrays))
    names = reported_names(layout, model.observable_names)
    out = {"ID": np.asarray(data.ids)}
    for k, name in enumerate(names):
        if k < layout.n_theta:  # a typical value, from its estimation scale (`theta_scale`)
            out[layout.theta_names[k]] = np.asarray(jax.vmap(lambda v: from_estimation_scale(v, *layout.theta_bounds[k]))(jnp.asarray(x[:, k])))
        else:  # a log residual SD
            out[name] = np.exp(x[:, k])
    out["ofv"] = value
    out["n_observations"] = np.asarray(data.obs_mask, bool).sum(axis=1)
    out["iterations"] = steps
    out["converged"] = np.isfinite(value) & (grad_max <= tolerance * np.maximum(1.0, np.abs(value)))
    return pd.DataFrame(out)
