r"""Mergeable quantiles with a bounded relative error, for summaries of populations too
large to hold.

Values of many groups ("cells", e.g. arm x time x observable) are counted in
logarithmic bins shared by every cell: a value $x \ne 0$ falls in bin
$i = \lceil \ln|x| / \ln\gamma \rceil$ of its sign, with $\gamma = 1 + \alpha$, so any
two values in one bin differ by a factor of at most $\gamma$. Each bin keeps its count
and the sum of its values. The estimate of the $k$-th smallest value of a cell is the
mean of the bin that holds it, which lies in the same bin, so

$$ |\hat x_{(k)} - x_{(k)}| \le \alpha\, |x_{(k)}| $$

for every order statistic (values with $|x| < 10^{-300}$ share one bin at zero, error
below $10^{-300}$). Quantiles interpolate linearly between the two order statistics
around $q(n-1)$, as `numpy.percentile` does, so their error is at most
$\alpha \max(|x_{(k)}|, |x_{(k+1)}|)$: relative $\alpha$ when both share a sign.

Memory grows with the number of occupied bins, not with the number of values: at most
about $\ln(\max/\min)/\alpha$ per cell (2,300 bins per decade spanned at
$\alpha = 10^{-3}$). Counts are integers, so the bins (and every quantile's bin) do
not depend on how the values were split into batches or in which order they came.
"""

from __future__ import annotations

import math

import numpy as np

#: Values smaller in magnitude than this are counted in the bin at zero.
TINY = 1e-300


class QuantileSketch:
    """Quantiles of `n_cells` groups of values, fed in batches with `add`.

    **Arguments:**
    - `n_cells`: the number of groups;
    - `relative_accuracy`: $\\alpha$ above (default 1e-3, i.e. 0.1%).
    """

    def __init__(self, n_cells: int, relative_accuracy: float = 1e-3):
        if not 0 < relative_accuracy < 1:
            raise ValueError(f"relative_accuracy must lie in (0, 1), got {relative_accuracy}")
        self.n_cells = int(n_cells)
        self.relative_accuracy = float(relative_accuracy)
        self._log_gamma = math.log1p(relative_accuracy)
        self._half = math.ceil(math.log(np.finfo(float).max) / self._log_gamma) + math.ceil(-math.log(TINY) / self._log_gamma) + 2
        self._width = 2 * self._half + 1  # codes -half..half per cell, 0 = the zero bin
        if self.n_cells * self._width >= 2**62:
            raise ValueError("too many cells for this accuracy")
        self.count = np.zeros(self.n_cells, np.int64)  # finite values per cell
        self.total = np.zeros(self.n_cells, np.float64)  # their sum
        self._keys = np.empty(0, np.int64)
        self._counts = np.empty(0, np.int64)
        self._sums = np.empty(0, np.float64)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_size = 0

    def _codes(self, x: np.ndarray) -> np.ndarray:
        """Bin codes ordered like the values: negative bins < 0 (zero bin) < positive bins."""
        mag = np.abs(x)
        small = mag < TINY
        mag[small] = 1.0
        np.log(mag, out=mag)
        mag /= self._log_gamma
        np.ceil(mag, out=mag)
        i = mag.astype(np.int64)
        del mag
        i += 1 - math.floor(math.log(TINY) / self._log_gamma)
        i[small] = 0
        np.negative(i, out=i, where=x < 0)
        return i

    def add(self, cells: np.ndarray, values: np.ndarray) -> None:
        """Count a block of values: `values[:, j]` (shape `(m, len(cells))`) belong to cell
        `cells[j]` (distinct); non-finite values are skipped."""
        cells = np.asarray(cells, np.int64).ravel()
        values = np.asarray(values, np.float64).reshape(-1, cells.size)
        if np.any(np.diff(cells) <= 0):
            by_cell = np.argsort(cells)
            cells, values = cells[by_cell], values[:, by_cell]
            if np.any(np.diff(cells) == 0):
                raise ValueError("cells of one block must be distinct")
        ok = np.isfinite(values)
        all_ok = bool(ok.all())
        self.count[cells] += ok.sum(axis=0)
        self.total[cells] += (values if all_ok else np.where(ok, values, 0.0)).sum(axis=0)
        if not ok.any():
            return
        codes = self._codes(values if all_ok else np.where(ok, values, 0.0))
        if all_ok:
            lo, hi = codes.min(axis=0), codes.max(axis=0)
        else:
            lo = np.where(ok, codes, np.iinfo(np.int64).max).min(axis=0)
            hi = np.where(ok, codes, np.iinfo(np.int64).min).max(axis=0)
        span = np.where(hi >= lo, hi - lo + 1, 1)
        # Cells whose values span few bins are counted with one bincount over their
        # concatenated bin ranges; cells spread wide are sorted column by column.
        dense = span <= 2 * values.shape[0] + 64
        if dense.any():
            self._merge(*self._dense_bins(cells[dense], values[:, dense], ok[:, dense], codes[:, dense], lo[dense], span[dense], all_ok))
        if not dense.all():
            self._merge(*self._sorted_bins(cells[~dense], values[:, ~dense], ok[:, ~dense], codes[:, ~dense]))

    def _dense_bins(self, cells, values, ok, codes, lo, span, all_ok):
        """Sorted (keys, counts, sums) of the occupied bins, by a bincount over bin ranges."""
        offset = np.cumsum(span) - span
        codes = codes - (lo - offset)[None, :]  # position in the concatenated ranges
        flat, weights = (codes.ravel(), values.ravel()) if all_ok else (codes[ok], values[ok])
        total = int(offset[-1] + span[-1])
        counts = np.bincount(flat, minlength=total)
        sums = np.bincount(flat, weights=weights, minlength=total)
        nz = np.flatnonzero(counts)
        c = np.searchsorted(offset, nz, side="right") - 1
        keys = cells[c] * self._width + (nz - offset[c] + lo[c] + self._half)
        return keys, counts[nz].astype(np.int64), sums[nz]

    def _sorted_bins(self, cells, values, ok, codes):
        """Sorted (keys, counts, sums) of the occupied bins, sorting each column."""
        order = np.argsort(np.where(ok, codes, self._half + 1), axis=0, kind="stable")
        keys = (np.take_along_axis(codes, order, axis=0) + self._half + cells[None, :] * self._width).T.ravel()
        vals = np.take_along_axis(values, order, axis=0).T.ravel()
        keep = np.take_along_axis(ok, order, axis=0).T.ravel()
        return _runs(keys[keep], vals[keep])

    def _merge(self, keys, counts, sums) -> None:
        """Add sorted, distinct bins: in place where the bin exists, else to `_pending`."""
        if self._keys.size:
            pos = np.minimum(np.searchsorted(self._keys, keys), self._keys.size - 1)
            found = self._keys[pos] == keys
            self._counts[pos[found]] += counts[found]
            self._sums[pos[found]] += sums[found]
            keys, counts, sums = keys[~found], counts[~found], sums[~found]
        if keys.size:
            self._pending.append((keys, counts, sums))
            self._pending_size += keys.size
            if self._pending_size > max(self._keys.size // 8, 1 << 16):
                self._compact()

    def _compact(self) -> None:
        """Insert the pending bins (none of which is in the main arrays) into the main arrays."""
        if not self._pending:
            return
        keys = np.concatenate([p[0] for p in self._pending])
        order = np.argsort(keys, kind="stable")
        keys, counts, sums = _runs(
            keys[order], np.concatenate([p[2] for p in self._pending])[order], np.concatenate([p[1] for p in self._pending])[order]
        )
        pos = np.searchsorted(self._keys, keys)
        self._keys = np.insert(self._keys, pos, keys)
        self._counts = np.insert(self._counts, pos, counts)
        self._sums = np.insert(self._sums, pos, sums)
        self._pending, self._pending_size = [], 0

    @property
    def n_bins(self) -> int:
        """Occupied bins (after merging what is pending)."""
        self._compact()
        return int(self._keys.size)

    def mean(self) -> np.ndarray:
        """Exact mean of each cell (NaN for an empty cell)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)

    def quantiles(self, q) -> np.ndarray:
        """Estimated percentiles `q` (0..100) of every cell: shape `(n_cells, len(q))`, NaN where empty."""
        self._compact()
        q = np.atleast_1d(np.asarray(q, dtype=float))
        out = np.full((self.n_cells, q.size), np.nan)
        if self._keys.size == 0:
            return out
        cum = np.cumsum(self._counts)
        first = np.searchsorted(self._keys, np.arange(self.n_cells, dtype=np.int64) * self._width, side="left")
        before = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0)
        n = self.count
        filled = n > 0
        values = self._sums / self._counts

        def order_statistic(rank):
            pos = np.searchsorted(cum, before + rank, side="right")
            return values[np.minimum(pos, values.size - 1)]

        for j, qj in enumerate(q):
            h = (n - 1) * (qj / 100.0)
            lo = np.floor(h).astype(np.int64)
            hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
            frac = h - lo
            x_lo, x_hi = order_statistic(lo), order_statistic(hi)
            out[:, j] = np.where(filled, x_lo + (x_hi - x_lo) * frac, np.nan)
        return out


def _runs(keys: np.ndarray, sums: np.ndarray, counts: np.ndarray | None = None):
    """Sorted `keys` with repeats -> (distinct keys, counts, sums), one entry per run."""
    if keys.size == 0:
        return keys, np.empty(0, np.int64), np.empty(0, np.float64)
    start = np.concatenate([[True], keys[1:] != keys[:-1]])
    run = np.cumsum(start) - 1
    n = np.bincount(run) if counts is None else np.bincount(run, weights=counts).astype(np.int64)
    return keys[start], n.astype(np.int64), np.bincount(run, weights=sums)
