r"""The solve of one animal through its events: dosing and parameter-timed jumps.

Events (bolus, infusion start or stop, lagged dose, disease onset) are discontinuities:
the state jumps by a bolus and the input rate changes. They are handled in one of two
ways, and both hit every event exactly, never smearing it with the step-size controller:

- **split** (the reference): every event ends one segment and starts the next, a scan
  runs one diffrax solve per segment, and the state jumps between them. Under `vmap`
  the scan is in lockstep across animals, so every segment waits for its slowest
  animal; since animals reach their fast phases at different times, that wastes about
  half the work of a population solve (CIA-1, closed-form PK).
- **in one solve** (`events="jumps"`): one diffrax solve per animal over the whole time
  span. The jumps are taken out of the integrated variable, $\tilde y = y - H(t)$ with
  $H(t)$ the sum of the boluses up to $t$, so $\tilde y$ is continuous and only its
  right-hand side $f(t, \tilde y + H(t), r(t))$ jumps; diffrax's `jump_ts` makes the
  solver step to just before each event time and restart just after it. Every animal
  then steps at its own pace from start to end. Its gradients are taken from the split
  solve (a custom VJP), because the location of a jump inside a right-hand side is
  invisible to automatic differentiation while the split solve's segment ends carry
  it: derivatives with respect to event times (an onset, a lag, a dose time) are exact.

A model that is linear PK alone can also be solved by **superposition**
(`events="superposition"`): every output is the sum of the closed-form responses to the
events before it, with no solve and no loop, which keeps nested derivatives (population
estimation takes derivatives of third order) small and quick to compile.

Inside either, a model's declared linear PK is propagated in closed form
(`vtrial.engine.linear_pk`) and diffrax integrates only the remaining states; with
`SolverOptions(pk="ode")`, or for models without linear PK, diffrax integrates
everything. Outputs are saved at the requested times only. An output requested at
exactly an event time is the value just *before* the event; for dose records read from
a NONMEM dataset with PREDPP's items (`NonmemItems`: steady state, resets, modelled
rates) it is the value just after, as NONMEM's observation records see the dose records
before them and the lagged and additional doses they imply (`seen_at_their_time`).

Resets (EVID 3/4, SS = 1) set the state, a jump that depends on it: the split path and
the closed-form PK take them exactly; on the one-solve path states integrated by diffrax
cannot, and the animal is marked failed: dose records with NONMEM items of a model with
such states are therefore solved by the split path. Covariates that change
within an animal (`CovariateChanges`) switch the parameters at their times: such animals
are always solved by the split path, each change ending a segment.

This module knows nothing about batching: `vtrial.engine.runner` vmaps, chunks and shards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vtrial.engine import linear_pk
from vtrial.errors import SpecError
from vtrial.engine.events import (
    DoseRecords, build_event_table, covariate_changes, has_items, parameters_at, rates_after_events, seen_at_their_time,
)
from vtrial.engine.solvers import IMPLICIT_SOLVERS, SOLVERS  # noqa: F401 (re-exported)
from vtrial.models.base import Model

#: Save times per solve segment (segments also end at every event); see `solve_animal`.
SAVES_PER_SEGMENT = 8

#: Per-animal solver status codes; the index is the code stored in results.
STATUS_NAMES = ("ok", "max_steps_reached", "solver_failed", "nonfinite_output")

#: Steps of the PD solve after an event that changes the closed-form PK, in units of the
#: fastest PK mode's time constant. The PD solve's error estimate sees the PK only at
#: its stage times, so a step much longer than the fastest PK time scale can stride over
#: the transient a dose starts (the first hour of a pump) and still pass its error
#: test; the all-ODE path is protected by the PK states' own errors. (CIA-1, split
#: path: the response was 1.7e-4 off for one treated animal in 3,000.) The one-solve path
#: steps exactly to these multiples after every such event, the split path starts its
#: segment with the first; the controller takes over from there, checking errors as it
#: grows the step.
_KICK_STEPS = (0.01, 0.1, 1.0, 10.0)


@dataclass(frozen=True)
class SolverOptions:
    """How each animal is integrated.

    - `solver`: one of `SOLVERS` (Tsit5 by default; Kvaerno5 for stiff systems);
    - `rtol`, `atol`: PID step-size controller tolerances;
    - `max_steps`: steps allowed per event segment before the animal is marked failed;
    - `dtype`: "float64" (default) or "float32" (measure its error before trusting it);
    - `pk`: "auto" (default) solves a model's declared linear PK in closed form and
      integrates only the remaining states; "ode" integrates every state (the
      reference path);
    - `events`: "auto" (default: "jumps" with the closed-form PK, else "split"),
      "jumps" (one solve per animal, events as jumps in its right-hand side) or "split"
      (one solve per event segment, the reference); see the module docstring. With
      "split", `max_steps` bounds each segment, with "jumps" the whole animal;
      "superposition" (only for a model that is linear PK alone, solved in closed form:
      every output is the sum of the responses to the events before it, with no solve
      and no loop; cheap to differentiate to any order, as population estimation does);
    - `adjoint`: how diffrax is differentiated: "checkpoint" (default: reverse mode,
      `jax.grad`) or "forward" (forward mode, `jax.jvp`/`jax.jacfwd`: cheaper for a few
      parameters and needed for nested derivatives, as population estimation takes them;
      use it with `events="split"`, since the one-solve path's gradient is reverse-only);
    - `max_step_h`: the longest step (h) the controller may take (default: none). At an
      exact steady state (e.g. a disease state at rest before its onset) the error
      estimate is 0 and the steps grow without bound, past the solver's stability region:
      the solution itself stays put, but its derivatives (a perturbation away from the
      steady state) are amplified at every step, by 1e9 and more over a few hundred
      hours. Forward-mode derivatives (population estimation) then need a bound below
      the explicit solver's stability limit, about 3 / (fastest rate constant) for Tsit5.
    """

    solver: str = "tsit5"
    rtol: float = 1e-8
    atol: float = 1e-10
    max_steps: int = 100_000
    dtype: str = "float64"
    pk: str = "auto"
    events: str = "auto"
    adjoint: str = "checkpoint"
    max_step_h: float | None = None

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
        if self.events not in ("auto", "jumps", "split", "superposition"):
            raise SpecError("solver.events", f"must be 'auto', 'jumps', 'split' or 'superposition', got {self.events!r}")
        if self.events == "superposition" and self.pk != "auto":
            raise SpecError("solver.events", "'superposition' needs the closed-form PK (pk='auto')")
        if self.adjoint not in ("checkpoint", "forward"):
            raise SpecError("solver.adjoint", f"must be 'checkpoint' or 'forward', got {self.adjoint!r}")
        if self.max_step_h is not None and not (self.max_step_h > 0 and math.isfinite(self.max_step_h)):
            raise SpecError("solver.max_step_h", f"must be a finite number of hours > 0, got {self.max_step_h!r}")

    def controller(self):
        """The adaptive step-size controller of these options (a `diffrax.PIDController`)."""
        import diffrax as dfx  # here: imported when a solve is traced (`vtrial.engine.solvers`)

        return dfx.PIDController(rtol=self.rtol, atol=self.atol, dtmax=self.max_step_h)

    @property
    def diffrax_adjoint(self):
        import diffrax as dfx

        return dfx.ForwardMode() if self.adjoint == "forward" else dfx.RecursiveCheckpointAdjoint()

    @property
    def jnp_dtype(self):
        return jnp.float64 if self.dtype == "float64" else jnp.float32


class AnimalSolution(NamedTuple):
    """States at the save times (`(n_times, n_states)`), status code, steps taken."""

    states: jnp.ndarray
    status: jnp.ndarray
    n_steps: jnp.ndarray


def _result_code(result) -> jnp.ndarray:
    import diffrax as dfx

    return jnp.where(
        result == dfx.RESULTS.successful, 0, jnp.where(result == dfx.RESULTS.max_steps_reached, 1, 2)
    )


def _diffeqsolve(f, a, b, y, args, ts, dt0, options):
    import diffrax as dfx

    return dfx.diffeqsolve(
        dfx.ODETerm(f),
        SOLVERS[options.solver](),
        a,
        b,
        dt0,
        y,
        args=args,
        saveat=dfx.SaveAt(ts=ts, t1=True),
        stepsize_controller=options.controller(),
        max_steps=options.max_steps,
        adjoint=options.diffrax_adjoint,
        throw=False,
    )


def _ode_advance(model: Model, p, options: SolverOptions):
    """Integrate every state over [a, b]; returns (y(b), y(ts), status code, steps)."""

    def f(t, y, rate):
        return model.vector_field(t, y, p, rate)

    def advance(a, b, y, rate, ts, dt0, add, drate):
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
    # After an event that changes the PK, the first step is bounded (see `_KICK_STEPS`).
    dt_after_kick = _KICK_STEPS[0] / jnp.max(jnp.abs(modes.lam))

    def assemble(pk, pd):
        return jnp.concatenate([pk, pd], axis=-1)[..., unsort] if pd_names else pk[..., unsort]

    def advance(a, b, y, rate, ts, dt0, add, drate):
        kicked = jnp.any(add[pk_idx] != 0) | jnp.any(drate[pk_idx] != 0)
        dt0 = jnp.where(kicked, jnp.minimum(dt0, dt_after_kick), dt0)
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


def is_linear_pk_only(model: Model) -> bool:
    """Whether every state of the model belongs to its declared linear PK."""
    return model.linear_pk is not None and set(model.linear_pk.states) == set(model.state_names)


def uses_jumps(model: Model, options: SolverOptions) -> bool:
    """Whether `solve_animal` integrates each animal in one solve with events as jumps."""
    if options.events == "auto":
        return uses_closed_form(model, options)
    return options.events == "jumps"


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
    - `p`: every parameter and covariate of this animal, scalars (the model's derived
      quantities, `Model.derive`, are added here);
    - `doses`: this animal's `DoseRecords` (shape `(n_records,)` each; a plain 5-tuple in
      that order is accepted too);
    - `save_times`: shape `(n_times,)`, non-decreasing, >= `t0` (h);
    - `t0`: start of the solve (h); states start at their initial values there.

    **Returns:** an `AnimalSolution`; a solver failure marks the animal (status > 0)
    and the caller masks its values. `jax.grad` works through either event handling
    (reverse mode; see the module docstring).
    """
    dtype = options.jnp_dtype
    # The model's own individual parameters (NONMEM's $PK) join p once, here: everything
    # below (vector field, linear PK, routes' lag/F, events, initial states) reads them.
    p = model.derive({k: jnp.asarray(v, dtype) for k, v in p.items()})
    save_times = jnp.asarray(save_times, dtype)
    t0 = jnp.asarray(t0, dtype)
    if covariate_changes(DoseRecords(*doses)) is not None:
        # Covariates that change within the animal switch the parameters at their
        # times: the split path takes every change as a segment end (the closed-form PK
        # per segment where the model declares it), whatever `events` asks for.
        return _solve_split(model, p, DoseRecords(*doses), save_times, t0, options)
    if options.events == "superposition":
        if not (uses_closed_form(model, options) and is_linear_pk_only(model)):
            raise SpecError("solver.events", f"'superposition' needs a model that is linear PK alone; {model.name} is not")
        return _solve_superposition(model, p, DoseRecords(*doses), save_times, t0, options)
    # Dose records with NONMEM items may reset (EVID 3/4, SS = 1) states integrated by
    # diffrax, which only the split path takes.
    if uses_jumps(model, options) and not (has_items(DoseRecords(*doses)) and not is_linear_pk_only(model)):
        return _jumps_with_split_gradients(model, options)(p, DoseRecords(*doses), save_times, t0)
    return _solve_split(model, p, DoseRecords(*doses), save_times, t0, options)


def observe_animal(model: Model, p, doses, states: jnp.ndarray, save_times: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Observables `(n_times,)` of one animal's states at its save times, each with the
    parameters an observation at that time sees (covariates that change within the
    animal: the value of the interval ending there, NONMEM's next observation carried
    back)."""
    doses = DoseRecords(*doses)
    if covariate_changes(doses) is None:
        return jax.vmap(lambda y: model.observe(y, p))(states)
    q = parameters_at(model, p, doses, save_times, after=False)
    per_time = {k: jnp.broadcast_to(v, save_times.shape) for k, v in q.items()}
    return jax.vmap(model.observe)(states, per_time)


def _jumps_with_split_gradients(model: Model, options: SolverOptions):
    """The one-solve path forward, the split path's VJP backward (exact event-time derivatives)."""

    @jax.custom_vjp
    def solve(p, doses, save_times, t0):
        return _solve_jumps(model, p, doses, save_times, t0, options)

    def forward(p, doses, save_times, t0):
        return solve(p, doses, save_times, t0), (p, doses, save_times, t0)

    def backward(primals, cotangent):
        _, pullback = jax.vjp(lambda *a: _solve_split(model, *a, options), *primals)
        return pullback(cotangent)

    solve.defvjp(forward, backward)
    return solve


def _solve_jumps(model: Model, p, doses, save_times, t0, options: SolverOptions) -> AnimalSolution:
    """One diffrax solve per animal, events as jumps of its right-hand side; see the module docstring."""
    import diffrax as dfx  # here: imported when a solve is traced (`vtrial.engine.solvers`)

    dtype = options.jnp_dtype
    t_end = save_times[-1]
    n_states = model.n_states
    events = build_event_table(model, p, doses, options)
    event_t = jnp.clip(events.time_h.astype(dtype), t0, t_end)
    zero = jnp.zeros((1, n_states), dtype)
    # Row k: the sum of the boluses and the input rate after the first k events.
    jumped = jnp.concatenate([zero, jnp.cumsum(events.bolus.astype(dtype), axis=0)])
    rate = rates_after_events(events, dtype)
    y0 = model.initial_state(p).astype(dtype)
    # A reset (EVID 3/4, SS = 1) sets the states, a jump that depends on them: the
    # closed-form PK takes it exactly, states integrated here cannot (the animal is
    # marked failed; the split path, `events="split"`, takes resets of any state).
    resets = jnp.zeros(event_t.shape, bool) if events.reset is None else events.reset

    def after(t):  # events at or before t (right-continuous: the value just after t)
        return jnp.searchsorted(event_t, t, side="right", method="compare_all")

    def before(t):  # events strictly before t (an output at an event time is pre-event)
        return jnp.searchsorted(event_t, t, side="left", method="compare_all")

    step_ts = None
    if uses_closed_form(model, options):
        spec = model.linear_pk
        pk_idx = np.array([model.state_index(n) for n in spec.states], dtype=int)
        solved = np.array([i for i in range(n_states) if i not in set(pk_idx.tolist())], dtype=int)
        unsort = np.argsort(np.concatenate([pk_idx, solved]))
        modes = linear_pk.modes(spec.constants(p))
        # PK amounts right after each event, propagated in closed form from event to
        # event, then in mode coordinates: the PK at any t is one `propagate_modes`.
        pk_rate = rate[:, pk_idx]

        def to_next_event(pk, xs):
            t_from, t_to, r, bolus, reset = xs
            pk = jnp.where(reset, y0[pk_idx], linear_pk.propagate(modes, pk, r, t_to - t_from)) + bolus
            return pk, pk

        starts = jnp.concatenate([t0[None], event_t])
        _, pk_after = jax.lax.scan(
            to_next_event, y0[pk_idx], (starts[:-1], event_t, pk_rate[:-1], events.bolus[:, pk_idx].astype(dtype), resets)
        )
        pk_start = jnp.concatenate([y0[pk_idx][None], pk_after])
        alpha, beta = pk_start @ modes.s_inv.T, pk_rate @ modes.s_inv.T

        def full_state(t, k, y_solved):
            pk = linear_pk.propagate_modes(modes, alpha[k], beta[k], t - starts[k])
            y = jnp.concatenate([pk, y_solved + jumped[k, solved]], axis=-1)
            return y[..., unsort]

        # After every event that changes the PK's amounts or input, steps end exactly at
        # growing multiples of the fastest mode's time constant (see `_KICK_STEPS`).
        kicks = jnp.any(events.bolus[:, pk_idx] != 0, axis=1) | jnp.any(events.rate_delta[:, pk_idx] != 0, axis=1) | resets
        tau = jnp.asarray(_KICK_STEPS, dtype) / jnp.max(jnp.abs(modes.lam))
        kick_t = jnp.where(kicks[:, None], event_t[:, None] + tau[None, :], t0)
        step_ts = jnp.sort(jnp.clip(kick_t.reshape(-1), t0, t_end))
    else:
        solved = np.arange(n_states)

        def full_state(t, k, y_solved):
            return y_solved + jumped[k]

    if solved.size == 0:  # nothing left to integrate: the PK is the whole model
        out = jax.vmap(full_state)(save_times, before(save_times), jnp.zeros((save_times.shape[0], 0), dtype))
        out = jnp.where((save_times <= t0)[:, None], y0[None, :], out)
        out = seen_at_their_time(events, save_times, out, y0)
        return AnimalSolution(out, jnp.where(jnp.all(jnp.isfinite(out)), 0, 3), jnp.asarray(0))

    def f(t, y_solved, args):
        k = after(t)
        return model.vector_field(t, full_state(t, k, y_solved), p, rate[k])[solved]

    controller = options.controller()
    if event_t.shape[0] > 0:
        from vtrial.engine.step_control import ToleranceOnState

        controller = ToleranceOnState(controller, event_t, jumped[:, solved])
        controller = dfx.ClipStepSizeController(controller, step_ts=step_ts, jump_ts=event_t)
    # At an event time the solver stops just before the jump (the float below it) and
    # restarts just after; an output there is the pre-event value, saved where that
    # step ends rather than extrapolated back from the step after the jump.
    on_event = jnp.any(save_times[:, None] == event_t[None, :], axis=1)
    save_at = jnp.where(on_event, jnp.nextafter(save_times, jnp.asarray(-jnp.inf, dtype)), save_times)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(f),
        SOLVERS[options.solver](),
        t0,
        t_end,
        jnp.maximum(t_end - t0, 1.0) * 1e-3,
        y0[solved],
        saveat=dfx.SaveAt(ts=jnp.maximum(save_at, t0)),
        stepsize_controller=controller,
        max_steps=options.max_steps,
        adjoint=options.diffrax_adjoint,
        throw=False,
    )
    out = jax.vmap(full_state)(save_times, before(save_times), sol.ys)
    out = jnp.where((save_times <= t0)[:, None], y0[None, :], out)
    out = seen_at_their_time(events, save_times, out, y0)
    status = _result_code(sol.result)
    status = jnp.where((status == 0) & jnp.any(resets & (event_t < t_end)), 2, status)
    status = jnp.where((status == 0) & ~jnp.all(jnp.isfinite(out)), 3, status)
    return AnimalSolution(out, status, sol.stats["num_steps"])


def _solve_split(model: Model, p, doses, save_times, t0, options: SolverOptions) -> AnimalSolution:
    """One diffrax solve per event segment (the reference); see the module docstring.

    A failed segment marks the animal (status > 0); later segments still run so shapes
    stay fixed, and the caller masks the values.
    """
    dtype = options.jnp_dtype
    t_end = save_times[-1]
    events = build_event_table(model, p, doses, options)
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
    event_reset = jnp.zeros(events.time_h.shape, bool) if events.reset is None else events.reset
    bound_reset = jnp.concatenate([jnp.zeros(grid.size, bool), event_reset])
    order = jnp.argsort(bound_t, stable=True)
    ends = bound_t[order]
    starts = jnp.concatenate([t0[None], ends[:-1]])
    bolus = jnp.concatenate([jnp.zeros((1, n_states), dtype), bound_bolus[order][:-1]])
    rate_delta = jnp.concatenate([jnp.zeros((1, n_states), dtype), bound_rate[order][:-1]])
    reset = jnp.concatenate([jnp.zeros(1, bool), bound_reset[order][:-1]])
    # The saves of segment (a, b] are the (at most k) save times after a, up to b.
    first_save = jnp.searchsorted(save_times, starts, side="right")
    slots = jnp.minimum(first_save[:, None] + jnp.arange(k)[None, :], n_save - 1)
    in_segment = (first_save[:, None] + jnp.arange(k)[None, :] < n_save) & (save_times[slots] <= ends[:, None])
    seg_ts = jnp.where(in_segment, save_times[slots], ends[:, None])

    make_advance = _closed_form_advance if uses_closed_form(model, options) else _ode_advance
    varying = covariate_changes(doses) is not None
    advance = None if varying else make_advance(model, p, options)
    y0 = model.initial_state(p).astype(dtype)

    def segment(carry, xs):
        y, rate, dt_guess, status, steps = carry
        a, b, add, drate, reset, ts = xs
        step = advance
        if varying:  # the parameters in effect from a on (the segment ends at the next change)
            step = make_advance(model, parameters_at(model, p, doses, a), options)
        # A reset (EVID 3/4, SS = 1) restarts from the initial state with no input.
        y = jnp.where(reset, y0, y) + add
        rate = jnp.where(reset, 0.0, rate) + drate
        kick = jnp.where(reset, 1.0, add)  # a reset kicks the PK like a dose (`_KICK_STEPS`)
        y_end, ys, code, n = step(a, b, y, rate, ts, jnp.maximum(dt_guess, 1e-9 * (b - a)), kick, drate)
        # The next segment starts from (twice) this one's mean step instead of a fresh
        # step-size search at every boundary.
        dt_guess = jnp.where(n > 0, 2.0 * (b - a) / jnp.maximum(n, 1), dt_guess)
        status = jnp.where(status == 0, code, status)
        return (y_end, rate, dt_guess, status, steps + n), ys

    dt_first = jnp.maximum(t_end - t0, 1.0) * 1e-3
    init = (y0, jnp.zeros(n_states, dtype), dt_first, jnp.asarray(0), jnp.asarray(0))
    (_, _, _, status, steps), seg_ys = jax.lax.scan(segment, init, (starts, ends, bolus, rate_delta, reset, seg_ts))
    # Save time i lies in the first segment ending at or after it, in slot i - first_save.
    seg_of = jnp.searchsorted(ends, save_times, side="left")
    slot_of = jnp.arange(n_save) - first_save[seg_of]
    out = jnp.where((save_times <= t0)[:, None], y0[None, :], seg_ys[seg_of, jnp.clip(slot_of, 0, k - 1)])
    out = seen_at_their_time(events, save_times, out, y0)
    status = jnp.where((status == 0) & ~jnp.all(jnp.isfinite(out)), 3, status)
    return AnimalSolution(out, status, steps)


def _solve_superposition(model: Model, p, doses, save_times, t0, options: SolverOptions) -> AnimalSolution:
    r"""Linear PK alone, by superposition: $A(t) = S[e^{\Lambda (t - t_0)} S^{-1} A_0 +
    \sum_{k: t_k < t} (e^{\Lambda (t - t_k)} S^{-1} b_k + \varphi(\Lambda, t - t_k) S^{-1} \Delta r_k)]$
    over the events $k$ (boluses $b_k$, input rate changes $\Delta r_k$). Events before
    `t0` act at `t0`, and an output at an event time is the value just before it, as in
    the solves."""
    dtype = options.jnp_dtype
    spec = model.linear_pk
    pk_idx = np.array([model.state_index(n) for n in spec.states], dtype=int)
    unsort = np.argsort(pk_idx)
    events = build_event_table(model, p, doses, options)
    modes = linear_pk.modes(spec.constants(p))
    y0 = model.initial_state(p).astype(dtype)
    event_t = jnp.maximum(events.time_h.astype(dtype), t0)
    alpha = events.bolus[:, pk_idx].astype(dtype) @ modes.s_inv.T  # (n_events, n_modes)
    beta = events.rate_delta[:, pk_idx].astype(dtype) @ modes.s_inv.T
    tau = save_times[:, None] - event_t[None, :]  # (n_times, n_events)
    after = (tau > 0)[:, :, None]
    start = t0
    if events.reset is not None:
        # A reset wipes what came before it: only the events from the last reset
        # before t count, and the initial state restarts at that reset.
        index = jnp.arange(event_t.shape[0])
        last = jnp.max(jnp.where(events.reset[None, :] & after[:, :, 0], index[None, :], -1), axis=1)
        after = after & (index[None, :] >= last[:, None])[:, :, None]
        start = jnp.where(last >= 0, event_t[jnp.maximum(last, 0)], t0)
    tau = jnp.where(after, tau[:, :, None], 0.0)  # (n_times, n_events, 1)
    lam = modes.lam[None, None, :]
    terms = jnp.exp(lam * tau) * alpha[None, :, :] + linear_pk.phi(lam, tau) * beta[None, :, :]
    coords = jnp.sum(jnp.where(after, terms, 0.0), axis=1)
    tau0 = jnp.maximum(save_times - start, 0.0)[:, None]
    coords = coords + jnp.exp(modes.lam[None, :] * tau0) * (modes.s_inv @ y0[pk_idx])[None, :]
    out = (coords @ modes.s.T)[:, unsort]
    out = jnp.where((save_times <= t0)[:, None], y0[None, :], out)
    out = seen_at_their_time(events, save_times, out, y0)
    return AnimalSolution(out, jnp.where(jnp.all(jnp.isfinite(out)), 0, 3), jnp.asarray(0))
