"""Population summaries and trial endpoints, vectorised over animals.

Failed animals (status != ok) carry NaN observables and are left out of every
statistic; `n_animals` in each table counts the animals that entered it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

QUANTILES = {"p05": 5.0, "median": 50.0, "p95": 95.0}


def _stats(values: np.ndarray, axis: int = 0) -> dict[str, np.ndarray]:
    """n, mean, median, 5th and 95th percentile along `axis`, ignoring NaN."""
    n = np.sum(np.isfinite(values), axis=axis)
    out = {"n_animals": n}
    with warnings.catch_warnings():  # all-NaN columns (every animal failed) give NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        out["mean"] = np.nanmean(values, axis=axis)
        for k, q in QUANTILES.items():
            out[k] = np.nanpercentile(values, q, axis=axis)
    return out


def summary_table(arms: np.ndarray, times_h: np.ndarray, observables: dict[str, np.ndarray], arm_order: Sequence[str]) -> pd.DataFrame:
    """Per arm, time and observable: n_animals, mean, median, p05, p95 (long format)."""
    frames = []
    for arm in arm_order:
        rows = arms == arm
        for name, values in observables.items():
            st = _stats(values[rows], axis=0)
            frames.append(pd.DataFrame({"arm": arm, "time_h": times_h, "observable": name, **st}))
    return pd.concat(frames, ignore_index=True)


def _trapezoid(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.sum(0.5 * (y[:, 1:] + y[:, :-1]) * np.diff(t)[None, :], axis=1)


def animal_endpoints(
    times_h: np.ndarray, conc: np.ndarray, response: np.ndarray, window_h: tuple[float, float]
) -> dict[str, np.ndarray]:
    """Per-animal exposure and response metrics.

    - `cmax`, `tmax_h`: maximum concentration and its time over the simulated times;
    - `auc`: trapezoidal AUC of the concentration over all times (conc unit x h);
    - `response_auc_window`: trapezoidal AUC of the response inside `window_h`.
    The time grid must contain the window's ends (the trial config adds them).
    """
    in_window = (times_h >= window_h[0]) & (times_h <= window_h[1])
    with np.errstate(invalid="ignore"):
        cmax = np.max(conc, axis=1)
        tmax = times_h[np.argmax(np.where(np.isfinite(conc), conc, -np.inf), axis=1)]
    tmax = np.where(np.isfinite(cmax), tmax, np.nan)
    return {
        "cmax": cmax,
        "tmax_h": tmax,
        "auc": _trapezoid(conc, times_h),
        "response_auc_window": _trapezoid(response[:, in_window], times_h[in_window]),
    }


def endpoint_table(
    arms: np.ndarray,
    arm_order: Sequence[str],
    per_animal: dict[str, np.ndarray],
    reference_arm: str | None,
    units: dict[str, str],
) -> pd.DataFrame:
    """Per arm and endpoint: n_animals, mean, median and the 90% interval (p05, p95).

    Inhibition of the response relative to the reference arm is, per animal,
    `100 (1 - AUC_i / mean AUC_reference)` over the window.
    """
    metrics = dict(per_animal)
    if reference_arm is not None:
        ref = metrics["response_auc_window"][arms == reference_arm]
        ref_mean = np.nanmean(ref) if np.any(np.isfinite(ref)) else np.nan
        metrics["inhibition_pct"] = 100.0 * (1.0 - metrics["response_auc_window"] / ref_mean)
    rows = []
    for arm in arm_order:
        sel = arms == arm
        for name, values in metrics.items():
            st = _stats(values[sel][:, None], axis=0)
            rows.append({"arm": arm, "endpoint": name, "unit": units.get(name, ""), **{k: np.asarray(v).item() for k, v in st.items()}})
    return pd.DataFrame(rows)
