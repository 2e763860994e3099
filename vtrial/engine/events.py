"""Lowering dose records and parameter events to one sorted event table per animal.

This is the only representation of dosing inside the solve: every bolus, infusion start
and stop, lagged dose and parameter-timed event (a disease onset) becomes a row with a
time, an instantaneous addition to the state and a change of the zero-order input rate.
Runs inside JAX for one animal, because event times may depend on per-animal
parameters (lag times, onset times).

Records read from a NONMEM dataset carry PREDPP's items too (`NonmemItems`): a given
rate (the duration then follows from the bioavailable amount), a rate or duration
computed by the model (RATE = -1/-2), steady state (SS = 1/2 with II), resets (EVID 3/4)
and the record's own covariate values, with which its lag, bioavailability, rate and
duration are evaluated (`record_parameters`). They lower to the same rows; see
`build_event_table` for how each becomes events and `steady_state_amounts` for the
steady state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vtrial.engine import linear_pk, steady_state
from vtrial.models.base import Model


#: Infusions of a steady-state series still running at the steady-state record's time
#: (duration + lag longer than the interval II) end after it; each end is an event, and
#: every dose record with `NonmemItems` has this many rows for them. More overlapping
#: infusions (duration + lag > 7 II) mark the animal failed (non-finite output).
MAX_SS_OVERLAP = 6


class CovariateChanges(NamedTuple):
    """Covariates that change within a subject, as events (one animal: `(n_changes,)`):
    from `time_h` on (right after it) the covariates are `values` (`(n_changes,
    n_covariates)`, the model's `covariate_names` order; NaN: the animal's value), until
    the next change. Sorted by time; padded by repeating the last change. NONMEM's
    next-observation-carried-back (a record's value holds for the interval that ends at
    the record) becomes a change at the previous record's time (`vtrial.io.nonmem`).

    `parameters`: None, or `(n_changes, n_parameters)` values of the model's parameters
    (`parameter_names` order; NaN: the animal's value) in effect from the change on, as
    an occasion's random effects change them (`vtrial.estimation.occasions`)."""

    time_h: Any
    values: Any
    parameters: Any = None


class NonmemItems(NamedTuple):
    """PREDPP's dosing items of each record (arrays of shape `(..., n_records)`):

    - `rate`: the infusion rate given by the record (NONMEM RATE > 0; mg/h, or mg/kg/h
      with `per_kg`); the duration is then `F * amount / rate` (the rate is kept, the
      duration scaled), 0 otherwise;
    - `modelled`: 0; 1: the rate comes from the model (RATE = -1, the route's `rate`);
      2: the duration comes from the model (RATE = -2, the route's `duration`);
    - `ss`: 0; 1: the system is reset and starts from the steady state of this dose
      repeated every `ii_h` (SS = 1); 2: that steady state is added to the current
      amounts (SS = 2). With `ii_h` = 0 and `amount` 0 a rate at steady state is a
      constant infusion that never stops (SS = 1, AMT = 0, RATE > 0, II = 0);
    - `ii_h`: the steady state's interdose interval (h);
    - `reset`: 1 resets the system before the record's dose (EVID 3 and 4): states to
      their initial values, running infusions stopped, pending doses of earlier records
      (lagged, additional, infusion ends) cancelled;
    - `covariates`: `(..., n_records, n_covariates)`, the record's covariate values
      (the model's `covariate_names` order; NaN: the animal's value), or width 0;
    - `changes`: `CovariateChanges` when covariates change within a subject, else None
      (part of the pytree's structure: without changes nothing else compiles).

    - `ss_records`: `(..., k)` the indices of the records with `ss` > 0, padded with -1
      (k: the most any animal has; width 0 when none has any), or None (unknown: every
      record is a candidate). A model that is not linear PK throughout solves a periodic
      state per entry (`vtrial.engine.steady_state`), so its width is static cost.

    Plain records whose animal's covariates change (a given-animals trial) or whose
    parameters change at occasions carry the changes in `DoseRecords.changes` instead
    (no items): their doses keep the plain records' events and outputs.
    """

    rate: Any
    modelled: Any
    ss: Any
    ii_h: Any
    reset: Any
    covariates: Any
    changes: CovariateChanges | None = None
    ss_records: Any = None

    @classmethod
    def plain(cls, shape: tuple[int, ...]) -> "NonmemItems":
        """Items that change nothing: records as plain doses (no steady state, no reset)."""
        whole = lambda: np.zeros(shape, np.int32)  # noqa: E731
        return cls(np.zeros(shape), whole(), whole(), np.zeros(shape), whole(), np.zeros((*shape, 0)))


class DoseRecords(NamedTuple):
    """One animal's dose records, or a batch of them (leading axes: animals), padded to a
    fixed number of records with zero-amount boluses at t = 0, which change nothing.

    A pytree of arrays of shape `(..., n_records)`:
    - `time_h`: dose time (h);
    - `amount`: mg, or mg/kg where `per_kg` is 1 (multiplied by the animal's `bw`);
    - `per_kg`: 0 or 1;
    - `duration_h`: 0 for a bolus, the infusion's duration otherwise;
    - `route`: index into the model's routes;
    - `nonmem`: `NonmemItems` of records read from a NONMEM dataset, or None (plain
      doses; None is part of the pytree's structure, so plain regimens compile as before).

    - `changes`: `CovariateChanges` of records without NONMEM items (plain records whose
      parameters change at occasions), or None; with items they are `nonmem.changes`.

    Built by `vtrial.design.dosing.lower_regimens` (configs, Python regimens) and by the
    NONMEM dataset reader; differentiable in `time_h`, `amount` and `duration_h`.
    """

    time_h: Any
    amount: Any
    per_kg: Any
    duration_h: Any
    route: Any
    nonmem: NonmemItems | None = None
    changes: CovariateChanges | None = None

    @property
    def n_records(self) -> int:
        return self.time_h.shape[-1]

    def map(self, fn) -> "DoseRecords":
        """`fn` applied to every array (the items' too)."""
        def changes_map(changes):
            return None if changes is None else CovariateChanges(*(None if a is None else fn(a) for a in changes))

        items = None
        if self.nonmem is not None:
            items = NonmemItems(*(fn(a) for a in self.nonmem[:6]), changes_map(self.nonmem.changes),
                                None if self.nonmem.ss_records is None else fn(self.nonmem.ss_records))
        return DoseRecords(*(fn(a) for a in self[:5]), items, changes_map(self.changes))

    def take(self, index) -> "DoseRecords":
        """The records of the animals at `index` (host numpy arrays)."""
        return self.map(lambda a: np.asarray(a)[index])


class EventTable(NamedTuple):
    """Sorted events of one animal.

    - `time_h`: shape `(n_events,)`, non-decreasing;
    - `bolus`: shape `(n_events, n_states)`, amount added to each state at that time;
    - `rate_delta`: shape `(n_events, n_states)`, change of the input rate (state unit/h);
    - `reset`: None (no event resets), or shape `(n_events,)` bool: before its bolus and
      rate change, the event sets the states to their initial values and every input
      rate to 0.
    """

    time_h: jnp.ndarray
    bolus: jnp.ndarray
    rate_delta: jnp.ndarray
    reset: jnp.ndarray | None = None


def n_events(model: Model, n_records: int, nonmem: bool = False) -> int:
    """Rows of the event table: a start and a stop per dose record (with NONMEM items also
    the record's own row and `MAX_SS_OVERLAP` ends of overlapping steady-state
    infusions), one per parameter event."""
    per_record = 3 + MAX_SS_OVERLAP if nonmem else 2
    return per_record * n_records + len(model.events)


def rates_after_events(events: EventTable, dtype) -> jnp.ndarray:
    """`(n_events + 1, n_states)`: row k is the input rate after the first k events."""
    zero = jnp.zeros((1, events.rate_delta.shape[1]), dtype)
    delta = events.rate_delta.astype(dtype)
    if events.reset is None:
        return jnp.concatenate([zero, jnp.cumsum(delta, axis=0)])

    def combine(a, b):  # segmented sum: a reset starts the sum afresh
        return a[0] | b[0], jnp.where(b[0][..., None], b[1], a[1] + b[1])

    _, rate = jax.lax.associative_scan(combine, (events.reset, delta))
    return jnp.concatenate([zero, rate])


def has_items(doses: DoseRecords) -> bool:
    """Whether the records carry PREDPP's items (static: from the pytree's structure)."""
    return doses.nonmem is not None


def covariate_changes(doses: DoseRecords) -> CovariateChanges | None:
    """The animal's covariate changes, or None (static: from the pytree's structure)."""
    if doses.changes is not None:
        return doses.changes
    return None if doses.nonmem is None else doses.nonmem.changes


def parameters_at(model: Model, p: Mapping[str, jnp.ndarray], doses: DoseRecords, t, *, after: bool = True) -> dict:
    """The parameter values in effect at times `t` (`(n,)`): the animal's `p` with the
    covariates of the last change at or before `t` (`after=True`: just after any change
    at `t`, what the dynamics from `t` on use) or strictly before `t` (`after=False`:
    what an observation at `t` sees, NONMEM's next observation carried back). Values
    `(n,)` where they change; `p` itself without changes. The one place the parameters
    at a time are formed (the model's own mapping of covariates to parameters,
    `Model.derive`, is applied to its result)."""
    changes = covariate_changes(doses)
    if changes is None:
        return dict(p)
    k = jnp.searchsorted(changes.time_h, t, side="right" if after else "left") - 1
    q = dict(p)
    for i, name in enumerate(model.covariate_names):
        v = changes.values[jnp.maximum(k, 0), i]
        q[name] = jnp.where((k >= 0) & ~jnp.isnan(v), v, p[name])
    if changes.parameters is not None:  # an occasion's parameters (NaN: the animal's own)
        for i, name in enumerate(model.parameter_names):
            v = changes.parameters[jnp.maximum(k, 0), i]
            q[name] = jnp.where((k >= 0) & ~jnp.isnan(v), v, p[name])
    return model.derive(q)  # the model's own quantities from the covariates in effect


def record_parameters(model: Model, p: Mapping[str, jnp.ndarray], doses: DoseRecords) -> dict[str, jnp.ndarray]:
    """The parameter values at each dose record: the animal's `p` with its covariates
    replaced by the record's own values (`NonmemItems.covariates`, shape `(n_records,)`
    each), as NONMEM evaluates a dose's lag, bioavailability, rate and duration with the
    data items of its record. The one place a record's parameters are formed."""
    q = dict(p)
    if has_items(doses) and doses.nonmem.covariates.shape[-1]:
        for i, name in enumerate(model.covariate_names):
            c = doses.nonmem.covariates[..., i]
            q[name] = jnp.where(jnp.isnan(c), p[name], c)
        return model.derive(q)  # the model's own quantities from the record's covariates
    return q


def _route_value(model: Model, q, attr: str, default: float, route, dtype) -> jnp.ndarray:
    """The value at each record of the parameter its route names in `attr` (`default` if none)."""
    n = route.shape[0]
    values = []
    for r in model.routes:
        name = getattr(r, attr)
        values.append(jnp.broadcast_to(jnp.asarray(q[name] if name else default, dtype), (n,)))
    return jnp.stack(values)[route, jnp.arange(n)]


def _positive(x):
    """x where > 0, else 1 (a safe divisor whose branch is discarded)."""
    return jnp.where(x > 0, x, 1.0)


def steady_state_amounts(model: Model, q, dose, rate, duration, ii, lag, state, kind, time_h=None, options=None,
                         ss_records=None):
    r"""Amounts at a steady-state record's time (before its own dose) and the number of
    the series' infusions still running then, per record.

    The series is the record's dose given every `ii` hours forever, the last one at the
    record (lagged by `lag`, like every dose of the series). From the linear PK in mode
    coordinates ($\dot x = \Lambda x + \beta$, `vtrial.engine.linear_pk`): a bolus $b$
    given $k \ge 1$ intervals earlier contributes $e^{\Lambda (k II - L)} S^{-1} b$, whose
    geometric sum is $e^{\Lambda(II - L)}/(1 - e^{\Lambda II})\, S^{-1} b$, i.e.
    $(I - e^{K II})^{-1}$ applied in closed form. An infusion of rate $R$ and duration $D$
    started $k II - L$ before is still running for the $n = \lceil (D + L)/II \rceil - 1$
    most recent ($\varphi(\Lambda, k II - L) \beta$ each, and their ends become events);
    the earlier ones have ended: $\varphi(\Lambda, D) e^{\Lambda((n+1) II - L - D)} /
    (1 - e^{\Lambda II})\,\beta$. A constant infusion at steady state (`kind` 2) is
    $-\Lambda^{-1}\beta$. A model that is linear PK throughout takes this closed form (on
    the ODE path too); any other model (states outside a declared linear PK) the
    periodic state of its ODE (`vtrial.engine.steady_state`, with the solve's `options`
    and the records' times `time_h`, for the records `ss_records` lists), whose amounts are
    then the change from the initial state (the reset of SS = 1 starts there). A lag of II or more, or more than
    `MAX_SS_OVERLAP` running infusions, gives NaN (the animal is marked failed).

    `kind`: 0 bolus, 1 infusion, 2 constant infusion (all `(n_records,)`); `state`: the
    index of the dosed state. Returns `(amounts (n_records, n_states), n_running)`.
    """
    n = dose.shape[0]
    dtype = dose.dtype
    spec = model.linear_pk
    linear_throughout = spec is not None and set(spec.states) == set(model.state_names)
    if not linear_throughout:
        return _periodic_amounts(model, q, dose, rate, duration, ii, lag, state, kind, time_h, options, ss_records)
    pk_idx = np.array([model.state_index(s) for s in spec.states])
    per_record = {k: jnp.broadcast_to(jnp.asarray(v, dtype), (n,)) for k, v in q.items()}
    modes = jax.vmap(lambda qj: linear_pk.modes(spec.constants(qj)))(per_record)
    onehot = (jnp.asarray(pk_idx)[None, :] == state[:, None]).astype(dtype)  # (n, n_pk)
    ii_s = _positive(ii)
    n_run = jnp.clip(jnp.ceil((duration + lag) / ii_s) - 1.0, 0.0, None)
    ks = jnp.arange(1, MAX_SS_OVERLAP + 1, dtype=dtype)

    def one(m, e, dose, rate, duration, ii, lag, kind, n_run):
        lam = m.lam
        geometric = 1.0 / -jnp.expm1(lam * ii)
        bolus = jnp.exp(lam * (ii - lag)) * geometric * (m.s_inv @ (dose * e))
        beta = m.s_inv @ (rate * e)
        running = jnp.sum(jnp.where((ks <= n_run)[:, None], linear_pk.phi(lam[None, :], (ks * ii - lag)[:, None]), 0.0), axis=0)
        ended = linear_pk.phi(lam, duration) * jnp.exp(lam * ((n_run + 1.0) * ii - lag - duration)) * geometric
        infusion = beta * (running + ended)
        constant = -beta / lam
        alpha = jnp.where(kind == 0, bolus, jnp.where(kind == 1, infusion, constant))
        return m.s @ alpha

    pk = jax.vmap(one)(modes, onehot, dose, rate, jnp.where(kind == 1, duration, 0.0), ii_s, lag, kind, n_run)
    covered = jnp.any(onehot > 0, axis=1)  # the dosed state is a linear PK state
    bad = ~covered | ((kind != 2) & (lag >= ii_s)) | (n_run > MAX_SS_OVERLAP)
    amounts = jnp.zeros((n, model.n_states), dtype).at[:, pk_idx].set(pk)
    return jnp.where(bad[:, None], jnp.nan, amounts), n_run.astype(jnp.int32)


def _periodic_amounts(model: Model, q, dose, rate, duration, ii, lag, state, kind, time_h, options, ss_records):
    """`steady_state_amounts` of a model that is not linear PK throughout: a periodic state
    per record that `ss_records` lists (every record where it is None)."""
    n = dose.shape[0]
    dtype = dose.dtype
    ii_s = _positive(ii)
    n_run = jnp.clip(jnp.ceil((duration + lag) / ii_s) - 1.0, 0.0, None)
    bad = ((kind != 2) & (lag >= ii_s)) | (n_run > MAX_SS_OVERLAP)
    if options is None or time_h is None:  # no solve to take it from: the animal is marked failed
        return jnp.full((n, model.n_states), jnp.nan, dtype), n_run.astype(jnp.int32)
    index = jnp.arange(n) if ss_records is None else jnp.asarray(ss_records)
    if index.shape[0] == 0:  # no steady-state record in the data
        return jnp.zeros((n, model.n_states), dtype), n_run.astype(jnp.int32)
    listed = index >= 0
    at = jnp.maximum(index, 0)
    per_record = {k: jnp.broadcast_to(jnp.asarray(v, dtype), (n,))[at] for k, v in q.items()}
    th = {
        "q": per_record, "t0": jnp.asarray(time_h, dtype)[at], "dose": dose[at], "rate": rate[at],
        "duration": duration[at], "ii": ii_s[at], "lag": lag[at],
        "e": (state[at][:, None] == jnp.arange(model.n_states)[None, :]).astype(dtype),
        "kind": kind[at].astype(dtype), "n_run": n_run[at],
    }
    x = jax.vmap(lambda th: steady_state.periodic_state(model, options, th))(th)
    change = x - jax.vmap(model.initial_state)(per_record).astype(dtype)
    amounts = jnp.zeros((n, model.n_states), dtype).at[at].add(jnp.where(listed[:, None], change, 0.0))
    return jnp.where(bad[:, None], jnp.nan, amounts), n_run.astype(jnp.int32)


def _nonmem_rows(model: Model, p, doses: DoseRecords, dtype, options=None):
    """The event rows of records with `NonmemItems`: per record its own row (reset,
    steady-state amounts and the rate of the series' infusions still running), the dose
    (bolus or infusion start, lagged), the infusion's end and `MAX_SS_OVERLAP` ends of
    the series' running infusions. Rows of a record at or after a later record's reset
    are cancelled (no effect)."""
    time_h, amount, per_kg, duration_h, route, items = doses[:6]
    n = time_h.shape[0]
    n_states = model.n_states
    q = record_parameters(model, p, doses)
    route_state = jnp.array([model.state_index(r.state) for r in model.routes])
    state = route_state[route]
    onehot = (state[:, None] == jnp.arange(n_states)[None, :]).astype(dtype)
    f = _route_value(model, q, "bioavailability", 1.0, route, dtype)
    lag = _route_value(model, q, "lag", 0.0, route, dtype)
    model_rate = _route_value(model, q, "rate", jnp.nan, route, dtype)
    model_duration = _route_value(model, q, "duration", jnp.nan, route, dtype)
    bw = q["bw"] if "bw" in q else 1.0
    dose = amount * jnp.where(per_kg > 0, bw, 1.0) * f
    given_rate = items.rate * jnp.where(per_kg > 0, bw, 1.0)
    steady = items.ss > 0
    constant = steady & (items.ii_h == 0) & (items.rate > 0)
    by_rate = (items.modelled == 1) | ((items.modelled == 0) & (items.rate > 0))
    by_duration = (items.modelled == 2) | ((items.modelled == 0) & (items.rate <= 0) & (duration_h > 0))
    rate_in = jnp.where(items.modelled == 1, model_rate, given_rate)
    duration_in = jnp.where(items.modelled == 2, model_duration, duration_h)
    rate = jnp.where(by_rate, rate_in, jnp.where(by_duration, dose / _positive(duration_in), 0.0))
    duration = jnp.where(by_rate, dose / _positive(rate_in), jnp.where(by_duration, duration_in, 0.0))
    infusion = (by_rate | by_duration) & ~constant
    kind = jnp.where(constant, 2, jnp.where(infusion, 1, 0))
    lag = jnp.where(constant, 0.0, lag)
    # Records that are not steady state get harmless inputs (their amounts are discarded).
    ss_amounts, n_run = steady_state_amounts(
        model, q, jnp.where(steady, dose, 0.0), jnp.where(steady, rate, 0.0), jnp.where(steady, duration, 0.0),
        jnp.where(steady, items.ii_h, 1.0), jnp.where(steady, lag, 0.0), state, jnp.where(steady, kind, 0), time_h, options,
        items.ss_records,
    )
    ss_amounts = jnp.where(steady[:, None], ss_amounts, 0.0)
    # A constant infusion at steady state sets the amounts and stops there (what NONMEM does:
    # nmtests scenario 29).
    running = jnp.where(steady & infusion, n_run * rate, 0.0)
    start = time_h + lag
    stop = start + duration
    ks = jnp.arange(1, MAX_SS_OVERLAP + 1, dtype=dtype)
    overlap_t = stop[None, :] - ks[:, None] * items.ii_h[None, :]  # (K, n)
    overlap_on = (steady & infusion)[None, :] & (ks[:, None] <= n_run[None, :])
    zeros = jnp.zeros((n, n_states), dtype)
    times = [time_h, start, jnp.where(infusion, stop, time_h), jnp.where(overlap_on, overlap_t, time_h[None, :]).reshape(-1)]
    boluses = [ss_amounts, onehot * jnp.where(infusion | constant, 0.0, dose)[:, None], zeros, jnp.zeros((MAX_SS_OVERLAP * n, n_states), dtype)]
    rates = [
        onehot * running[:, None],
        onehot * jnp.where(infusion, rate, 0.0)[:, None],
        -onehot * jnp.where(infusion, rate, 0.0)[:, None],
        (-onehot[None, :, :] * jnp.where(overlap_on, rate[None, :], 0.0)[:, :, None]).reshape(-1, n_states),
    ]
    resets = [(items.reset > 0) | (items.ss == 1), jnp.zeros(n, bool), jnp.zeros(n, bool), jnp.zeros(MAX_SS_OVERLAP * n, bool)]
    # A reset cancels what earlier records have pending: rows at or after the first
    # reset among the later records.
    reset_t = jnp.where(resets[0], time_h, jnp.inf)
    later_reset = jnp.concatenate([jax.lax.cummin(reset_t, reverse=True)[1:], jnp.full((1,), jnp.inf, dtype)])
    owner = [np.arange(n), np.arange(n), np.arange(n), np.tile(np.arange(n), MAX_SS_OVERLAP)]
    out_t, out_b, out_r, out_reset = [], [], [], []
    for t, b, r, z, o in zip(times, boluses, rates, resets, owner):
        alive = t < later_reset[o]
        out_t.append(t)
        out_b.append(jnp.where(alive[:, None], b, 0.0))
        out_r.append(jnp.where(alive[:, None], r, 0.0))
        out_reset.append(z & alive)
    return out_t, out_b, out_r, out_reset


def build_event_table(model: Model, p: Mapping[str, jnp.ndarray], doses: DoseRecords, options=None) -> EventTable:
    """Event table of one animal from its parameters `p` and its `DoseRecords` (shape `(n_records,)`);
    `options` (the solve's `SolverOptions`) solve the steady state of a model that is not
    linear PK throughout (without them its steady-state records give NaN)."""
    doses = DoseRecords(*doses)
    time_h, amount, per_kg, duration_h, route = doses[:5]
    n_states = model.n_states
    dtype = jnp.result_type(float)
    times, boluses, rates, resets = [], [], [], []
    with_items = has_items(doses)
    if with_items and model.routes and time_h.shape[0] > 0:
        times, boluses, rates, resets = _nonmem_rows(model, p, doses, dtype, options)
    elif model.routes and time_h.shape[0] > 0:
        route_state = jnp.array([model.state_index(r.state) for r in model.routes])
        route_f = jnp.stack([jnp.asarray(p[r.bioavailability] if r.bioavailability else 1.0, dtype) for r in model.routes])
        route_lag = jnp.stack([jnp.asarray(p[r.lag] if r.lag else 0.0, dtype) for r in model.routes])
        bw = p["bw"] if "bw" in p else 1.0
        dose_mg = amount * jnp.where(per_kg > 0, bw, 1.0) * route_f[route]
        start = time_h + route_lag[route]
        is_infusion = duration_h > 0
        onehot = (route_state[route][:, None] == jnp.arange(n_states)[None, :]).astype(dtype)
        bolus_mg = jnp.where(is_infusion, 0.0, dose_mg)
        rate = jnp.where(is_infusion, dose_mg / jnp.where(is_infusion, duration_h, 1.0), 0.0)
        times += [start, start + duration_h]
        boluses += [onehot * bolus_mg[:, None], jnp.zeros_like(onehot)]
        rates += [onehot * rate[:, None], -onehot * rate[:, None]]
    changes = covariate_changes(doses)
    if changes is not None:  # every change ends a segment: the solver meets it exactly
        times.append(jnp.asarray(changes.time_h, dtype))
        boluses.append(jnp.zeros((changes.time_h.shape[0], n_states), dtype))
        rates.append(jnp.zeros((changes.time_h.shape[0], n_states), dtype))
        resets.append(jnp.zeros(changes.time_h.shape[0], bool))
    for ev in model.events:
        onehot = (jnp.arange(n_states) == model.state_index(ev.state)).astype(dtype)
        times.append(jnp.reshape(p[ev.time], (1,)).astype(dtype))
        boluses.append((onehot * p[ev.amount])[None, :])
        rates.append(jnp.zeros((1, n_states), dtype))
        if with_items:
            resets.append(jnp.zeros(1, bool))
    if not times:
        empty = jnp.zeros((0, n_states), dtype)
        return EventTable(jnp.zeros((0,), dtype), empty, empty, jnp.zeros((0,), bool) if with_items else None)
    t = jnp.concatenate(times)
    order = jnp.argsort(t, stable=True)
    reset = jnp.concatenate(resets)[order] if with_items else None
    return EventTable(t[order], jnp.concatenate(boluses)[order], jnp.concatenate(rates)[order], reset)


def seen_at_their_time(events: EventTable, save_times: jnp.ndarray, out: jnp.ndarray, y0: jnp.ndarray) -> jnp.ndarray:
    """Outputs `out` (`(n_times, n_states)`, values just before any event at their time)
    made to see the events at exactly their time, as NONMEM's observation records see
    the dose records before them and the doses those imply (lagged, additional, steady
    state, resets): for a table with NONMEM items (`events.reset` given), the identity
    otherwise. A reset at that time sets the initial state; boluses after it add."""
    if events.reset is None or events.time_h.shape[0] == 0:
        return out
    at = events.time_h[None, :] == save_times[:, None]  # (n_times, n_events)
    index = jnp.arange(events.time_h.shape[0])
    last = jnp.max(jnp.where(at & events.reset[None, :], index[None, :], -1), axis=1)
    counted = (at & (index[None, :] >= last[:, None])).astype(out.dtype)
    return jnp.where((last >= 0)[:, None], y0[None, :], out) + counted @ events.bolus.astype(out.dtype)
