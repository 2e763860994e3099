"""The dose records of a NONMEM dataset (`vtrial.io.nonmem.read_nonmem` reads the rows):
the route of a CMT, ADDL expanded, PREDPP's items (`NonmemItems`: RATE, SS/II, EVID 3/4
resets, the record's covariates) and covariates that change within a subject as events
(`CovariateChanges`, NONMEM's next observation carried back)."""

from __future__ import annotations

import math

import numpy as np

from vtrial.engine.events import CovariateChanges, DoseRecords, NonmemItems
from vtrial.limits import MAX_DOSE_RECORDS
from vtrial.models.base import Model


def value_key(value) -> str:
    """A CMT/DVID value as compared: integral numbers as integers ("1", "1.0" -> "1"),
    names in lower case."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text.lower()
    return str(int(number)) if math.isfinite(number) and number.is_integer() else text.lower()


def dose_route(model: Model, res, t, i: int, cell: str) -> int:
    """The route index of the dose at row `i` with CMT `cell` (`res`: the `[data]` mapping
    resolved against the model; `t`: the table, whose errors name the row and column)."""
    routes = model.routes
    if not routes:
        raise t.error(i, "EVID", f"a dose, but model {model.name} takes no doses")
    if cell in (".", ""):
        targets = sorted(set(res.route_of_cmt.values()))
        if len(targets) == 1:
            return targets[0]
        if len(routes) == 1:
            return 0
        raise t.error(i, "CMT", f"a dose row needs a compartment: model {model.name} has routes "
                                f"{', '.join(r.name for r in routes)} (map CMT values to them in [data.routes])")
    k = value_key(cell)
    if k in res.route_of_cmt:
        return res.route_of_cmt[k]
    if res.route_of_cmt:
        raise t.error(i, "CMT", f"CMT {cell} is not mapped to a route in [data.routes] (mapped: {', '.join(res.route_of_cmt)})")
    if k.isdigit():
        number = int(k)
        if not 1 <= number <= model.n_states:
            raise t.error(i, "CMT", f"compartment {number} does not exist; model {model.name} has {model.n_states} states "
                                    f"({', '.join(model.state_names)})")
        state = model.state_names[number - 1]
    else:
        for j, r in enumerate(routes):
            if r.name.lower() == k:
                return j
        if k not in [s.lower() for s in model.state_names]:
            raise t.error(i, "CMT", f"{cell!r} is neither a route ({', '.join(r.name for r in routes)}) nor a state "
                                    f"({', '.join(model.state_names)}) of model {model.name}")
        state = model.state_names[[s.lower() for s in model.state_names].index(k)]
    for j, r in enumerate(routes):
        if r.state == state:
            return j
    raise t.error(i, "CMT", f"no route of model {model.name} doses its state {state!r} (routes: "
                            f"{', '.join(f'{r.name} -> {r.state}' for r in routes)})")


def dose_records(model, res, t, subject, starts, time_h, amt, rate, ss, ii, addl, route, is_dose, is_reset,
                  row_covariates, record_items) -> DoseRecords:
    """Dose records of every subject (ADDL expanded, sorted by time, padded). PREDPP's items
    (`NonmemItems`) are kept only when a record needs them: steady state, a modelled rate
    or duration, a reset after a subject's first row, a dose item (lag, F, rate, duration)
    from a covariate that changes within a subject, or a given RATE into a route with a
    bioavailability (NONMEM then scales the duration, not the rate; unless `[data]
    bioavailability_scales = "rate"`); otherwise the records
    are plain (as a config's regimen), which compile to fewer events."""
    n_subjects = starts.size
    f_routes = np.array([r.bioavailability is not None for r in model.routes] or [False])
    varying = {c for c, v in row_covariates.items() if np.any(v != _subject_value(v, subject))}
    with_items = bool(np.any(is_dose & (ss > 0)) or np.any(is_dose & (rate < 0)) or np.any(is_reset) or varying
                      or (res.rate_kept and np.any(is_dose & (rate > 0) & f_routes[route])))
    names = model.covariate_names if with_items and (record_items or varying) else ()
    rows = [[] for _ in range(n_subjects)]
    for i in np.flatnonzero(is_dose | is_reset):
        mg = amt[i] * res.amt_factor if is_dose[i] else 0.0
        keep_rate = rate[i] > 0 and with_items and res.rate_kept
        given = rate[i] * res.amt_factor / res.time_factor if keep_rate else 0.0
        duration = amt[i] / rate[i] * res.time_factor if rate[i] > 0 and not keep_rate else 0.0
        modelled = {-1.0: 1, -2.0: 2}.get(float(rate[i]), 0) if is_dose[i] else 0
        cov = tuple(row_covariates[c][i] if c in row_covariates else np.nan for c in names)
        n_doses = int(addl[i]) + 1 if is_dose[i] else 1
        for k in range(n_doses):
            first = k == 0
            rows[subject[i]].append((
                time_h[i] + k * ii[i] * res.time_factor, mg, float(res.per_kg), duration, route[i],
                given, modelled, int(ss[i]) if first and is_dose[i] else 0, ii[i] * res.time_factor if first else 0.0,
                int(is_reset[i] and first), cov,
            ))
    n_records = max(len(r) for r in rows)
    if n_records > MAX_DOSE_RECORDS:
        s = int(np.argmax([len(r) for r in rows]))
        raise t.error(starts[s], "ADDL", f"subject {t.text('ID')[starts[s]]} has {n_records:,} dose records after ADDL "
                                         f"expansion; the limit is {MAX_DOSE_RECORDS:,}")
    shape = (n_subjects, n_records)
    arrays = [np.zeros(shape) for _ in range(4)] + [np.zeros(shape, np.int32)]
    items = NonmemItems.plain(shape)._replace(covariates=np.full((*shape, len(names)), np.nan))
    for s, recs in enumerate(rows):
        # Sorted by time; at equal times in file order (a reset after the doses before it).
        for j, rec in enumerate(sorted(recs, key=lambda r: r[0])):
            for a, v in zip(arrays, rec[:5]):
                a[s, j] = v
            for a, v in zip(items, rec[5:]):
                a[s, j] = v
    # The steady-state records of each subject (a periodic solve each for a model that
    # is not linear PK throughout): static width, the most any subject has.
    ss_at = [np.flatnonzero(row > 0) for row in items.ss]
    width = max((a.size for a in ss_at), default=0)
    ss_records = np.full((n_subjects, width), -1, np.int32)
    for s, a in enumerate(ss_at):
        ss_records[s, :a.size] = a
    items = items._replace(ss_records=ss_records)
    if varying - record_items:  # covariates the dynamics or observables use change: events
        items = items._replace(changes=_covariate_changes(model, row_covariates, subject, starts, time_h))
    return DoseRecords(*arrays, items if with_items else None)


def _covariate_changes(model, row_covariates, subject, starts, time_h) -> CovariateChanges:
    """NONMEM's next observation carried back as events: the values on a row hold for the
    interval that ends at it, so where a row's values differ from the row before, they
    take effect at that earlier row's time. Padded by repeating a subject's last change
    (its first row's values at its first time when it has none)."""
    n = len(model.covariate_names)
    values = np.stack([row_covariates.get(c, np.full(subject.size, np.nan)) for c in model.covariate_names], axis=1)
    per_subject = []
    for s, start in enumerate(starts):
        rows = np.flatnonzero(subject == s)
        v = values[rows]
        differs = np.flatnonzero(np.any((v[1:] != v[:-1]) & ~(np.isnan(v[1:]) & np.isnan(v[:-1])), axis=1)) + 1
        per_subject.append([(time_h[rows[k - 1]], v[k]) for k in differs] or [(time_h[start], values[start])])
    m = max(len(c) for c in per_subject)
    times = np.zeros((starts.size, m))
    vals = np.full((starts.size, m, n), np.nan)
    for s, changes in enumerate(per_subject):
        changes = changes + [changes[-1]] * (m - len(changes))
        times[s] = [c[0] for c in changes]
        vals[s] = [c[1] for c in changes]
    return CovariateChanges(times, vals)


def _subject_value(values: np.ndarray, subject: np.ndarray) -> np.ndarray:
    """Each row's subject's first value."""
    first = np.r_[True, subject[1:] != subject[:-1]]
    return values[np.flatnonzero(first)][subject]
