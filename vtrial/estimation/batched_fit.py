r"""Many fits of one model to one dataset's subjects at once: `fit_batch`.

A bootstrap replicate and a candidate of a stepwise covariate search are the same
population model fitted to the same subjects, differing only in

- the subjects' weights $w_{ri}$ (a bootstrap replicate counts subject $i$ as often as
  it was drawn: $\mathrm{OFV}_r(x) = \sum_i w_{ri}\,\mathrm{OFV}_i(x)$; a subject drawn
  twice has one EBE, as both copies would have the same), and
- which entries of the unconstrained vector $x$ are held at their start (a candidate
  fixes the coefficients of the covariate effects it leaves out at 0, no effect).

So `fit_batch` fits R such problems as one computation: the EBEs of R x N (replicate,
subject) pairs and the per-subject objectives and gradients are evaluated by one
compiled function vmapped over the replicates (`Problem.solve_ebes` and its Jacobian,
the same per-subject functions `fit_population` uses), and the outer L-BFGS step
(optax's, with the zoom line search of `vtrial.estimation.population`) is vmapped too,
its objective a host callback that evaluates every replicate's point at once. Each
replicate keeps its own scaling, convergence test (`fit_population`'s: every free
estimate within `tolerance` SEs of the optimum by the gradient and the curvature, the
curvature from the weighted spread of the subjects' gradients), iteration count and
stopping reason; a replicate that has stopped keeps its point while the others go on.
A replicate's result does not depend on which others share its batch (rounding apart:
every operation is per replicate).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from vtrial.engine.solve import SolverOptions
from vtrial.errors import SpecError
from vtrial.estimation.focei import problem
from vtrial.estimation.population import _lbfgs, _prepare
from vtrial.estimation.population_data import PopulationData
from vtrial.estimation.population_spec import EstimationSpec, from_estimation_scale, reported_names, reported_values
from vtrial.models.base import Model


class BatchedFit(NamedTuple):
    """What `fit_batch` returns, one row per replicate (R of them).

    - `x`: `(R, n_x)` the unconstrained optima; `estimates`: `(R, n_x)` on NONMEM's
      estimation scales, named by `names` (`reported_names`: `log_cl`, `omega2_cl`, ...);
    - `ofv`: `(R,)` the weighted objective; `converged`: `(R,)`; `iterations`: `(R,)`;
      `stopped`: why each stopped ("converged", "no decrease", "stalled", "iterations",
      "not finite");
    - `eta`: `(R, n_subjects, n_eta)` EBEs; `subject_ofv`: `(R, n_subjects)` unweighted;
    - `gradient`: `(R, n_x)` of the weighted objective (0 at fixed entries);
    - `natural`: `(R, n_x)` the estimates as `parameters.csv` names them
      (`natural_names`: typical values on their own scale by their model name,
      `exponent_<p>_<covariate>`, `omega2_<p>`, `omega_<p1>_<p2>`, residual SDs).
    """

    x: np.ndarray
    estimates: np.ndarray
    names: tuple[str, ...]
    ofv: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray
    stopped: tuple[str, ...]
    eta: np.ndarray
    subject_ofv: np.ndarray
    gradient: np.ndarray
    natural: np.ndarray
    natural_names: tuple[str, ...]


def _natural(layout, constants, x):
    """`reported_values` with the typical values on their own (natural) scale."""
    values = reported_values(layout, constants, x)
    theta = [from_estimation_scale(x[i], *layout.theta_bounds[i]) for i in range(layout.n_theta)]
    return values.at[: layout.n_theta].set(jnp.stack(theta)) if theta else values


@lru_cache(maxsize=16)
def _batched_evaluate(pr):
    """jit: `(X (R, n_x), constants, arrays, ETA (R, n, n_eta))` -> per replicate and
    subject: OFV_i `(R, n)`, d OFV_i / dx `(R, n, n_x)`, EBEs, EBE converged flags."""

    def evaluate(xs, constants, arrays, etas):
        def one(x, eta_warm):
            eta, done, local = pr._ebes_and_locals(x, constants, arrays, eta_warm)
            jac, ofv_i = pr._jacobian(x, constants, arrays, eta, local)
            return ofv_i, jac, eta, done

        return jax.vmap(one)(xs, etas)

    return jax.jit(evaluate)


def _weighted(values, weights):
    """sum_i w_i v_i over the subject axis (axis 1); a subject of weight 0 adds exactly 0,
    even where its value is not finite."""
    w = weights.reshape(weights.shape + (1,) * (values.ndim - 2))
    return np.sum(np.where(w > 0, w * values, 0.0), axis=1)


def _curvature(jac, weights):
    """Per replicate: `fit_population`'s curvature (half the spread of the subjects'
    gradients, floored at 1), each subject counted `w` times."""
    w = weights[:, :, None]
    total = np.maximum(np.sum(weights, axis=1), 1.0)[:, None]
    mean = _weighted(jac, weights) / total
    spread = np.sum(np.where(w > 0, w * (jac - mean[:, None, :]) ** 2, 0.0), axis=1)
    return np.maximum(spread / 2.0, 1.0)


def _distance_in_se(grad, jac, weights):
    return np.max(np.abs(grad) / np.sqrt(2.0 * _curvature(jac, weights)), axis=1, initial=0.0)


@lru_cache(maxsize=16)
def _batched_step(pr):
    """jit: one L-BFGS update of every replicate (vmapped `population._step_function`):
    the line search's objective is a host callback that evaluates all replicates' points
    in one batched call (`context`: `constants`, `arrays`, `eta`, `weights`, `free`,
    `scale`; it appends the points and results it evaluated to `evaluated`)."""
    context = {}
    evaluate = _batched_evaluate(pr)

    def host(z):
        z = np.asarray(z).reshape(context["scale"].shape)
        x = z / context["scale"]
        result = tuple(np.asarray(a) for a in evaluate(jnp.asarray(x), context["constants"], context["arrays"], context["eta"]))
        ofv_i, jac = result[0], result[1]
        value = _weighted(ofv_i, context["weights"])
        grad = _weighted(jac, context["weights"]) * context["free"]
        context.setdefault("evaluated", []).append((z.copy(), result))
        value = np.where(np.isfinite(value) & np.all(np.isfinite(grad), axis=1), value, np.inf)
        return value.astype(np.float64), np.nan_to_num(grad / context["scale"]).astype(np.float64)

    def value_and_grad(z):
        shapes = (jax.ShapeDtypeStruct(z.shape[:-1], jnp.float64), jax.ShapeDtypeStruct(z.shape, jnp.float64))
        return jax.pure_callback(host, shapes, z, vmap_method="expand_dims")

    @jax.custom_vjp
    def ofv(z):
        return value_and_grad(z)[0]

    def ofv_fwd(z):
        return value_and_grad(z)

    def ofv_bwd(grad, ct):
        return (ct * grad,)

    ofv.defvjp(ofv_fwd, ofv_bwd)
    opt = _lbfgs()

    def step(z, state, value, grad):
        updates, state = opt.update(grad, state, z, value=value, grad=grad, value_fn=ofv)
        return optax.apply_updates(z, updates), state

    return opt, jax.jit(jax.vmap(step)), context


def _evaluated_at(evaluated, z, rows):
    """The callback's results at the points `z[rows]`, row by row (None if one is missing)."""
    new = [np.array(a) for a in evaluated[-1][1]] if evaluated else None
    for r in np.flatnonzero(rows):
        hit = next((result for point, result in reversed(evaluated) if np.array_equal(point[r], z[r])), None)
        if hit is None:
            return None
        for a, b in zip(new, hit):
            a[r] = b[r]
    return new


def _as_batch(name, a, shape, dtype=float):
    a = np.asarray(a, dtype)
    if a.shape != shape:
        raise SpecError(name, f"expected shape {shape}, got {a.shape}")
    return a


def fit_batch(
    model: Model,
    data: PopulationData,
    spec: EstimationSpec,
    weights,
    *,
    x0=None,
    free=None,
    eta0=None,
    method: str = "focei",
    solver: SolverOptions = SolverOptions(),
    max_iterations: int = 200,
    tolerance: float = 1e-3,
) -> BatchedFit:
    """Fit R replicates of `spec` to `data` at once (module docstring).

    - `weights`: `(R, n_subjects)`, each subject's count in each replicate (>= 0; a
      bootstrap replicate's multiplicities; all ones: the ordinary fit);
    - `x0`: `(R, n_x)` starting points (default: `spec`'s initial values for all);
    - `free`: `(R, n_x)` booleans, False for entries held at `x0` (default all free);
    - `eta0`: `(R, n_subjects, n_eta)` starting EBEs (default 0; e.g. an original fit's);
    - `method`, `solver`, `max_iterations`, `tolerance`: as `fit_population`'s.
    """
    if not (isinstance(max_iterations, int) and max_iterations >= 0):
        raise SpecError("estimation.max_iterations", f"must be a whole number >= 0, got {max_iterations!r}")
    prep = _prepare(model, data, spec, method, solver)
    # One device: the replicates are the batch axis here (the subjects' mesh is not used).
    pr = problem(model, prep.layout, method, solver, prep.problem.t0, None)
    layout, constants, arrays = prep.layout, prep.constants, prep.arrays
    n, n_padded, n_x, k = data.n_subjects, arrays.times.shape[0], layout.n_x, layout.n_eta
    w = np.asarray(weights, float)
    if w.ndim != 2 or w.shape[1] != n or w.shape[0] == 0:
        raise SpecError("weights", f"expected (replicates, {n} subjects), got shape {w.shape}")
    if not np.all(np.isfinite(w) & (w >= 0)) or not np.all(w.sum(axis=1) > 0):
        raise SpecError("weights", "must be finite, >= 0, and give every replicate a subject")
    r = w.shape[0]
    weights_padded = np.zeros((r, n_padded))
    weights_padded[:, :n] = w
    x = np.tile(prep.x0, (r, 1)) if x0 is None else _as_batch("x0", x0, (r, n_x)).copy()
    free_mask = np.ones((r, n_x)) if free is None else _as_batch("free", free, (r, n_x), bool).astype(float)
    eta = np.zeros((r, n_padded, k))
    if eta0 is not None:
        eta[:, :n] = _as_batch("eta0", eta0, (r, n, k))
    eta = jnp.asarray(eta)

    evaluate = _batched_evaluate(pr)
    ofv_i, jac, eta, _ = (np.asarray(a) for a in evaluate(jnp.asarray(x), constants, arrays, eta))
    eta = jnp.asarray(eta)
    value = _weighted(ofv_i, weights_padded)
    grad = _weighted(jac, weights_padded) * free_mask
    opt, step, context = _batched_step(pr)
    context.clear()
    scale = np.sqrt(_curvature(jac, weights_padded))
    context.update(constants=constants, arrays=arrays, scale=scale, weights=weights_padded, free=free_mask)
    z = x * scale
    state = jax.vmap(opt.init)(jnp.asarray(z))
    active = np.isfinite(value) & np.all(np.isfinite(grad), axis=1)
    stopped = np.where(active, "iterations", "not finite").astype(object)
    converged = np.zeros(r, bool)
    iterations = np.zeros(r, int)
    stalls = np.zeros(r, int)
    for _ in range(max_iterations):
        now = active & (_distance_in_se(grad, jac, weights_padded) < tolerance)
        converged |= now
        stopped[now] = "converged"
        active &= ~now
        if not active.any():
            break
        context["eta"], context["evaluated"] = eta, []
        z_new, state_new = step(jnp.asarray(z), state, jnp.asarray(value), jnp.asarray(grad / scale))
        z_new = np.asarray(z_new)
        new_value = np.asarray(otu.tree_get(state_new, "value"))
        worse = ~np.isfinite(new_value) | (new_value > value)
        stopped[active & worse] = "no decrease"
        accept = active & ~worse
        active &= ~worse
        iterations += accept
        stalls = np.where(accept, np.where(value - new_value <= 1e-12 * np.maximum(1.0, np.abs(new_value)), stalls + 1, 0), stalls)
        z = np.where(accept[:, None], z_new, z)
        state = jax.tree_util.tree_map(
            lambda a, b: jnp.where(accept.reshape((r,) + (1,) * (jnp.ndim(a) - 1)), a, b), state_new, state
        )
        # Each accepted point was evaluated by the line search (under vmap its branches
        # all run, so not necessarily last): take its result; otherwise evaluate every
        # replicate at its point (warm-started from its EBEs: the same result either way).
        new = _evaluated_at(context["evaluated"], z, accept)
        if new is None:
            new = [np.asarray(a) for a in evaluate(jnp.asarray(z / scale), constants, arrays, eta)]
        ofv_i = np.where(accept[:, None], new[0], ofv_i)
        jac = np.where(accept[:, None, None], new[1], jac)
        eta = jnp.asarray(np.where(accept[:, None, None], new[2], np.asarray(eta)))
        value = _weighted(ofv_i, weights_padded)
        grad = _weighted(jac, weights_padded) * free_mask
        stalled = active & (stalls >= 3)
        stopped[stalled] = "stalled"
        active &= ~stalled
    start = x
    x = np.where(free_mask > 0, z / scale, start)  # fixed entries exactly as given
    converged |= _distance_in_se(grad, jac, weights_padded) < tolerance
    stopped[converged] = "converged"
    estimates = np.asarray(jax.vmap(lambda v: reported_values(layout, constants, v))(jnp.asarray(x)))
    names = reported_names(layout, model.observable_names)
    return BatchedFit(
        x=x,
        estimates=estimates,
        names=names,
        ofv=value,
        converged=converged,
        iterations=iterations,
        stopped=tuple(stopped.tolist()),
        eta=np.asarray(eta)[:, :n],
        subject_ofv=ofv_i[:, :n],
        gradient=grad,
        natural=np.asarray(jax.vmap(lambda v: _natural(layout, constants, v))(jnp.asarray(x))),
        natural_names=(*layout.theta_names, *names[layout.n_theta:]),
    )
