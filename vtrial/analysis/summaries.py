"""Population summaries, vectorised over animals and streamed chunk by chunk.

Failed animals (status != ok) carry NaN observables and are left out of every
statistic; `n_animals` in each table counts the animals that entered it.

`SummaryAccumulator` builds the summary table chunk by chunk, so a population of any
size streams through: exactly while the values fit in memory, otherwise with exact
counts and means and quantiles from `vtrial.analysis.quantiles.QuantileSketch` (relative error
at most 0.1% by default).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from vtrial.analysis.quantiles import QuantileSketch

QUANTILES = {"p05": 5.0, "median": 50.0, "p95": 95.0}
#: Above this many values (animals x times x observables) summaries are streamed.
EXACT_LIMIT = 10_000_000


def _stats(values: np.ndarray, axis: int = 0) -> dict[str, np.ndarray]:
    """n, mean, median, 5th and 95th percentile along `axis`, ignoring NaN."""
    n = np.sum(np.isfinite(values), axis=axis)
    out = {"n_animals": n}
    with warnings.catch_warnings():  # all-NaN columns (every animal failed) give NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        out["mean"] = np.nanmean(values, axis=axis)
        q = _nan_percentiles(values, list(QUANTILES.values()), axis)
        for j, k in enumerate(QUANTILES):
            out[k] = q[j]
    return out


def _nan_percentiles(values: np.ndarray, qs: list[float], axis: int) -> np.ndarray:
    """`np.nanpercentile(values, qs, axis)`, fast where it can be: numpy's nan-aware
    version loops over columns in Python, so failed animals (whole NaN rows) are dropped
    first and the vectorised `np.percentile` is used when no NaN is left (same numbers)."""
    values = np.moveaxis(values, axis, 0)
    kept = values[~np.isnan(values).reshape(values.shape[0], -1).all(axis=1)]
    if kept.shape[0] and not np.isnan(kept).any():
        return np.percentile(kept, qs, axis=0)
    return np.nanpercentile(values, qs, axis=0)


def summary_table(arms: np.ndarray, times_h: np.ndarray, observables: dict[str, np.ndarray], arm_order: Sequence[str]) -> pd.DataFrame:
    """Per arm, time and observable: n_animals, mean, median, p05, p95 (long format)."""
    frames = []
    for arm in arm_order:
        rows = arms == arm
        for name, values in observables.items():
            st = _stats(values[rows], axis=0)
            frames.append(pd.DataFrame({"arm": arm, "time_h": times_h, "observable": name, **st}))
    return pd.concat(frames, ignore_index=True)


class SummaryAccumulator:
    """`summary_table`, fed chunk by chunk with `add` and read with `table`.

    - **exact** (when `n_animals x n_times x n_observables <= exact_limit`, default
      `EXACT_LIMIT`): the values
      are kept and `table()` equals `summary_table` of the whole population;
    - **sketch** (larger populations): `n_animals` and `mean` are exact (running counts
      and sums); `p05`, `median`, `p95` come from a `QuantileSketch`: each within
      `relative_accuracy` (default 1e-3) of the exact percentile, relative to the
      larger of the two order statistics it interpolates between. Memory depends on
      the spread of the values, not on the number of animals.
    """

    def __init__(
        self,
        arm_order: Sequence[str],
        times_h: np.ndarray,
        observables: Sequence[str],
        n_animals: int,
        *,
        exact_limit: int | None = None,
        relative_accuracy: float = 1e-3,
    ):
        exact_limit = EXACT_LIMIT if exact_limit is None else exact_limit
        self.arm_order, self.times_h, self.observables = list(arm_order), np.asarray(times_h, float), list(observables)
        n_cells = len(self.arm_order) * len(self.observables) * self.times_h.size
        self.exact = n_animals * len(self.observables) * self.times_h.size <= exact_limit
        self._kept: dict[int, list[dict[str, np.ndarray]]] = {a: [] for a in range(len(self.arm_order))}
        self._sketch = None if self.exact else QuantileSketch(n_cells, relative_accuracy)

    @property
    def method(self) -> str:
        if self.exact:
            return "exact"
        return f"sketch (relative error <= {self._sketch.relative_accuracy:g})"

    def add(self, arm_index: np.ndarray, observables: Mapping[str, np.ndarray]) -> None:
        """Add a chunk: `arm_index` `(m,)` indexes `arm_order`; `observables[name]` is `(m, n_times)`."""
        arm_index = np.asarray(arm_index)
        n_obs, n_times = len(self.observables), self.times_h.size
        for a in np.unique(arm_index):
            rows = arm_index == a
            if self.exact:
                self._kept[int(a)].append({name: np.array(observables[name][rows]) for name in self.observables})
                continue
            block = np.concatenate([observables[name][rows] for name in self.observables], axis=1)
            cells = ((int(a) * n_obs + np.arange(n_obs))[:, None] * n_times + np.arange(n_times)[None, :]).ravel()
            self._sketch.add(cells, block)

    def table(self) -> pd.DataFrame:
        """The summary table (columns and row order of `summary_table`)."""
        frames = []
        if not self.exact:
            n_times = self.times_h.size
            q = self._sketch.quantiles(list(QUANTILES.values()))
            mean, count = self._sketch.mean(), self._sketch.count
        for a, arm in enumerate(self.arm_order):
            for o, name in enumerate(self.observables):
                if self.exact:
                    parts = [c[name] for c in self._kept[a]]
                    values = np.concatenate(parts) if parts else np.full((0, self.times_h.size), np.nan)
                    st = _stats(values, axis=0)
                else:
                    cells = slice((a * len(self.observables) + o) * n_times, (a * len(self.observables) + o + 1) * n_times)
                    st = {"n_animals": count[cells], "mean": mean[cells], **{k: q[cells, j] for j, k in enumerate(QUANTILES)}}
                frames.append(pd.DataFrame({"arm": arm, "time_h": self.times_h, "observable": name, **st}))
        return pd.concat(frames, ignore_index=True)
