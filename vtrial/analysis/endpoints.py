"""Trial endpoints: per-animal numbers from the predictions, and their per-arm table.

A model declares its endpoints (`vtrial.models.base.Endpoint`); this module computes them
for a chunk of animals at once, in numpy or (pass `xp=jax.numpy`) inside a traced,
differentiable computation. AUCs and peaks computed by the solve itself
(`vtrial.engine.exposure`, exact whatever the output grid) are passed in as `exact` and
used as they are. A failed animal (NaN predictions) gets NaN endpoints and is left out of
every statistic of the table.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from vtrial.analysis.summaries import QUANTILES
from vtrial.models.base import Endpoint


def _window(times_h: np.ndarray, e: Endpoint) -> np.ndarray:
    lo = times_h[0] if e.start_h is None else e.start_h
    hi = times_h[-1] if e.end_h is None else e.end_h
    return (times_h >= lo) & (times_h <= hi)


def endpoint_values(endpoints: Sequence[Endpoint], times_h, predictions: Mapping, xp=np, exact: Mapping | None = None) -> dict:
    """Each endpoint's value per animal: `predictions[observable]` is `(m, n_times)` at
    `times_h`, which must contain every endpoint's window ends (and `value` times).

    `exact`: endpoint name -> `(m,)` values computed from the solver (AUC as an integrated
    state, peaks located between output times; `vtrial.engine.exposure`), used as given;
    the others are taken from the grid (trapezoidal AUC, largest output value): what can
    be done with sampled data (observations), exact for `value`."""
    times = np.asarray(times_h, dtype=float)
    out = {}
    for e in endpoints:
        if exact is not None and e.name in exact:
            out[e.name] = exact[e.name]
            continue
        y = predictions[e.observable]
        if e.statistic == "value":  # at its time, or at the end of the run
            out[e.name] = y[:, -1 if e.start_h is None else int(np.searchsorted(times, e.start_h))]
            continue
        mask = _window(times, e)
        t, w = times[mask], y[:, mask]
        if e.statistic in ("auc", "mean"):
            auc = xp.sum(0.5 * (w[:, 1:] + w[:, :-1]) * np.diff(t)[None, :], axis=1)
            out[e.name] = auc if e.statistic == "auc" else auc / (t[-1] - t[0])
        elif e.statistic == "max":
            out[e.name] = xp.max(w, axis=1)
        elif e.statistic == "min":
            out[e.name] = xp.min(w, axis=1)
        else:  # tmax: the first time of the maximum; NaN for a failed animal
            peak = xp.argmax(xp.where(xp.isnan(w), -xp.inf, w), axis=1)
            out[e.name] = xp.where(xp.any(xp.isnan(w), axis=1), xp.nan, xp.asarray(t)[peak])
    return out


def window_label(e: Endpoint, times_h) -> str:
    """The endpoint's window in days, as `endpoints.csv` states it (`22-28`, or `0.25` for a
    value at 6 h)."""
    times = np.asarray(times_h, dtype=float)
    if e.statistic == "value":
        return f"{(times[-1] if e.start_h is None else e.start_h) / 24.0:g}"
    lo = times[0] if e.start_h is None else e.start_h
    hi = times[-1] if e.end_h is None else e.end_h
    return f"{lo / 24.0:g}-{hi / 24.0:g}"


def _stats(values: np.ndarray) -> dict[str, float]:
    with warnings.catch_warnings():  # an arm whose animals all failed gives NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        finite = values[np.isfinite(values)]
        out = {"n_animals": int(finite.size), "mean": float(np.mean(finite)) if finite.size else np.nan}
        for k, q in QUANTILES.items():
            out[k] = float(np.percentile(finite, q)) if finite.size else np.nan
    return out


def endpoint_table(
    arms: np.ndarray,
    arm_order: Sequence[str],
    per_animal: Mapping[str, np.ndarray],
    endpoints: Sequence[Endpoint],
    units: Mapping[str, str],
    times_h,
    reference_arm: str | None = None,
    treated_arms: Sequence[str] | None = None,
    measures: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Per arm and endpoint: `arm`, `endpoint`, `observable` (what it is computed from),
    `measures` (what that is, e.g. "plasma anakinra" or "anakinra at the joint
    (biophase)": endpoints of the same name and unit, such as `cmax`, measure different
    compartments in different models; from `measures`, observable -> description),
    `window_days`, `unit`, `n_animals`, `mean`, `p05`, `median`, `p95` (the median and 90%
    interval of the animals).

    An endpoint with an `inhibition` name also gets that row when `reference_arm` is set:
    per animal `100 (1 - x_i / mean x_reference)`, for the arms in `treated_arms` other
    than the reference (default: every other arm). An inhibition of an arm that received
    no treatment (PBS, mock infection) is not defined and gets no row."""
    metrics = {e.name: np.asarray(per_animal[e.name], dtype=float) for e in endpoints}
    labels = {e.name: window_label(e, times_h) for e in endpoints}
    observables = {e.name: e.observable for e in endpoints} | {e.inhibition: e.observable for e in endpoints if e.inhibition}
    measures = dict(measures or {})
    all_units = dict(units)
    if reference_arm is not None:
        for e in endpoints:
            if e.inhibition is None:
                continue
            ref = metrics[e.name][arms == reference_arm]
            ref = ref[np.isfinite(ref)]
            ref_mean = np.mean(ref) if ref.size else np.nan
            with np.errstate(divide="ignore", invalid="ignore"):
                metrics[e.inhibition] = 100.0 * (1.0 - metrics[e.name] / ref_mean)
            labels[e.inhibition], all_units[e.inhibition] = labels[e.name], "%"
    inhibitions = {e.inhibition for e in endpoints if e.inhibition is not None}
    compared = set(arm_order if treated_arms is None else treated_arms) - {reference_arm}
    rows = []
    for arm in arm_order:
        sel = arms == arm
        for name, values in metrics.items():
            if name in inhibitions and arm not in compared:
                continue
            rows.append({"arm": arm, "endpoint": name, "observable": observables[name],
                         "measures": measures.get(observables[name], ""), "window_days": labels[name],
                         "unit": all_units.get(name, ""), **_stats(values[sel])})
    return pd.DataFrame(rows)


def nonfinite_endpoints(arms: np.ndarray, arm_order: Sequence[str], per_animal: Mapping[str, np.ndarray], ok: np.ndarray) -> list[str]:
    """Messages for endpoints that are not finite for animals whose solve succeeded (`ok`):
    values past the float range (an absurd dose) would otherwise leave an arm's endpoint
    NaN over 0 animals without a word. Failed animals are expected to be NaN and not named."""
    out = []
    for name, values in per_animal.items():
        bad = ok & ~np.isfinite(np.asarray(values, dtype=float))
        for arm in arm_order:
            sel = arms == arm
            n_bad = int(np.count_nonzero(bad & sel))
            if n_bad:
                out.append(f"endpoint {name!r} of arm {arm!r} is not finite for {n_bad} of {int(np.count_nonzero(ok & sel))} "
                           "animals solved ok (a value beyond the float range?); they are left out of endpoints.csv")
    return out
