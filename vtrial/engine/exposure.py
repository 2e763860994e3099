r"""Exposure endpoints (AUC, mean, Cmax, Cmin, Tmax, model peaks) taken from the solver,
not from the output grid.

A trapezoid over a 0.25-h grid misses the curvature of a concentration (MSU-1's plasma
AUC came out 8% low) and a grid maximum misses a peak between two output times (4% low,
and the IL-1beta peak read at a grid time). Here, inside the compiled solve of each animal:

- **AUC** (and the time-weighted mean) is an integrated state, as NONMEM users add one:
  the model is solved with one more state per observable, $dS/dt = C(y(t))$, under the
  solver's own error control, and the AUC over a window is $S(b) - S(a)$ (`augmented`).
- **Peaks** (`max`, `min`, `tmax`): the solve also saves the states at every event time
  (dose, infusion end, onset, covariate change), so every smooth piece of the curve lies
  between two known points; at each of them the value and the slope $dC/dt =
  \nabla_y C \cdot f(t, y)$ (the vector field, by forward-mode differentiation) are known
  on both sides of the event. Candidates are the values at those points (a maximum right
  at a dose or an infusion end) and, in the best `N_CANDIDATES` intervals whose slope
  turns from rising to falling, the interior maximum: its time is estimated by the cubic
  Hermite interpolant of values and slopes, then refined `N_REFINE` times by short
  solves of the vector field from the interval's start (no event lies inside, so the
  input is constant), each giving the exact value and slope at the estimate and halving
  the bracket on the side the slope says. Maxima are exact to the solver's tolerance,
  whatever the grid; a second peak closer to the first than the output spacing, with no
  trough sampled between them, is found only when it is the larger.

One batched, compiled computation with the solve (`vtrial.engine.runner`); models without
such endpoints are solved as before. Reset events (NONMEM EVID 3/4) restart the integrated
AUC like every other state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp

from vtrial.engine.events import (
    DoseRecords, build_event_table, covariate_changes, parameters_at, rates_after_events,
)
from vtrial.engine.solve import SOLVERS, AnimalSolution, SolverOptions, solve_animal
from vtrial.models.base import Endpoint, Model, State

#: Statistics taken from the solver; the others (`value`) are read at their output time.
EXACT_STATISTICS = ("auc", "mean", "max", "min", "tmax")
#: Intervals with a rising-then-falling slope refined per peak endpoint and animal.
N_CANDIDATES = 3
#: Hermite-Newton refinements of each candidate (each one short solve).
N_REFINE = 4


@dataclass(frozen=True)
class ExactEndpoint:
    """One endpoint computed in the solve: `statistic` of `observable` over
    `[start_h, end_h]` (None: the first or last output time)."""

    name: str
    observable: str
    statistic: str
    start_h: float | None
    end_h: float | None


@dataclass(frozen=True)
class ExposureSpec:
    """The exact endpoints of a solve (hashable: the compiled solve is cached on it)."""

    endpoints: tuple[ExactEndpoint, ...]

    @property
    def integrated(self) -> tuple[str, ...]:
        """Observables whose integral is a state of the solve."""
        return tuple(dict.fromkeys(e.observable for e in self.endpoints if e.statistic in ("auc", "mean")))

    @property
    def peaks(self) -> tuple[ExactEndpoint, ...]:
        return tuple(e for e in self.endpoints if e.statistic in ("max", "min", "tmax"))


def exposure_spec(endpoints: Sequence[Endpoint]) -> ExposureSpec | None:
    """The spec of the `endpoints` whose statistic is taken from the solver; None when
    there are none. A window end not given is the first or last output time of the solve
    (so one compiled solve serves every grid of the same length)."""
    out = tuple(ExactEndpoint(e.name, e.observable, e.statistic, e.start_h, e.end_h)
                for e in endpoints if e.statistic in EXACT_STATISTICS)
    return ExposureSpec(out) if out else None


def result_name(endpoint_name: str) -> str:
    """The key of an exact endpoint in the runner's per-animal extras."""
    return f"endpoint:{endpoint_name}"


@lru_cache(maxsize=64)
def augmented(model: Model, observables: tuple[str, ...]) -> Model:
    """`model` with one more state per observable: its integral from the start (`auc[name]`,
    initial 0, $dS/dt$ = the observable). Observables and dosing are the model's own."""
    n = model.n_states
    fns = tuple(model.observable(name).fn for name in observables)

    def vector_field(t, y, p, rate):
        x = y[:n]
        integrands = jnp.stack([jnp.asarray(fn(x, p), y.dtype) for fn in fns])
        return jnp.concatenate([model.vector_field(t, x, p, rate[:n]), integrands])

    def of_model_states(fn):
        return lambda y, p: fn(y[:n], p)

    return dataclasses.replace(
        model,
        states=model.states + tuple(State(f"auc[{name}]", "", 0.0) for name in observables),
        vector_field=vector_field,
        observables=tuple(dataclasses.replace(o, fn=of_model_states(o.fn)) for o in model.observables),
        endpoints=(),
    )


def _hermite_peak(c0, c1, m0, m1):
    """The maximum of the cubic Hermite interpolant on u in [0, 1] with values c0, c1 and
    slopes m0 > 0, m1 < 0 (per unit u): (u, value). Its derivative A u^2 + B u + C has one
    root in (0, 1) there, from the numerically stable quadratic formula."""
    a = 6.0 * (c0 - c1) + 3.0 * (m0 + m1)
    b = 6.0 * (c1 - c0) - 4.0 * m0 - 2.0 * m1
    c = m0
    disc = b * b - 4.0 * a * c
    # A square root with a finite derivative at 0 (a flat interval): no NaN gradients.
    root = jnp.where(disc > 0, jnp.sqrt(jnp.where(disc > 0, disc, 1.0)), 0.0)
    q = -0.5 * (b + jnp.where(b >= 0, 1.0, -1.0) * root)
    safe = lambda x: jnp.where(x == 0, 1.0, x)  # noqa: E731
    r1 = jnp.where(a == 0, -c / safe(b), q / safe(a))
    r2 = jnp.where(q == 0, r1, c / safe(q))
    u = jnp.where((r1 >= 0) & (r1 <= 1), r1, r2)
    u = jnp.clip(jnp.where(jnp.isfinite(u), u, 0.5), 0.0, 1.0)
    value = (2 * u**3 - 3 * u**2 + 1) * c0 + (u**3 - 2 * u**2 + u) * m0 + (-2 * u**3 + 3 * u**2) * c1 + (u**3 - u**2) * m1
    return u, value


def exposure_model(model: Model, spec: ExposureSpec) -> Model:
    """The model the solve integrates: `model`, with its integrated AUC states if any."""
    return augmented(model, spec.integrated) if spec.integrated else model


def exposure_solver(model: Model, spec: ExposureSpec):
    """`solve(p, doses, save_times, t0, options)`: `solve_animal` of one animal plus its
    exact endpoints, `(AnimalSolution at save_times with the model's own states,
    {endpoint name: value})`. Made outside any trace (the augmented model is built
    and checked here)."""
    solved_model = exposure_model(model, spec)

    def solve(p, doses, save_times, t0, options: SolverOptions):
        return _solve_with_exposure(model, solved_model, p, doses, save_times, t0, options, spec)

    return solve


def _solve_with_exposure(model: Model, solved_model: Model, p, doses, save_times, t0, options: SolverOptions, spec: ExposureSpec):
    doses = DoseRecords(*doses)
    dtype = options.jnp_dtype
    save_times = jnp.asarray(save_times, dtype)
    t0 = jnp.asarray(t0, dtype)
    n, n_save = model.n_states, save_times.shape[0]
    integrated, peaks = spec.integrated, spec.peaks
    if options.events == "superposition":  # the integrals are not linear PK: solved by diffrax
        options = dataclasses.replace(options, events="auto")
    q = model.derive({k: jnp.asarray(v, dtype) for k, v in p.items()})
    events = build_event_table(model, q, doses)
    t_end = save_times[-1]
    event_t = jnp.clip(events.time_h.astype(dtype), t0, t_end)
    changes = covariate_changes(doses)
    if peaks:  # every event time is saved too: the curve is smooth between saved times
        extra = [event_t] + ([] if changes is None else [jnp.clip(changes.time_h.astype(dtype), t0, t_end)])
        merged = jnp.concatenate([save_times, *extra])
        order = jnp.argsort(merged, stable=True)
        ts = merged[order]
        grid_rows = jnp.argsort(order, stable=True)[:n_save]
    else:
        ts, grid_rows = save_times, jnp.arange(n_save)
    sol = solve_animal(solved_model, p, doses, ts, t0=t0, options=options)
    out = {}
    grid_states = sol.states[grid_rows]
    for e in spec.endpoints:
        if e.statistic not in ("auc", "mean"):
            continue
        col = n + integrated.index(e.observable)
        lo = 0 if e.start_h is None else jnp.searchsorted(save_times, e.start_h, side="left")
        hi = n_save - 1 if e.end_h is None else jnp.searchsorted(save_times, e.end_h, side="right") - 1
        auc = grid_states[hi, col] - grid_states[lo, col]
        out[e.name] = auc if e.statistic == "auc" else auc / (save_times[hi] - save_times[lo])
    if peaks:
        out |= _peaks(model, q, doses, events, event_t, ts, sol.states[:, :n], save_times, options, peaks)
    return AnimalSolution(grid_states[:, :n], sol.status, sol.n_steps), out


def _peaks(model: Model, q, doses, events, event_t, ts, y_out, save_times, options: SolverOptions, peaks) -> dict:
    """Every peak endpoint at once: endpoints of the same observable, sense and window
    share one search, and all searches share one vmapped refinement."""
    dtype = y_out.dtype
    at = (event_t[None, :] == ts[:, None]).astype(dtype)  # (n_points, n_events)
    bolus = events.bolus.astype(dtype)
    if events.reset is None:  # outputs at an event time are the values just before it
        y_pre, y_post = y_out, y_out + at @ bolus
    else:  # NONMEM items: outputs see the events at their time (a reset's left side is lost)
        reset_at = (at * events.reset[None, :]).sum(axis=1) > 0
        y_pre, y_post = jnp.where(reset_at[:, None], y_out, y_out - at @ bolus), y_out
    rates = rates_after_events(events, dtype)
    r_pre = rates[jnp.searchsorted(event_t, ts, side="left", method="compare_all")]
    r_post = rates[jnp.searchsorted(event_t, ts, side="right", method="compare_all")]
    n_points = ts.shape[0]

    def per_point(values: dict) -> dict:
        return {k: jnp.broadcast_to(jnp.asarray(v, dtype), (n_points,)) for k, v in values.items()}

    if covariate_changes(doses) is None:
        q_pre = q_post = per_point(q)
    else:
        q_pre = per_point(parameters_at(model, q, doses, ts, after=False))
        q_post = per_point(parameters_at(model, q, doses, ts, after=True))

    groups = tuple(dict.fromkeys((e.observable, e.statistic == "min", e.start_h, e.end_h) for e in peaks))
    fns = tuple(model.observable(g[0]).fn for g in groups)
    signs = jnp.asarray([-1.0 if g[1] else 1.0 for g in groups], dtype)
    lo = jnp.stack([save_times[0] if g[2] is None else jnp.asarray(g[2], dtype) for g in groups])
    hi = jnp.stack([save_times[-1] if g[3] is None else jnp.asarray(g[3], dtype) for g in groups])

    def value_and_slope(t, y, qq, r):
        """Each group's signed observable and its time derivative along the vector field."""
        def signed(x):
            return signs * jnp.stack([jnp.asarray(fn(x, qq), dtype) for fn in fns])
        return jax.jvp(signed, (y,), (model.vector_field(t, y, qq, r),))

    c_pre, d_pre = jax.vmap(value_and_slope)(ts, y_pre, q_pre, r_pre)  # (n_points, n_groups)
    c_post, d_post = jax.vmap(value_and_slope)(ts, y_post, q_post, r_post)
    neg = jnp.asarray(-jnp.inf, dtype)
    # Values at the saved points: just before (a grid value) and just after their events
    # (a maximum right at a dose or at the end of an infusion).
    inside = (ts[:, None] >= lo[None, :]) & (ts[:, None] <= hi[None, :])
    values = jnp.concatenate([jnp.where(inside, c_pre, neg), jnp.where(inside & (ts[:, None] < hi[None, :]), c_post, neg)]).T
    times = jnp.broadcast_to(jnp.concatenate([ts, ts]), values.shape)
    k = min(N_CANDIDATES, n_points - 1)
    if k > 0:
        refined, refined_t = _refine(model, value_and_slope, ts, y_post, q_post, r_post, (c_pre, d_pre), (c_post, d_post),
                                     lo, hi, k, options)
        values = jnp.concatenate([values, refined], axis=1)
        times = jnp.concatenate([times, refined_t], axis=1)
    # A failed refinement (NaN) makes the peak NaN rather than silently lower.
    best = jnp.argmax(jnp.where(jnp.isnan(values), jnp.inf, values), axis=1)
    peak = jnp.take_along_axis(values, best[:, None], axis=1)[:, 0]
    first = jnp.min(jnp.where(values == peak[:, None], times, jnp.inf), axis=1)  # the first time of the maximum
    first = jnp.where(jnp.isnan(peak), jnp.nan, first)
    out = {}
    for e in peaks:
        g = groups.index((e.observable, e.statistic == "min", e.start_h, e.end_h))
        out[e.name] = first[g] if e.statistic == "tmax" else signs[g] * peak[g]
    return out


def _refine(model, value_and_slope, ts, y_post, q_post, r_post, pre, post, lo, hi, k, options: SolverOptions):
    """The interior maxima of the `k` best rising-then-falling intervals of each group:
    `(n_groups, k * N_REFINE)` values (-inf where there is none) and their times."""
    import diffrax as dfx  # here: imported when a solve is traced (`vtrial.engine.solvers`)

    dtype = ts.dtype
    (c_pre, d_pre), (c_post, d_post) = pre, post
    neg = jnp.asarray(-jnp.inf, dtype)
    a, b = ts[:-1], ts[1:]
    rising_falling = (a[:, None] >= lo[None, :]) & (b[:, None] <= hi[None, :]) & (b > a)[:, None] & (d_post[:-1] > 0) & (d_pre[1:] < 0)
    width = (b - a)[:, None]
    _, guess = _hermite_peak(c_post[:-1], c_pre[1:], d_post[:-1] * width, d_pre[1:] * width)
    _, chosen = jax.lax.top_k(jnp.where(rising_falling, guess, neg).T, k)  # (n_groups, k)
    n_groups = chosen.shape[0]
    group = jnp.repeat(jnp.arange(n_groups), k)
    interval = chosen.reshape(-1)
    solver = SOLVERS[options.solver]()
    controller = options.controller()

    valid = rising_falling[interval, group]

    def refine(j, g, ok):
        # A lane with no candidate is computed and discarded; its inputs carry no
        # derivative, so a degenerate bracket cannot send NaN into the gradients.
        def cut(x):
            return jnp.where(ok, x, jax.lax.stop_gradient(x))

        qj = {name: cut(v[j]) for name, v in q_post.items()}
        rj = cut(r_post[j])
        term = dfx.ODETerm(lambda t, y, args: model.vector_field(t, y, qj, rj))

        def step(bracket, _):
            ta, ya, ca, da, tb, cb, db = bracket
            u, _ = _hermite_peak(ca, cb, da * (tb - ta), db * (tb - ta))
            t = ta + u * (tb - ta)
            # From the bracket's left end: no event lies inside the interval (constant input).
            sol = dfx.diffeqsolve(
                term, solver, ta, jnp.maximum(t, ta), None, ya, saveat=dfx.SaveAt(t1=True),
                stepsize_controller=controller, max_steps=options.max_steps, adjoint=options.diffrax_adjoint, throw=False,
            )
            y = sol.ys[-1]
            cs, ds = value_and_slope(t, y, qj, rj)
            c = jnp.where(sol.result == dfx.RESULTS.successful, cs[g], jnp.nan)
            d = ds[g]
            right = d > 0  # still rising: the maximum is later
            bracket = (jnp.where(right, t, ta), jnp.where(right, y, ya), jnp.where(right, c, ca), jnp.where(right, d, da),
                       jnp.where(right, tb, t), jnp.where(right, cb, c), jnp.where(right, db, d))
            return bracket, (c, t)

        init = tuple(cut(x) for x in (a[j], y_post[j], c_post[j, g], d_post[j, g], b[j], c_pre[j + 1, g], d_pre[j + 1, g]))
        _, (values, times) = jax.lax.scan(step, init, None, length=N_REFINE)
        return values, times

    values, times = jax.vmap(refine)(interval, group, valid)  # (n_groups * k, N_REFINE)
    values = jnp.where(valid[:, None], values, neg)
    return values.reshape(n_groups, -1), times.reshape(n_groups, -1)
