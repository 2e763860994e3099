"""Diagnostics of a population fit: goodness-of-fit panels and the visual predictive check.

- `plot_gof(predictions)`: DV against PRED and IPRED (identity line), CWRES against TIME
  and PRED (zero line), one row of panels per observable;
- `vpc_bins`, `vpc_table`: the VPC's numbers: per time bin, the observed 5th, 50th and
  95th percentiles and the simulated replicates' percentiles summarised as 90% prediction
  intervals (5th to 95th percentile over replicates) and medians;
- `plot_vpc(table)`: observed percentiles as lines over the simulated intervals as bands.

Figures are returned (save them with `vtrial.io.writers.save_figure`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _pyplot():
    """matplotlib's pyplot (non-interactive), imported when a figure is drawn: the VPC's
    numbers and a run without figures do not pay for importing matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

#: The percentiles a VPC compares (observed against simulated).
VPC_PERCENTILES = (5.0, 50.0, 95.0)
#: Up to this many distinct times, each time is its own bin.
VPC_MAX_BINS = 20


def plot_gof(predictions: pd.DataFrame, *, units: dict[str, str] | None = None, title: str = ""):
    """Goodness-of-fit panels from a fit's `predictions.csv` (columns `observable`, `TIME`,
    `DV`, `PRED`, `IPRED`, `CWRES`); `units`: each observable's DV unit (the dataset's, in
    which DV, PRED and IPRED are drawn) for the axes."""
    observables = list(dict.fromkeys(predictions["observable"]))
    fig, axes = _pyplot().subplots(len(observables), 4, figsize=(16, 3.8 * len(observables)), squeeze=False)
    for row, name in zip(axes, observables):
        p = predictions[predictions["observable"] == name]
        for ax, x, y, identity in ((row[0], "PRED", "DV", True), (row[1], "IPRED", "DV", True),
                                   (row[2], "TIME", "CWRES", False), (row[3], "PRED", "CWRES", False)):
            ax.scatter(p[x], p[y], s=6, alpha=0.45, color="tab:blue", lw=0)
            if identity:
                finite = np.concatenate([p[x].to_numpy(float), p[y].to_numpy(float)])
                finite = finite[np.isfinite(finite)]
                if finite.size:
                    lo, hi = float(finite.min()), float(finite.max())
                    ax.plot([lo, hi], [lo, hi], color="k", lw=1)
            else:
                ax.axhline(0.0, color="k", lw=1)
                for level in (-2.0, 2.0):
                    ax.axhline(level, color="k", lw=0.6, ls="--")
            unit = (units or {}).get(name)
            axis = {"TIME": "time (h)", "CWRES": "CWRES (SD units)"}
            ax.set_xlabel(axis.get(x, f"{x} ({unit})" if unit else x))
            ax.set_ylabel(axis.get(y, f"{y} ({unit})" if unit else y))
            ax.set_title(f"{name}, DV in {unit}: {y} vs {x}" if unit else f"{name}: {y} vs {x}", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def vpc_bins(times: np.ndarray, max_bins: int = VPC_MAX_BINS) -> np.ndarray:
    """Bin edges over observation times: each distinct time its own bin when there are at
    most `max_bins` of them, else bins holding about equal numbers of observations."""
    t = np.asarray(times, float)
    distinct = np.unique(t)
    if distinct.size <= max_bins:
        mids = (distinct[1:] + distinct[:-1]) / 2.0
        return np.concatenate([[distinct[0] - 1e-9], mids, [distinct[-1] + 1e-9]])
    edges = np.unique(np.quantile(t, np.linspace(0.0, 1.0, max_bins + 1)))
    edges[0], edges[-1] = edges[0] - 1e-9, edges[-1] + 1e-9
    return edges


def vpc_table(observable: np.ndarray, time: np.ndarray, dv: np.ndarray, simulated: np.ndarray,
              names: list[str] | tuple[str, ...], max_bins: int = VPC_MAX_BINS) -> pd.DataFrame:
    """The VPC's numbers, one row per observable, time bin and percentile.

    **Arguments:** per observation (flat arrays of equal length): `observable` (index into
    `names`), `time`, `dv`; `simulated`: `(n_replicates, n_observations)` simulated DVs
    of the same observations.

    **Returns:** columns `observable`, `bin`, `time` (median time of the bin's
    observations), `n`, `percentile`, `observed`, `sim_low`, `sim_median`, `sim_high`
    (the 5th, 50th, 95th percentiles over replicates of the simulated percentile)."""
    rows = []
    simulated = np.asarray(simulated, float)
    for j, name in enumerate(names):
        sel = np.flatnonzero(np.asarray(observable) == j)
        if sel.size == 0:
            continue
        t = np.asarray(time, float)[sel]
        edges = vpc_bins(t, max_bins)
        which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, edges.size - 2)
        for b in range(edges.size - 1):
            in_bin = which == b
            if not in_bin.any():
                continue
            obs = np.asarray(dv, float)[sel][in_bin]
            sims = simulated[:, sel][:, in_bin]
            for q in VPC_PERCENTILES:
                per_replicate = np.nanpercentile(sims, q, axis=1) if sims.size else np.array([np.nan])
                rows.append({
                    "observable": name, "bin": b, "time": float(np.median(t[in_bin])), "n": int(in_bin.sum()),
                    "percentile": q, "observed": float(np.percentile(obs, q)),
                    "sim_low": float(np.nanpercentile(per_replicate, 5)), "sim_median": float(np.nanpercentile(per_replicate, 50)),
                    "sim_high": float(np.nanpercentile(per_replicate, 95)),
                })
    return pd.DataFrame(rows, columns=["observable", "bin", "time", "n", "percentile", "observed", "sim_low", "sim_median",
                                       "sim_high"])


def plot_vpc(table: pd.DataFrame, *, points: pd.DataFrame | None = None, units: dict[str, str] | None = None,
             log_scale: bool = False, title: str = ""):
    """Observed 5th, 50th and 95th percentiles (lines) over the 90% intervals of the
    simulated ones (bands), one panel per observable; `points` (`observable`, `time`,
    `dv`) are drawn behind as dots."""
    observables = list(dict.fromkeys(table["observable"]))
    fig, axes = _pyplot().subplots(1, max(len(observables), 1), figsize=(7 * max(len(observables), 1), 5), squeeze=False)
    colours = {5.0: "tab:blue", 50.0: "tab:red", 95.0: "tab:blue"}
    for ax, name in zip(axes[0], observables):
        if points is not None:
            p = points[points["observable"] == name]
            ax.scatter(p["time"], p["dv"], s=5, color="0.6", alpha=0.5, lw=0, label="observed")
        for q in (5.0, 50.0, 95.0):
            s = table[(table["observable"] == name) & (table["percentile"] == q)].sort_values("time")
            c = colours[q]
            ax.fill_between(s["time"], s["sim_low"], s["sim_high"], color=c, alpha=0.18, lw=0,
                            label=f"simulated {q:g}th: 90% interval")
            ax.plot(s["time"], s["observed"], color=c, lw=1.8, ls="-" if q == 50.0 else "--", label=f"observed {q:g}th")
        if log_scale:
            ax.set_yscale("log")
        ax.set_xlabel("time (h)")
        unit = (units or {}).get(name, "")
        ax.set_ylabel(f"DV ({unit})" if unit else "DV")  # drawn in the dataset's DV unit, not the model's
        ax.set_title(f"VPC: {name}, DV in {unit}" if unit else f"VPC: {name}", fontsize=10)
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
