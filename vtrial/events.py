"""Lowering dose records and parameter events to one sorted event table per animal.

This is the only representation of dosing inside the solve: every bolus, infusion start
and stop, lagged dose and parameter-timed event (a disease onset) becomes a row with a
time, an instantaneous addition to the state and a change of the zero-order input rate.
Runs inside JAX for one animal, because event times may depend on per-animal
parameters (lag times, onset times).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax.numpy as jnp

from vtrial.models.base import Model


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


def build_event_table(model: Model, p: Mapping[str, jnp.ndarray], doses) -> EventTable:
    """Event table of one animal from its parameters `p` and its dose-record arrays.

    `doses` is a tuple `(time_h, amount, per_kg, duration_h, route)` of shape
    `(n_records,)` arrays (see `vtrial.dosing.DoseRecords`).
    """
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
