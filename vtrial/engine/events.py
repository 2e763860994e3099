"""Lowering dose records and parameter events to one sorted event table per animal.

This is the only representation of dosing inside the solve: every bolus, infusion start
and stop, lagged dose and parameter-timed event (a disease onset) becomes a row with a
time, an instantaneous addition to the state and a change of the zero-order input rate.
Runs inside JAX for one animal, because event times may depend on per-animal
parameters (lag times, onset times).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from vtrial.models.base import Model


class DoseRecords(NamedTuple):
    """One animal's dose records, or a batch of them (leading axes: animals), padded to a
    fixed number of records with zero-amount boluses at t = 0, which change nothing.

    A pytree of arrays of shape `(..., n_records)`:
    - `time_h`: dose time (h);
    - `amount`: mg, or mg/kg where `per_kg` is 1 (multiplied by the animal's `bw`);
    - `per_kg`: 0 or 1;
    - `duration_h`: 0 for a bolus, the infusion's duration otherwise;
    - `route`: index into the model's routes.

    Built by `vtrial.design.dosing.lower_regimens` (configs, Python regimens) and by the
    NONMEM dataset reader; differentiable in `time_h`, `amount` and `duration_h`.
    """

    time_h: Any
    amount: Any
    per_kg: Any
    duration_h: Any
    route: Any

    @property
    def n_records(self) -> int:
        return self.time_h.shape[-1]

    def take(self, index) -> "DoseRecords":
        """The records of the animals at `index` (host numpy arrays)."""
        return DoseRecords(*(np.asarray(a)[index] for a in self))


class EventTable(NamedTuple):
    """Sorted events of one animal.

    - `time_h`: shape `(n_events,)`, non-decreasing;
    - `bolus`: shape `(n_events, n_states)`, amount added to each state at that time;
    - `rate_delta`: shape `(n_events, n_states)`, change of the input rate (state unit/h).
    """

    time_h: jnp.ndarray
    bolus: jnp.ndarray
    rate_delta: jnp.ndarray


def n_events(model: Model, n_records: int) -> int:
    """Rows of the event table: a start and a stop per dose record, one per parameter event."""
    return 2 * n_records + len(model.events)


def build_event_table(model: Model, p: Mapping[str, jnp.ndarray], doses: DoseRecords) -> EventTable:
    """Event table of one animal from its parameters `p` and its `DoseRecords` (shape `(n_records,)`)."""
    time_h, amount, per_kg, duration_h, route = doses
    n_states = model.n_states
    dtype = jnp.result_type(float)
    times, boluses, rates = [], [], []
    if model.routes and time_h.shape[0] > 0:
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
    for ev in model.events:
        onehot = (jnp.arange(n_states) == model.state_index(ev.state)).astype(dtype)
        times.append(jnp.reshape(p[ev.time], (1,)).astype(dtype))
        boluses.append((onehot * p[ev.amount])[None, :])
        rates.append(jnp.zeros((1, n_states), dtype))
    if not times:
        return EventTable(jnp.zeros((0,), dtype), jnp.zeros((0, n_states), dtype), jnp.zeros((0, n_states), dtype))
    t = jnp.concatenate(times)
    order = jnp.argsort(t, stable=True)
    return EventTable(t[order], jnp.concatenate(boluses)[order], jnp.concatenate(rates)[order])
