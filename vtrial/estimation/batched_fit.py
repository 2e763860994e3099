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
the same per-subject functions `fit_population` uses; the EBE iteration's branches stay
branches under that vmap: `vtrial.engine.batching.all_in_batch`). The outer optimiser is
L-BFGS on the host, batched over replicates in NumPy, with a backtracking line search of
which every trial evaluates all replicates in one call (most iterations need one).
optax's zoom line search, which `fit_population` uses, is not vmapped here: under vmap
its branches and its loop run for every replicate until the slowest is done, each step
costing two or more evaluations of the whole batch. Each replicate keeps its own
scaling (`fit_population`'s: z = x sqrt(R_ii)), convergence test (`fit_population`'s:
every free estimate within `tolerance` SEs of the optimum by the gradient and the
curvature, the curvature from the weighted spread of the subjects' gradients), L-BFGS
memory, iteration count and stopping reason; a replicate that has stopped keeps its
point while the others go on. A replicate's result does not depend on which others share
its batch (every operation is per replicate); it agrees with `fit_population`'s to the
convergence tolerance (the line searches differ).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vtrial.engine import lapack
from vtrial.engine.solve import SolverOptions
from vtrial.errors import SpecError
from vtrial.estimation.focei import problem
from vtrial.estimation.population import prepare_problem
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
            return pr.subject_terms(x, constants, arrays, eta_warm)

        if not lapack.on_cpu():
            return jax.vmap(one)(xs, etas)
        # The replicates in chunks too: vmapped over replicates, every batched LAPACK call
        # of a subject chunk holds that chunk for each replicate, and the whole must stay
        # under jaxlib's parallel threshold as one replicate's chunk does
        # (`vtrial.engine.lapack`: above it the CPU kernels' thread pool can deadlock; seen
        # with 50 Bolus_2CPT replicates at once, while 25 ran). Each replicate is computed on
        # its own whatever chunk it lands in, so the results do not change.
        most = lapack.items_per_chunk(pr.lapack_flops_per_subject(arrays))
        replicates = max(1, most // min(arrays.times.shape[0], most))
        return lapack.map_in_chunks(jax.vmap(one), xs.shape[0], replicates, (xs, etas))

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


#: L-BFGS memory, line-search trials and the Armijo constant of `fit_batch`.
MEMORY, MAX_TRIALS, ARMIJO = 10, 30, 1e-4


def _lbfgs_direction(grad, s_mem, y_mem):
    """Per replicate: the L-BFGS direction (two-loop recursion, newest pair last) from
    `grad` `(R, n)` and the pairs `(R, m, n)`; empty or non-positive pairs are left out; a
    direction that does not descend is replaced by -grad."""
    sy = np.sum(s_mem * y_mem, axis=2)
    yy = np.sum(y_mem * y_mem, axis=2)
    rho = np.where(sy > 1e-12 * np.maximum(yy, 1e-300), 1.0 / np.where(sy > 0, sy, 1.0), 0.0)
    q = grad.copy()
    alpha = np.zeros(sy.shape)
    for i in reversed(range(s_mem.shape[1])):
        alpha[:, i] = rho[:, i] * np.sum(s_mem[:, i] * q, axis=1)
        q -= alpha[:, i, None] * y_mem[:, i]
    newest = rho[:, -1] > 0
    gamma = np.where(newest, sy[:, -1] / np.where(newest, yy[:, -1], 1.0), 1.0)
    r = gamma[:, None] * q
    for i in range(s_mem.shape[1]):
        beta = rho[:, i] * np.sum(y_mem[:, i] * r, axis=1)
        r += s_mem[:, i] * (alpha[:, i] - beta)[:, None]
    d = -r
    bad = ~(np.sum(d * grad, axis=1) < 0) | ~np.all(np.isfinite(d), axis=1)
    return np.where(bad[:, None], -grad, d)


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
    # One device: the replicates are the batch axis here (the subjects' mesh is not used).
    prep = prepare_problem(model, data, spec, method, solver, one_device=True)
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
    scale = np.sqrt(_curvature(jac, weights_padded))

    def at(z, eta):
        """Every replicate's objective, gradient in z and pieces at `z` (EBEs warm from `eta`)."""
        new = [np.asarray(a) for a in evaluate(jnp.asarray(z / scale), constants, arrays, eta)]
        v = _weighted(new[0], weights_padded)
        g = _weighted(new[1], weights_padded) * free_mask
        v = np.where(np.isfinite(v) & np.all(np.isfinite(g), axis=1), v, np.inf)
        return v, g, new

    # L-BFGS in z = x * sqrt(R_ii) (a curvature of about 1 in every parameter, as in
    # fit_population), with a backtracking (Armijo) line search: every trial evaluates
    # all replicates at once, most iterations need one.
    z = x * scale
    s_mem, y_mem = np.zeros((r, MEMORY, n_x)), np.zeros((r, MEMORY, n_x))
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
        grad_z = grad / scale
        d = _lbfgs_direction(grad_z, s_mem, y_mem) * active[:, None]
        slope = np.sum(d * grad_z, axis=1)
        t = np.ones(r)
        searching = active.copy()
        accept = np.zeros(r, bool)
        new_value, new_grad_z = value.copy(), grad_z.copy()
        new = [ofv_i.copy(), jac.copy(), np.asarray(eta).copy()]
        for _trial in range(MAX_TRIALS):
            v, g, pieces = at(np.where(searching[:, None], z + t[:, None] * d, z), eta)
            ok = searching & (v <= value + ARMIJO * t * slope)
            for a, b in zip(new, pieces[:3]):
                a[ok] = b[ok]
            new_value[ok], new_grad_z[ok] = v[ok], g[ok] / scale[ok]
            accept |= ok
            searching &= ~ok
            if not searching.any():
                break
            t = np.where(searching, 0.5 * t, t)
        stopped[searching] = "no decrease"
        active &= ~searching
        step = t[:, None] * d * accept[:, None]
        # The pair enters the memory where it is a curvature pair (s.y > 0).
        pair = accept & (np.sum(step * (new_grad_z - grad_z), axis=1) > 0)
        s_mem[pair] = np.concatenate([s_mem[pair, 1:], step[pair, None]], axis=1)
        y_mem[pair] = np.concatenate([y_mem[pair, 1:], (new_grad_z - grad_z)[pair, None]], axis=1)
        iterations += accept
        stalls = np.where(accept, np.where(value - new_value <= 1e-12 * np.maximum(1.0, np.abs(new_value)), stalls + 1, 0), stalls)
        z = z + step
        ofv_i, jac = new[0], new[1]
        eta = jnp.asarray(new[2])
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
