r"""The gradient search of a dose optimisation: exact gradients through the solver, a
smooth surrogate of attainment, an augmented Lagrangian driven by optax.

For every regimen shape $s$ the variable is $u_s = \log D_s$, the log daily dose
(mg/kg/day); the objective is the log total drug $f_s = u_s + \log(\text{drug days}_s)$,
minimised subject to every requirement $j$ (target and exposure constraints) inside the
dose range. Shapes are independent problems, solved side by side in one batched solve
(`jax.vmap(solve_animal)` over shapes x animals).

**Per animal.** `solve_animal` is differentiated in reverse mode with respect to the dose
amounts (`vtrial.engine.solve`: its custom VJP gives exact derivatives, event times
included); each animal's margins $m_{ij}(u)$ (`vtrial.design.targets`) and their slopes
$m'_{ij} = \partial m_{ij}/\partial u$ come from one forward solve and one reverse pass
per requirement.

**Smooth surrogate.** The exact attainment $\frac1n\sum_i 1[m_{ij} \ge 0]$ is replaced by
$\frac1n\sum_i \sigma(m_{ij}/\tau)$ ($\sigma$ the logistic function, $\tau$ a temperature in
margin units). "Smooth attainment at least $f_j$" is written in margin units: $q_j \ge 0$
with $q_j$ the smoothed quantile solving $\frac1n\sum_i \sigma((m_{ij} - q_j)/\tau) = f_j$
(the same feasible set; its scale does not vanish where few animals are near their
bound). By implicit differentiation
$q'_j = \sum_i w_i m'_{ij} / \sum_i w_i$ with $w_i = \sigma'((m_{ij} - q_j)/\tau)$.

**Augmented Lagrangian** (method of multipliers, penalty $\mu$):
$L = f + \sum_j \frac{1}{2\mu}\left(\max(0, \lambda_j - \mu q_j)^2 - \lambda_j^2\right)$,
$\nabla L = 1 - \sum_j \max(0, \lambda_j - \mu q_j)\, q'_j$, multipliers
$\lambda_j \leftarrow \max(0, \lambda_j - \mu q_j)$ once a step is small. The steps are an
optax chain: the gradient scaled by the Gauss-Newton curvature $\mu\sum_{j \in W} q_j'^2$
(`scale_by_inverse_curvature`), clipped to a trust radius (`optax.clip`), and projected
on the dose range (`optax.projections.projection_box`). $W$, the working set, holds the
requirements with $\lambda_j > 0$ or $q_j \le 0$; their terms are used without the
$\max(0, \cdot)$, so a step from a slack point lands on the boundary instead of sliding
along the objective (a semismooth Newton step).

**Schedule.** (1) From the top of the range, safeguarded Newton steps on the linearised
requirements find the boundary of the feasible doses (bracketed: a step outside the
bracket of known feasible and infeasible doses is a bisection), and the multiplier of
the requirement that sets it starts at its KKT value $1/q'_j$. (2) The augmented
Lagrangian runs in stages on growing shares of the training animals with shrinking
temperatures (default: a quarter at $\tau = 0.05$, then all at $\tau = 0.01$). Between
stages, shapes whose total drug exceeds the best shape's by more than `prune_ratio` are
dropped. (3) The smooth optimum is moved to the least dose at which the **exact**
attainment of the training animals meets every requirement, by per-animal Newton steps
on the linearised margins, each checked by an exact evaluation. The caller then verifies
the result on fresh animals.

Failed solves (status > 0) count as not meeting any requirement and carry no gradient.

The margins and slopes come from the split solve (`SolverOptions(events="split")`: one
solve per event segment), whose reverse mode gives the exact derivatives, event times
included, and which is what `solve_animal` differentiates on either path; the grid's
one-solve path agrees with it to the solver's tolerance.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit

from vtrial.analysis.endpoints import endpoint_values
from vtrial.design.dosing import lower_regimens
from vtrial.design.regimen_space import RegimenShape
from vtrial.design.targets import Requirement, requirement_endpoints, requirement_margins, requirement_values
from vtrial.engine.events import DoseRecords
from vtrial.engine.exposure import exposure_solver, exposure_spec
from vtrial.engine.solve import SolverOptions, solve_animal
from vtrial.errors import SpecError
from vtrial.models.base import Model


#: Exact evaluations at most when moving the smooth optimum to the exact boundary.
EXACT_STEPS = 8
#: Evaluations without a 10% smaller violation after which a shape stops (infeasible).
STALL_ITERATIONS = 5


@dataclass(frozen=True)
class GradientSettings:
    """Settings of the gradient search (see the module docstring).

    - `stages`: `(share of the training animals, temperature)` per stage;
    - `penalty`: $\\mu$; `trust_radius`: the largest step in log daily dose;
    - `tolerance`: a stage ends when steps and violations (in log dose) are below it;
    - `max_iterations`: evaluations per stage at most; `newton_steps`: of the boundary search;
    - `prune_ratio`: after the first stage keep shapes whose total drug is within this
      factor of the best (`inf` keeps all);
    - `lanes_per_batch`: animal-regimens per compiled batch.
    """

    stages: tuple[tuple[float, float], ...] = ((0.25, 0.05), (1.0, 0.01))
    penalty: float = 20.0
    trust_radius: float = 0.5
    tolerance: float = 1e-3
    max_iterations: int = 30
    newton_steps: int = 10
    prune_ratio: float = 1.25
    lanes_per_batch: int = 256

    def __post_init__(self):
        if not self.stages or any(not (0 < share <= 1 and tau > 0) for share, tau in self.stages):
            raise SpecError("gradient.stages", "each stage is [share of animals in (0, 1], temperature > 0]")
        if self.stages[-1][0] != 1.0:
            raise SpecError("gradient.stages", "the last stage must use every training animal (share 1)")
        for name in ("penalty", "trust_radius", "tolerance"):
            if not getattr(self, name) > 0:
                raise SpecError(f"gradient.{name}", "must be > 0")
        if not self.prune_ratio >= 1:
            raise SpecError("gradient.prune_ratio", "must be >= 1")
        for name in ("max_iterations", "newton_steps", "lanes_per_batch"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise SpecError(f"gradient.{name}", "must be a whole number >= 1")


@dataclass(frozen=True)
class GradientResult:
    """What the gradient search found, per shape (arrays of length `n_shapes`).

    - `daily_dose_mg_per_kg`: the least dose meeting every requirement exactly on the
      training animals (NaN for pruned shapes); `feasible`: whether one was found;
    - `attainment`: `(n_shapes, n_requirements)` exact shares at that dose;
    - `multipliers`: `(n_shapes, n_requirements)` the final $\\lambda$ (> 0: binding);
    - `pruned`: dropped after the first stage;
    - `history`: one row per evaluation (stage, animals, shapes, lanes, doses);
    - `animal_regimens`: solves done (each with its reverse pass); `evaluations`;
      `seconds`, `compile_seconds`.
    """

    daily_dose_mg_per_kg: np.ndarray
    feasible: np.ndarray
    attainment: np.ndarray
    multipliers: np.ndarray
    pruned: np.ndarray
    history: pd.DataFrame
    animal_regimens: int
    evaluations: int
    seconds: float
    compile_seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)


def scale_by_inverse_curvature() -> optax.GradientTransformationExtraArgs:
    """Divide the updates by a curvature passed to `update(..., curvature=...)`: a
    Newton (here Gauss-Newton) step as an optax transformation."""

    def init(params):
        return optax.EmptyState()

    def update(updates, state, params=None, *, curvature, **extra):
        return jax.tree.map(lambda g, h: g / h, updates, curvature), state

    return optax.GradientTransformationExtraArgs(init, update)


@lru_cache(maxsize=16)
def _lane_margins(model: Model, requirements: tuple[Requirement, ...], times_h: tuple[float, ...], options: SolverOptions):
    """Jitted: per lane (animal x shape) the margins, their slopes in log dose, the status."""
    endpoints = requirement_endpoints(requirements)
    times = np.asarray(times_h)
    n_req = len(requirements)
    # The split solve, differentiated directly: `solve_animal`'s reverse mode takes its
    # derivatives from the split solve anyway (a custom VJP around the one-solve path),
    # so solving the one-solve path first would only add work (and ~40% compile time).
    options = replace(options, events="split")
    # AUCs and peaks from the solver, as the grid search takes them (`vtrial.engine.exposure`).
    spec = exposure_spec(endpoints)
    solve_exposure = exposure_solver(model, spec) if spec is not None else None

    def one(u, p, unit_doses, vehicle):
        def margins_of(u):
            doses = unit_doses._replace(amount=unit_doses.amount * jnp.exp(u))
            if solve_exposure is None:
                sol, exact = solve_animal(model, p, doses, times, options=options), {}
            else:
                sol, exact = solve_exposure(p, doses, times, 0.0, options)
            observed = jax.vmap(lambda y: model.observe(y, p))(sol.states)
            exact = {name: v[None] for name, v in exact.items()}
            got = endpoint_values(endpoints, times, {k: v[None, :] for k, v in observed.items()}, xp=jnp, exact=exact)
            values = jnp.stack([got[e.name][0] for e in endpoints])
            judged = requirement_values(requirements, values, vehicle, xp=jnp)
            return requirement_margins(requirements, judged, xp=jnp), sol.status

        margins, pullback, status = jax.vjp(margins_of, u, has_aux=True)
        slopes = jax.vmap(lambda cotangent: pullback(cotangent)[0])(jnp.eye(n_req, dtype=margins.dtype))
        return margins, slopes, status

    return jax.jit(jax.vmap(one))


class _Evaluator:
    """Margins and slopes of shapes x the first `n` training animals, batch by batch."""

    def __init__(self, model, requirements, times_h, options, shapes, animals, vehicle, lanes_per_batch):
        self.fn = _lane_margins(model, tuple(requirements), tuple(float(t) for t in times_h), options)
        self.unit = lower_regimens(model, [s.regimen(1.0) for s in shapes])  # amounts per mg/kg/day
        self.params = {k: animals[k].to_numpy(dtype=float) for k in (*model.parameter_names, *model.covariate_names)}
        # An animal whose untreated solve failed has NaN relative values: it meets nothing.
        self.vehicle = np.asarray(vehicle, dtype=float) if vehicle is not None else np.ones((len(animals), len(requirements)))
        self.lanes = int(min(lanes_per_batch, len(shapes) * len(animals)))
        self.n_req = len(requirements)
        self.animal_regimens = self.evaluations = 0
        self.compile_seconds = 0.0

    def __call__(self, u: np.ndarray, shape_idx: np.ndarray, n: int):
        """`u`, `shape_idx`: `(k,)`; returns margins, slopes `(k, n, J)` and status `(k, n)`."""
        k = len(shape_idx)
        lane_shape = np.repeat(np.arange(k), n)
        lane_animal = np.tile(np.arange(n), k)
        total = lane_shape.size
        margins = np.empty((total, self.n_req))
        slopes = np.empty((total, self.n_req))
        status = np.empty(total, np.int64)
        for start in range(0, total, self.lanes):
            take = np.minimum(np.arange(start, start + self.lanes), total - 1)  # pad with the last lane
            s, a = lane_shape[take], lane_animal[take]
            args = (
                jnp.asarray(u[s]),
                {name: jnp.asarray(v[a]) for name, v in self.params.items()},
                self.unit.map(lambda x: jnp.asarray(x[shape_idx[s]])),
                jnp.asarray(self.vehicle[a]),
            )
            t = time.perf_counter()
            m, g, st = jax.device_get(self.fn(*args))
            if self.evaluations == 0 and start == 0:
                self.compile_seconds = time.perf_counter() - t
            keep = slice(0, min(self.lanes, total - start))
            margins[start:start + self.lanes][keep], slopes[start:start + self.lanes][keep] = m[keep], g[keep]
            status[start:start + self.lanes][keep] = st[keep]
        failed = status != 0
        margins[failed] = np.nan
        slopes[failed] = 0.0
        slopes[~np.isfinite(slopes)] = 0.0
        self.animal_regimens += total
        self.evaluations += 1
        return margins.reshape(k, n, self.n_req), slopes.reshape(k, n, self.n_req), status.reshape(k, n)


def smoothed_quantile(margins: np.ndarray, slopes: np.ndarray, fraction: float, tau: float) -> tuple[float, float]:
    """The smoothed quantile $q$ of one shape's margins (`(n,)`, NaN: failed) and its
    derivative in log dose (see the module docstring)."""
    finite = np.isfinite(margins)
    m = np.where(finite, margins, -np.inf)
    if not finite.any():
        return -np.inf, 0.0

    def excess(q):
        return float(np.mean(expit((m - q) / tau))) - fraction

    lo, hi = float(np.min(m[finite])) - 50 * tau, float(np.max(m[finite])) + 50 * tau
    if excess(lo) < 0:  # failed animals alone keep the share below the fraction
        q = lo
    else:
        q = brentq(excess, lo, hi, xtol=1e-12 * max(1.0, abs(lo), abs(hi)))
    z = expit((m - q) / tau)
    w = z * (1.0 - z)
    return q, float(np.sum(w * slopes) / np.sum(w)) if np.sum(w) > 0 else 0.0


def _surrogate(evaluate, requirements, u, idx, n, tau):
    """(q, q') `(k, J)` and the exact margins/slopes at `u[idx]` on the first `n` animals."""
    m, g, _ = evaluate(u[idx], idx, n)
    q = np.empty((len(idx), len(requirements)))
    dq = np.empty_like(q)
    for a in range(len(idx)):
        for j, r in enumerate(requirements):
            q[a, j], dq[a, j] = smoothed_quantile(m[a, :, j], g[a, :, j], r.fraction, tau)
    return q, dq, m, g


def _exact_share(margins: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.mean(np.where(np.isnan(margins), False, margins >= 0), axis=-2)


def _meets(share: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    return np.all(share >= fractions - 1e-12, axis=-1)


def _linearised_step(m: np.ndarray, g: np.ndarray, fractions: np.ndarray) -> float:
    """The least change of log dose after which, with every animal's margins linearised,
    each requirement that grows with dose is met by its share of the animals (`m`, `g`:
    `(n, J)`); ceilings (falling with dose) are checked, not solved for."""
    n = m.shape[0]
    need = []
    for j, f in enumerate(fractions):
        mj, gj = m[:, j], g[:, j]
        if not np.nansum(gj) > 0:
            continue
        finite = np.isfinite(mj)
        rising = finite & (gj > 0)
        base = int(np.sum(finite & ~rising & (mj >= 0)))
        k = math.ceil(f * n - 1e-9) - base
        if k <= 0:
            need.append(-np.inf)
        elif k > rising.sum():
            need.append(np.inf)
        else:
            need.append(float(np.sort(-mj[rising] / gj[rising])[k - 1]))
    return max(need) if need else 0.0


def gradient_search(
    model: Model,
    shapes: Sequence[RegimenShape],
    requirements: Sequence[Requirement],
    animals: pd.DataFrame,
    *,
    daily_dose_range: tuple[float, float],
    times_h,
    vehicle: np.ndarray | None = None,
    options: SolverOptions = SolverOptions(),
    settings: GradientSettings = GradientSettings(),
) -> GradientResult:
    """Minimise the total drug of each regimen shape subject to every requirement on the
    training `animals` (see the module docstring).

    **Arguments:** `vehicle`: `(n_animals, n_requirements)` endpoint values of the same
    animals untreated (needed by requirements relative to untreated); `times_h`: output
    times covering the requirements; `daily_dose_range`: mg/kg/day.

    **Returns:** a `GradientResult`."""
    requirements = tuple(requirements)
    start_time = time.perf_counter()
    n_all, n_shapes, n_req = len(animals), len(shapes), len(requirements)
    fractions = np.array([r.fraction for r in requirements])
    lo, hi = (math.log(v) for v in daily_dose_range)
    drug_days = np.array([s.drug_days for s in shapes])
    evaluate = _Evaluator(model, requirements, times_h, options, shapes, animals, vehicle, settings.lanes_per_batch)
    history = []
    u = np.full(n_shapes, hi)
    lam = np.zeros((n_shapes, n_req))
    active = np.ones(n_shapes, bool)
    mu, tol = settings.penalty, settings.tolerance
    optimizer = optax.chain(scale_by_inverse_curvature(), optax.clip(settings.trust_radius), optax.scale(-1.0))

    def record(stage, n, idx, at=None):
        """One history row: the doses of every shape (those evaluated at `at` where given)."""
        doses = {f"dose_{s}": math.exp(u[s]) for s in range(n_shapes)}
        doses.update({f"dose_{s}": math.exp(v) for s, v in (at or {}).items()})
        history.append({"stage": stage, "n_animals": n, "n_shapes": len(idx), "lanes": len(idx) * n, **doses})

    # (1) boundary of the feasible doses, from the top of the range
    n1, tau1 = max(1, int(round(settings.stages[0][0] * n_all))), settings.stages[0][1]
    below, above = np.full(n_shapes, -np.inf), np.full(n_shapes, np.inf)  # known infeasible / feasible
    moving = np.ones(n_shapes, bool)
    dq = np.zeros((n_shapes, n_req))
    q = np.zeros((n_shapes, n_req))
    for _ in range(settings.newton_steps):
        idx = np.flatnonzero(moving)
        if idx.size == 0:
            break
        q[idx], dq[idx], _, _ = _surrogate(evaluate, requirements, u, idx, n1, tau1)
        record("boundary", n1, idx)
        for a, s in enumerate(idx):
            rising = dq[s] > 1e-12
            ok = np.all(q[s][rising] >= 0)
            above[s], below[s] = (min(above[s], u[s]), below[s]) if ok else (above[s], max(below[s], u[s]))
            root = np.max(u[s] - q[s][rising] / dq[s][rising]) if rising.any() else lo
            new = float(np.clip(root, lo, hi))
            if not (below[s] < new < above[s]):
                new = 0.5 * (max(below[s], lo) + min(above[s], hi))
            moving[s] = abs(new - u[s]) >= 10 * tol
            u[s] = new
    for s in range(n_shapes):  # multipliers at their KKT value for the requirement that sets the boundary
        rising = dq[s] > 1e-12
        if rising.any():
            j = int(np.argmax(np.where(rising, u[s] - q[s] / np.where(rising, dq[s], 1.0), -np.inf)))
            lam[s, j] = 1.0 / dq[s, j]

    # (2) the augmented Lagrangian, stage by stage
    for k, (share, tau) in enumerate(settings.stages):
        n = max(1, int(round(share * n_all)))
        state = optimizer.init(jnp.asarray(u))
        done = ~active.copy()
        best_violation = np.full(n_shapes, np.inf)
        stalled = np.zeros(n_shapes, int)
        for _ in range(settings.max_iterations):
            idx = np.flatnonzero(~done)
            if idx.size == 0:
                break
            q_i, dq_i, _, _ = _surrogate(evaluate, requirements, u, idx, n, tau)
            q[idx], dq[idx] = q_i, dq_i
            record(f"stage {k + 1}", n, idx)
            work = (lam[idx] > 0) | (q_i <= 0)
            push = np.where(work, lam[idx] - mu * q_i, 0.0)
            grad = 1.0 - np.sum(push * dq_i, axis=1)
            curvature = np.maximum(mu * np.sum(work * dq_i**2, axis=1), 1e-3)
            full = np.zeros(n_shapes)
            full_curvature = np.ones(n_shapes)
            full[idx], full_curvature[idx] = grad, curvature
            step, state = optimizer.update(jnp.asarray(full), state, jnp.asarray(u), curvature=jnp.asarray(full_curvature))
            new = np.asarray(optax.projections.projection_box(jnp.asarray(u) + step, lo, hi))
            moved = np.abs(new - u)[idx]
            u[idx] = new[idx]
            settled = moved < 10 * tol
            lam[idx] = np.where(settled[:, None], np.maximum(0.0, lam[idx] - mu * q_i), lam[idx])
            violation = np.max(np.maximum(0.0, -q_i) / np.maximum(np.abs(dq_i), 1e-12), axis=1)
            # A shape whose violation stops shrinking cannot meet every requirement here
            # (e.g. a trough target against a Cmax ceiling): it is left where it is.
            improving = violation < 0.9 * best_violation[idx]
            best_violation[idx] = np.minimum(best_violation[idx], violation)
            stalled[idx] = np.where((violation >= tol) & ~improving, stalled[idx] + 1, 0)
            done[idx] = ((moved < tol) & ((violation < tol) | np.isclose(u[idx], hi))) | (stalled[idx] >= STALL_ITERATIONS)
        if k == 0 and len(settings.stages) > 1 and math.isfinite(settings.prune_ratio):
            feasible = np.all(q >= -tol * np.maximum(np.abs(dq), 1e-12), axis=1) & active
            if feasible.any():
                total = np.exp(u) * drug_days
                active &= feasible & (total <= settings.prune_ratio * np.min(total[feasible]))

    # (3) the least dose meeting every requirement exactly on the training animals
    daily = np.full(n_shapes, np.nan)
    feasible = np.zeros(n_shapes, bool)
    attainment = np.full((n_shapes, n_req), np.nan)
    notes = []
    for s in np.flatnonzero(active):
        best, best_share, last_share = None, None, None
        point = u[s]
        for _ in range(EXACT_STEPS):
            m, g, _ = evaluate(np.array([point]), np.array([s]), n_all)
            record("exact", n_all, [s], at={s: point})
            share = _exact_share(m[0])
            last_share = share
            meets = bool(_meets(share, fractions))
            if meets and (best is None or point < best):
                best, best_share = point, share
            step = _linearised_step(m[0], g[0], fractions)
            if not math.isfinite(step) or (point >= hi and not meets):
                break  # no dose in the range meets every requirement
            if not meets:  # always move up from a dose that fails, by a tenth of the tolerance at least
                step = max(step, 0.1 * tol)
            elif abs(step) < 0.1 * tol:
                break  # within a tenth of the tolerance of the exact boundary
            target = float(np.clip(point + step + 1e-7, lo, hi))
            if best is not None and target >= best - 0.1 * tol:
                break  # no meaningful improvement on the best dose found
            point = target
        u[s] = best if best is not None else point
        if best is not None:
            daily[s], feasible[s], attainment[s] = math.exp(best), True, best_share
        else:
            daily[s], attainment[s] = math.exp(point), last_share
    if not feasible.any():
        notes.append("no shape meets every requirement on the training animals within the dose range")
    return GradientResult(
        daily, feasible, attainment, lam.copy(), ~active, pd.DataFrame(history), evaluate.animal_regimens,
        evaluate.evaluations, time.perf_counter() - start_time, evaluate.compile_seconds, tuple(notes),
    )
