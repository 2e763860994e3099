"""The solve of one animal: a scan over event segments, an exact or diffrax step inside each.

Every event (bolus, infusion start or stop, lagged dose, disease onset) ends one
segment and starts the next, so the step-size controller never straddles a
discontinuity: at a segment boundary the state jumps by the event's bolus and the input
rate changes, and the next segment's solve starts afresh. Inside a segment, a model's
declared linear PK is propagated in closed form (`vtrial.linear_pk`) and diffrax
integrates only the remaining states; with `SolverOptions(pk="ode")`, or for models
without linear PK, diffrax integrates everything. Outputs are saved at the requested
times only. An output requested at exactly an event time is the value just *before*
the event (the NONMEM convention).

This module knows nothing about batching: `vtrial.simulate` vmaps, chunks and shards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np

from vtrial import linear_pk
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

#: Solvers with an implicit (Newton) stage; see `vtrial.simulate.batched_solver`.
IMPLICIT_SOLVERS = frozenset({"kvaerno3", "kvaerno5"})

#: Save times per solve segment (segments also end at every event); see `solve_animal`.
SAVES_PER_SEGMENT = 8

#: Per-animal solver status codes; the index is the code stored in results.
STATUS_NAMES = ("ok", "max_steps_reached", "solver_failed", "nonfinite_output")


@dataclass(frozen=True)
class SolverOptions:
    """How each animal is integrated.

    - `solver`: one of `SOLVERS` (Tsit5 by default; Kvaerno5 for stiff systems);
    - `rtol`, `atol`: PID step-size controller tolerances;
    - `max_steps`: steps allowed per event segment before the animal is marked failed;
    - `dtype`: "float64" (default) or "float32" (measure its error before trusting it);
    - `pk`: "auto" (default) solves a model's declared linear PK in closed form and
      integrates only the remaining states; "ode" integrates every state (the
      reference path).
    """

    solver: str = "tsit5"
    rtol: float = 1e-8
    atol: float = 1e-10
    max_steps: int = 100_000
    dtype: str = "float64"
    pk: str = "auto"

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
        if self.pk not in ("auto", "ode"):
            raise SpecError("solver.pk", f"must be 'auto' or 'ode', got {self.pk!r}")

    @property
    def jnp_dtype(self):
        return jnp.float64 if self.dtype == "float64" else jnp.float32


class AnimalSolution(NamedTuple):
    """States at the save times (`(n_times, n_states)`), status code, steps taken."""

    states: jnp.ndarray
    status: jnp.ndarray
    n_steps: jnp.ndarray


def _result_code(result) -> jnp.ndarray:
    return jnp.where(
        result == dfx.RESULTS.successful, 0, jnp.where(result == dfx.RESULTS.max_steps_reached, 1, 2)
    )


def _diffeqsolve(f, a, b, y, args, ts, dt0, options):
    return dfx.diffeqsolve(
        dfx.ODETerm(f),
        SOLVERS[options.solver](),
        a,
        b,
        dt0,
        y,
        args=args,
        saveat=dfx.SaveAt(ts=ts, t1=True),
        stepsize_controller=dfx.PIDController(rtol=options.rtol, atol=options.atol),
        max_steps=options.max_steps,
        throw=False,
    )


def _ode_advance(model: Model, p, options: SolverOptions):
    """Integrate every state over [a, b]; returns (y(b), y(ts), status code, steps)."""

    def f(t, y, rate):
        return model.vector_field(t, y, p, rate)

    def advance(a, b, y, rate, ts, dt0):
        sol = _diffeqsolve(f, a, b, y, rate, ts, dt0, options)
        return sol.ys[-1], sol.ys[:-1], _result_code(sol.result), sol.stats["num_steps"]

    return advance


def _closed_form_advance(model: Model, p, options: SolverOptions):
    """Linear PK in closed form; diffrax integrates only the other states, fed the exact PK."""
    spec = model.linear_pk
    pk_names = list(spec.states)
    pd_names = [n for n in model.state_names if n not in spec.states]
    pk_idx = np.array([model.state_index(n) for n in pk_names], dtype=int)
    pd_idx = np.array([model.state_index(n) for n in pd_names], dtype=int)
    # Model order from [pk..., pd...]: a static gather, not a scatter into zeros, since
    # the right-hand side assembles a full state at every stage of every step.
    unsort = np.argsort(np.concatenate([pk_idx, pd_idx]))
    modes = linear_pk.modes(spec.constants(p))

    def assemble(pk, pd):
        return jnp.concatenate([pk, pd], axis=-1)[..., unsort] if pd_names else pk[..., unsort]

    def advance(a, b, y, rate, ts, dt0):
        # Mode coordinates of the segment's start and input: once per segment, not at
        # every stage of every step.
        alpha, beta = linear_pk.mode_coordinates(modes, y[pk_idx], rate[pk_idx])

        def pk_at(t):
            return linear_pk.propagate_modes(modes, alpha, beta, t - a)

        pk_ts = jax.vmap(pk_at)(ts)
        if not pd_names:
            return assemble(pk_at(b), None), assemble(pk_ts, None), jnp.asarray(0), jnp.asarray(0)

        def f(t, y_pd, rate):
            return model.vector_field(t, assemble(pk_at(t), y_pd), p, rate)[pd_idx]

        sol = _diffeqsolve(f, a, b, y[pd_idx], rate, ts, dt0, options)
        return assemble(pk_at(b), sol.ys[-1]), assemble(pk_ts, sol.ys[:-1]), _result_code(sol.result), sol.stats["num_steps"]

    return advance


def uses_closed_form(model: Model, options: SolverOptions) -> bool:
    """Whether `solve_animal` takes the closed-form PK path for this model and options."""
    return options.pk == "auto" and model.linear_pk is not None


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

    # Segments end at every event and at every K-th save time, so each diffrax solve
    # saves at most K points: its loop then carries K states, not a buffer of all outputs
    # (under vmap every carried array is copied at each step). At equal times save
    # boundaries sort first, so an output at an event time is the pre-event value.
    n_save = save_times.shape[0]
    k = SAVES_PER_SEGMENT
    grid = np.unique(np.r_[np.arange(k - 1, n_save, k), n_save - 1])
    bound_t = jnp.concatenate([save_times[grid], jnp.clip(events.time_h.astype(dtype), t0, t_end)])
    bound_bolus = jnp.concatenate([jnp.zeros((grid.size, n_states), dtype), events.bolus.astype(dtype)])
    bound_rate = jnp.concatenate([jnp.zeros((grid.size, n_states), dtype), events.rate_delta.astype(dtype)])
    order = jnp.argsort(bound_t, stable=True)
    ends = bound_t[order]
    starts = jnp.concatenate([t0[None], ends[:-1]])
    bolus = jnp.concatenate([jnp.zeros((1, n_states), dtype), bound_bolus[order][:-1]])
    rate_delta = jnp.concatenate([jnp.zeros((1, n_states), dtype), bound_rate[order][:-1]])
    # The saves of segment (a, b] are the (at most k) save times after a, up to b.
    first_save = jnp.searchsorted(save_times, starts, side="right")
    slots = jnp.minimum(first_save[:, None] + jnp.arange(k)[None, :], n_save - 1)
    in_segment = (first_save[:, None] + jnp.arange(k)[None, :] < n_save) & (save_times[slots] <= ends[:, None])
    seg_ts = jnp.where(in_segment, save_times[slots], ends[:, None])

    advance = (_closed_form_advance if uses_closed_form(model, options) else _ode_advance)(model, p, options)

    def segment(carry, xs):
        y, rate, dt_guess, status, steps = carry
        a, b, add, drate, ts = xs
        y = y + add
        rate = rate + drate
        y_end, ys, code, n = advance(a, b, y, rate, ts, jnp.maximum(dt_guess, 1e-9 * (b - a)))
        # The next segment starts from (twice) this one's mean step instead of a fresh
        # step-size search at every boundary.
        dt_guess = jnp.where(n > 0, 2.0 * (b - a) / jnp.maximum(n, 1), dt_guess)
        status = jnp.where(status == 0, code, status)
        return (y_end, rate, dt_guess, status, steps + n), ys

    y0 = model.initial_state(p).astype(dtype)
    dt_first = jnp.maximum(t_end - t0, 1.0) * 1e-3
    init = (y0, jnp.zeros(n_states, dtype), dt_first, jnp.asarray(0), jnp.asarray(0))
    (_, _, _, status, steps), seg_ys = jax.lax.scan(segment, init, (starts, ends, bolus, rate_delta, seg_ts))
    # Save time i lies in the first segment ending at or after it, in slot i - first_save.
    seg_of = jnp.searchsorted(ends, save_times, side="left")
    slot_of = jnp.arange(n_save) - first_save[seg_of]
    out = jnp.where((save_times <= t0)[:, None], y0[None, :], seg_ys[seg_of, jnp.clip(slot_of, 0, k - 1)])
    status = jnp.where((status == 0) & ~jnp.all(jnp.isfinite(out)), 3, status)
    return AnimalSolution(out, status, steps)
