r"""Occasions in simulations: one random effect per occasion and animal.

An occasion's parameters differ from the animal's by $e^{\kappa_k}$ ($+\kappa_k$ for an
additive random effect), $\kappa_k \sim N(0, \pi^2)$ with one variance per parameter
(`Population.iov`), drawn from the animal's own key, so results do not depend on
chunking. The parameters change at the occasions' start times as events the solver
meets exactly: columns of the animal's `CovariateChanges` (`parameters`), merged with
any covariate changes it already has (`merge_occasion_changes`, which the estimation
uses too: `vtrial.estimation.occasions`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vtrial.engine.events import CovariateChanges, DoseRecords
from vtrial.errors import SpecError

#: Folded into an animal's key for its kappas (apart from its eta and covariate draws).
_KAPPA = 0x4B415050


def check_occasions(population) -> None:
    """`Population.iov` and `occasion_start_h` checked against the model."""
    model = population.model
    route = {getattr(r, a) for r in model.routes for a in ("lag", "bioavailability", "rate", "duration")}
    route |= {getattr(ev, a) for ev in model.events for a in ("time", "amount")}
    for name, var in population.iov.items():
        where = f"variability.occasions.{name}"
        if name not in model.parameter_names:
            raise SpecError(where, f"unknown parameter of model {model.name}; known: {', '.join(model.parameter_names)}")
        if isinstance(var, bool) or not isinstance(var, int | float) or not 0 <= var < math.inf:
            raise SpecError(where, f"must be a variance >= 0, got {var!r}")
        if name in route:
            raise SpecError(where, f"{name} is a dose route's or an event's parameter; inter-occasion variability applies to "
                                   "parameters of the dynamics and observations")
    t = np.asarray(population.occasion_start_h, float)
    if t.size and (not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(np.diff(t) <= 0)):
        raise SpecError("occasions.start_h", f"must be increasing times >= 0 (h), got {list(population.occasion_start_h)}")


def merge_occasion_changes(model, doses: DoseRecords, change_h, change_level, n_levels: int, t0: float):
    """Dose records (host numpy, `(n, n_records)`) with occasion changes merged into their
    covariate changes (`DoseRecords.changes`; a NONMEM item's own changes move there).

    `change_h`, `change_level`: `(n, n_changes)`: from right after `change_h` (-inf: from
    `t0`) the animal is in occasion `change_level` (index into `n_levels` levels).
    Returns the records, the occasion in effect from each merged change on `(n,
    n_merged)` and the levels each animal has `(n, n_levels)` (1/0)."""
    change_h, change_level = np.asarray(change_h, float), np.asarray(change_level)
    n = change_h.shape[0]
    n_cov = len(model.covariate_names)
    existing = None if doses.nonmem is None else doses.nonmem.changes
    existing = existing if existing is not None else doses.changes
    merged = []
    for s in range(n):
        occ_t = np.maximum(change_h[s], t0)
        if existing is not None:
            cov_t, cov_v = np.asarray(existing.time_h[s], float), np.asarray(existing.values[s], float)
        else:
            cov_t, cov_v = np.zeros(0), np.zeros((0, n_cov))
        times = np.unique(np.r_[occ_t, cov_t])
        k = np.searchsorted(cov_t, times, side="right") - 1
        values = np.full((times.size, n_cov), np.nan)
        if cov_t.size:
            values = np.where((k >= 0)[:, None], cov_v[np.maximum(k, 0)], np.nan)
        levels = change_level[s][np.maximum(np.searchsorted(occ_t, times, side="right") - 1, 0)]
        merged.append((times, values, levels))
    m = max(t.size for t, _, _ in merged)
    time_h = np.zeros((n, m))
    values = np.full((n, m, n_cov), np.nan)
    level = np.zeros((n, m), np.int64)
    for s, (t, v, lv) in enumerate(merged):
        pad = m - t.size  # padded by repeating the last change (it changes nothing)
        time_h[s] = np.r_[t, np.repeat(t[-1:], pad)]
        values[s] = np.concatenate([v, np.repeat(v[-1:], pad, axis=0)])
        level[s] = np.r_[lv, np.repeat(lv[-1:], pad)]
    present = np.zeros((n, n_levels))
    for s in range(n):
        present[s, np.unique(change_level[s])] = 1.0
    nonmem = None if doses.nonmem is None else doses.nonmem._replace(changes=None)
    return doses._replace(nonmem=nonmem, changes=CovariateChanges(time_h, values)), level, present


def occasion_parameters(model, params, iov_names, additive, level, kappa) -> np.ndarray:
    """`(n, n_changes, n_parameters)` parameters in effect from each change on (NaN: the
    animal's own): the IOV parameters of `params` (name -> `(n,)`) times exp(kappa) of the
    change's occasion (`level` `(n, n_changes)`, `kappa` `(n, n_levels, n_iov)`)."""
    n, m = level.shape
    out = np.full((n, m, len(model.parameter_names)), np.nan)
    for j, name in enumerate(iov_names):
        k = np.take_along_axis(kappa[:, :, j], level, axis=1)
        base = np.asarray(params[name], float)[:, None]
        out[:, :, model.parameter_names.index(name)] = base + k if name in additive else base * np.exp(k)
    return out


def draw_kappa(seed: int, stream, animal, n_levels: int, sd) -> np.ndarray:
    """`(n, n_levels, n_iov)` kappas, each animal's from its own key (`seed`, `stream` (an
    arm or a replicate), `animal`: `(n,)` each)."""
    sd = jnp.asarray(sd, float)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _KAPPA)

    def one(a, i):
        k = jax.random.fold_in(jax.random.fold_in(key, a), i)
        return jax.random.normal(k, (n_levels, sd.shape[0])) * sd[None, :]

    return np.asarray(jax.vmap(one)(jnp.asarray(stream, jnp.uint32), jnp.asarray(animal, jnp.uint32)))


def with_occasions(population, params, doses: DoseRecords, change_h, change_level, n_levels: int, seed: int, stream, animal,
                   t0: float = 0.0) -> DoseRecords:
    """The animals' dose records `(n, n_records)` with their occasions' parameter changes
    (kappas drawn per animal: `draw_kappa`); `params`: name -> `(n,)` individual values."""
    model = population.model
    names = tuple(n for n in model.parameter_names if n in population.iov)
    doses, level, _ = merge_occasion_changes(model, DoseRecords(*doses).map(np.asarray), change_h, change_level, n_levels, t0)
    sd = [math.sqrt(population.iov[n]) for n in names]
    kappa = draw_kappa(seed, stream, animal, n_levels, sd)
    parameters = occasion_parameters(model, params, names, population.additive, level, kappa)
    return doses._replace(changes=doses.changes._replace(parameters=parameters))


def trial_occasions(population, params, doses, seed: int, arm_index, position) -> DoseRecords:
    """A trial's animals with the population's occasions (`occasion_start_h`; occasion k
    from right after its start time on)."""
    start = np.asarray(population.occasion_start_h, float)
    n = np.asarray(arm_index).size
    change_h = np.broadcast_to(start, (n, start.size))
    change_level = np.broadcast_to(np.arange(start.size), (n, start.size))
    return with_occasions(population, params, doses, change_h, change_level, start.size, seed, arm_index, position)


def dataset_occasions(data):
    """A dataset's occasions (`PopulationData.occasions`) as `simulate_replicate_studies`
    takes them: `(change_h, change_level, n_levels)`, or None without."""
    o = getattr(data, "occasions", None)
    return None if o is None else (o.change_h, o.change_level, int(np.asarray(o.levels).size))
