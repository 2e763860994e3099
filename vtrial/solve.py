"""The solve of one animal: a scan over event segments, diffrax inside each.

Every event (bolus, infusion start or stop, lagged dose, disease onset) ends one
segment and starts the next, so the step-size controller never straddles a
discontinuity: at a segment boundary the state jumps by the event's bolus and the input
rate changes, and the next segment's solve starts afresh. Outputs are saved at the
requested times only. An output requested at exactly an event time is the value just
*before* the event (the NONMEM convention).

This module knows nothing about batching: `vtrial.simulate` vmaps, chunks and shards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import diffrax as dfx
import jax
import jax.numpy as jnp

from vtrial.errors import SpecError
from vtrial.events import build_event_table
from vtrial.models.base import Model

SOLVERS = {
    "tsit5": dfx.Tsit5,
    "dopri5": dfx.Dopri5,
    "dopri8": dfx.Dopri8,
    "kvaerno3": dfx.Kvaerno3,
    "kvaerno5": dfx.Kvaerno5,
}

#: Per-animal solver status codes; the index is the code stored in results.
STATUS_NAMES = ("ok", "max_steps_reached", "solver_failed", "nonfinite_output")


@dataclass(frozen=True)
class SolverOptions:
    """How each animal is integrated.

    - `solver`: one of `SOLVERS` (Tsit5 by default; Kvaerno5 for stiff systems);
    - `rtol`, `atol`: PID step-size controller tolerances;
    - `max_steps`: steps allowed per event segment before the animal is marked failed;
    - `dtype`: "float64" (default) or "float32" (measure its error before trusting it).
    """

    solver: str = "tsit5"
    rtol: float = 1e-8
    atol: float = 1e-10
    max_steps: int = 100_000
    dtype: str = "float64"

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise SpecError("solver.solver", f"unknown solver {self.solver!r}; allowed: {', '.join(SOLVERS)}")
        if not (0 < self.rtol < 1):
            raise SpecError("solver.rtol", f"must lie in (0, 1), got {self.rtol}")
        if not (self.atol > 0):
            raise SpecError("solver.atol", f"must be > 0, got {self.atol}")
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise SpecError("solver.max_steps", f"must be a whole number >= 1, got {self.max_steps!r}")
        if self.dtype not in ("float64", "float32"):
            raise SpecError("solver.dtype", f"must be 'float64' or 'float32', got {self.dtype!r}")

    @property
    def jnp_dtype(self):
        return jnp.float64 if self.dtype == "float64" else jnp.float32


class AnimalSolution(NamedTuple):
    """States at the save times (`(n_times, n_states)`), status code, steps taken."""

    states: jnp.ndarray
    status: jnp.ndarray
    n_steps: jnp.ndarray


def _rhs(model: Model):
    def f(t, y, args):
        p, rate = args
        return model.vector_field(t, y, p, rate)

    return dfx.ODETerm(f)


def solve_animal(
    model: Model,
    p: Mapping[str, jnp.ndarray],
    doses,
    save_times: jnp.ndarray,
    *,
    t0: float = 0.0,
    options: SolverOptions = SolverOptions(),
) -> AnimalSolution:
    """Integrate one animal from `t0` to `max(save_times)` through all its events.

    **Arguments:**
    - `model`: the model;
    - `p`: every parameter and covariate of this animal, scalars;
    - `doses`: tuple of dose-record arrays `(time_h, amount, per_kg, duration_h, route)`;
    - `save_times`: shape `(n_times,)`, non-decreasing, >= `t0` (h);
    - `t0`: start of the solve (h); states start at their initial values there.

    **Returns:** an `AnimalSolution`. A failed segment marks the animal (status > 0);
    later segments still run so shapes stay fixed, and the caller masks the values.
    """
    dtype = options.jnp_dtype
    p = {k: jnp.asarray(v, dtype) for k, v in p.items()}
    save_times = jnp.asarray(save_times, dtype)
    t0 = jnp.asarray(t0, dtype)
    t_end = save_times[-1]
    events = build_event_table(model, p, doses)
    n_states = model.n_states

    ev_t = jnp.clip(events.time_h.astype(dtype), t0, t_end)
    starts = jnp.concatenate([t0[None], ev_t])
    ends = jnp.concatenate([ev_t, t_end[None]])
    bolus = jnp.concatenate([jnp.zeros((1, n_states), dtype), events.bolus.astype(dtype)])
    rate_delta = jnp.concatenate([jnp.zeros((1, n_states), dtype), events.rate_delta.astype(dtype)])
    first = jnp.arange(starts.shape[0]) == 0

    term = _rhs(model)
    solver = SOLVERS[options.solver]()
    controller = dfx.PIDController(rtol=options.rtol, atol=options.atol)

    def segment(carry, xs):
        y, rate, out, status, steps = carry
        a, b, add, drate, is_first = xs
        y = y + add
        rate = rate + drate
        sol = dfx.diffeqsolve(
            term,
            solver,
            a,
            b,
            None,
            y,
            args=(p, rate),
            saveat=dfx.SaveAt(ts=jnp.clip(save_times, a, b), t1=True),
            stepsize_controller=controller,
            max_steps=options.max_steps,
            throw=False,
        )
        in_segment = ((save_times > a) & (save_times <= b)) | (is_first & (save_times == a))
        out = jnp.where(in_segment[:, None], sol.ys[:-1], out)
        code = jnp.where(
            sol.result == dfx.RESULTS.successful,
            0,
            jnp.where(sol.result == dfx.RESULTS.max_steps_reached, 1, 2),
        )
        status = jnp.where(status == 0, code, status)
        return (sol.ys[-1], rate, out, status, steps + sol.stats["num_steps"]), None

    y0 = model.initial_state(p).astype(dtype)
    out0 = jnp.zeros((save_times.shape[0], n_states), dtype)
    init = (y0, jnp.zeros(n_states, dtype), out0, jnp.asarray(0), jnp.asarray(0))
    (_, _, out, status, steps), _ = jax.lax.scan(segment, init, (starts, ends, bolus, rate_delta, first))
    status = jnp.where((status == 0) & ~jnp.all(jnp.isfinite(out)), 3, status)
    return AnimalSolution(out, status, steps)
