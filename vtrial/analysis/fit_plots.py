"""Diagnostics of a population fit: goodness-of-fit panels and the visual predictive check.

- `plot_gof(predictions)`: DV against PRED and IPRED (identity line), CWRES against TIME
  and PRED (zero line), one row of panels per observable; censored rows (`CENS` != 0, DV
  their limit, no residual) are marked apart;
- `vpc_bins`, `vpc_table`: the VPC's numbers: per time bin, the observed 5th, 50th and
  95th percentiles and the simulated replicates' percentiles summarised as 90% prediction
  intervals (5th to 95th percentile over replicates) and medians; with censored
  observations, the share below the LLOQ per bin, observed and simulated;
- `plot_vpc(table)`: observed percentiles as lines over the simulated intervals as bands
  (and the share below the LLOQ in a second row of panels).

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
        censored = p["CENS"].to_numpy() != 0 if "CENS" in p else np.zeros(len(p), bool)
        for ax, x, y, identity in ((row[0], "PRED", "DV", True), (row[1], "IPRED", "DV", True),
                                   (row[2], "TIME", "CWRES", False), (row[3], "PRED", "CWRES", False)):
            ax.scatter(p[x][~censored], p[y][~censored], s=6, alpha=0.45, color="tab:blue", lw=0)
            if censored.any() and identity:  # DV is the limit: marked, not a measurement
                ax.scatter(p[x][censored], p[y][censored], s=14, color="tab:red", marker="x", lw=0.8,
                           label=f"censored ({int(censored.sum())}): DV = limit")
                ax.legend(fontsize=7, loc="best")
            elif censored.any():
                ax.text(0.01, 0.99, f"{int(censored.sum())} censored rows: no CWRES", transform=ax.transAxes, fontsize=7,
                        va="top", color="tab:red")
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
              names: list[str] | tuple[str, ...], max_bins: int = VPC_MAX_BINS, cens: np.ndarray | None = None) -> pd.DataFrame:
    """The VPC's numbers, one row per observable, time bin and percentile.

    **Arguments:** per observation (flat arrays of equal length): `observable` (index into
    `names`), `time`, `dv`; `simulated`: `(n_replicates, n_observations)` simulated DVs
    of the same observations; `cens`: 1 below a lower limit (`dv` is the limit), -1 above
    an upper one, 0 quantified (None: nothing censored).

    **Returns:** columns `observable`, `bin`, `time` (median time of the bin's
    observations), `n`, `percentile`, `observed`, `sim_low`, `sim_median`, `sim_high`
    (the 5th, 50th, 95th percentiles over replicates of the simulated percentile).

    With censored observations (as the `vpc` tools show them): a simulated observation is
    censored as the data are, below the observable's LLOQ (the largest lower limit of its
    censored rows) or above its upper limit (the smallest); a percentile, observed or
    simulated, that falls among censored values is missing (NaN). Added columns: `lloq`,
    and the share of the bin's observations below it: `blq_observed` and, over the
    replicates, `blq_sim_low`, `blq_sim_median`, `blq_sim_high` (5th, 50th, 95th
    percentiles)."""
    rows = []
    simulated = np.asarray(simulated, float)
    cens = None if cens is None or not np.any(np.asarray(cens) != 0) else np.asarray(cens)
    # A percentile of the replicates' percentiles (with censoring, NaN ones left out).
    summary = (lambda v, q: float(np.nanpercentile(v, q))) if cens is None else _nan_percentile
    for j, name in enumerate(names):
        sel = np.flatnonzero(np.asarray(observable) == j)
        if sel.size == 0:
            continue
        t = np.asarray(time, float)[sel]
        edges = vpc_bins(t, max_bins)
        which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, edges.size - 2)
        if cens is not None:
            c, d = cens[sel], np.asarray(dv, float)[sel]
            lloq = float(np.max(d[c == 1])) if np.any(c == 1) else -np.inf
            uloq = float(np.min(d[c == -1])) if np.any(c == -1) else np.inf
        for b in range(edges.size - 1):
            in_bin = which == b
            if not in_bin.any():
                continue
            obs = np.asarray(dv, float)[sel][in_bin]
            sims = simulated[:, sel][:, in_bin]
            extra = {}
            if cens is not None:
                obs = np.where(c[in_bin] == 1, -np.inf, np.where(c[in_bin] == -1, np.inf, obs))
                sims = np.where(sims < lloq, -np.inf, np.where(sims > uloq, np.inf, sims))
                if np.isfinite(lloq):
                    share = np.mean(sims == -np.inf, axis=1)
                    extra = {"lloq": lloq, "blq_observed": float(np.mean(obs == -np.inf)),
                             "blq_sim_low": float(np.percentile(share, 5)), "blq_sim_median": float(np.percentile(share, 50)),
                             "blq_sim_high": float(np.percentile(share, 95))}
            if cens is None and sims.size:
                # Every percentile of every replicate at once; numpy's nanpercentile goes
                # row by row in Python, so it is kept for rows that have a NaN (a failed solve).
                by_replicate = (np.nanpercentile if np.isnan(sims).any() else np.percentile)(sims, VPC_PERCENTILES, axis=1)
            for k, q in enumerate(VPC_PERCENTILES):
                if cens is None:
                    observed = float(np.percentile(obs, q))
                    per_replicate = by_replicate[k] if sims.size else np.array([np.nan])
                else:
                    observed = float(_censored_percentile(obs[None], q)[0])
                    per_replicate = _censored_percentile(sims, q) if sims.size else np.array([np.nan])
                rows.append({
                    "observable": name, "bin": b, "time": float(np.median(t[in_bin])), "n": int(in_bin.sum()),
                    "percentile": q, "observed": observed,
                    "sim_low": summary(per_replicate, 5), "sim_median": summary(per_replicate, 50),
                    "sim_high": summary(per_replicate, 95), **extra,
                })
    columns = ["observable", "bin", "time", "n", "percentile", "observed", "sim_low", "sim_median", "sim_high"]
    if any("lloq" in r for r in rows):
        columns += ["lloq", "blq_observed", "blq_sim_low", "blq_sim_median", "blq_sim_high"]
    return pd.DataFrame(rows, columns=columns)


def _nan_percentile(values: np.ndarray, q: float) -> float:
    """The percentile of the finite values (NaN when there are none)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.percentile(v, q)) if v.size else float("nan")


def _censored_percentile(values: np.ndarray, q: float) -> np.ndarray:
    """Per row of `values` (censored entries as -inf / +inf), the `q`th percentile by
    linear interpolation (numpy's default), NaN when it needs a censored value."""
    x = np.sort(values, axis=1)
    h = (x.shape[1] - 1) * q / 100.0
    lo, hi = int(np.floor(h)), int(np.ceil(h))
    a, b = x[:, lo], x[:, hi]
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = np.where(ok, a, 0.0), np.where(ok, b, 0.0)
    return np.where(ok, a + (h - lo) * (b - a), np.nan)


def plot_vpc(table: pd.DataFrame, *, points: pd.DataFrame | None = None, units: dict[str, str] | None = None,
             log_scale: bool = False, title: str = ""):
    """Observed 5th, 50th and 95th percentiles (lines) over the 90% intervals of the
    simulated ones (bands), one panel per observable; `points` (`observable`, `time`,
    `dv`, optional `cens`) are drawn behind as dots (censored ones as crosses at their
    limit). A table with `blq_observed` (censored data) adds a row of panels: the share
    below the LLOQ per bin, observed against the simulated 90% interval."""
    observables = list(dict.fromkeys(table["observable"]))
    blq = "blq_observed" in table
    n = max(len(observables), 1)
    fig, axes = _pyplot().subplots(2 if blq else 1, n, figsize=(7 * n, 8.5 if blq else 5), squeeze=False)
    colours = {5.0: "tab:blue", 50.0: "tab:red", 95.0: "tab:blue"}
    for k, (ax, name) in enumerate(zip(axes[0], observables)):
        if points is not None:
            p = points[points["observable"] == name]
            censored = p["cens"].to_numpy() != 0 if "cens" in p else np.zeros(len(p), bool)
            ax.scatter(p["time"][~censored], p["dv"][~censored], s=5, color="0.6", alpha=0.5, lw=0, label="observed")
            if censored.any():
                ax.scatter(p["time"][censored], p["dv"][censored], s=10, color="0.4", marker="x", lw=0.6,
                           label="censored (at the limit)")
        for q in (5.0, 50.0, 95.0):
            s = table[(table["observable"] == name) & (table["percentile"] == q)].sort_values("time")
            c = colours[q]
            ax.fill_between(s["time"], s["sim_low"], s["sim_high"], color=c, alpha=0.18, lw=0,
                            label=f"simulated {q:g}th: 90% interval")
            ax.plot(s["time"], s["observed"], color=c, lw=1.8, ls="-" if q == 50.0 else "--", label=f"observed {q:g}th")
        rows = table[(table["observable"] == name) & (table["percentile"] == 50.0)].sort_values("time")
        if blq and np.isfinite(rows["lloq"].to_numpy(float)).any():
            lloq = float(np.nanmax(rows["lloq"].to_numpy(float)))
            ax.axhline(lloq, color="k", lw=0.8, ls=":", label=f"LLOQ {lloq:g}")
            share = axes[1][k]
            share.fill_between(rows["time"], 100 * rows["blq_sim_low"], 100 * rows["blq_sim_high"], color="tab:red",
                               alpha=0.18, lw=0, label="simulated: 90% interval")
            share.plot(rows["time"], 100 * rows["blq_sim_median"], color="tab:red", lw=1, ls="--", label="simulated median")
            share.plot(rows["time"], 100 * rows["blq_observed"], color="k", lw=1.8, label="observed")
            share.set_xlabel("time (h)")
            share.set_ylabel("below LLOQ (% of the bin)")
            share.set_ylim(-2, 102)
            share.set_title(f"VPC: {name}, share below the LLOQ", fontsize=10)
            share.legend(fontsize=7, loc="best")
        elif blq:
            axes[1][k].set_axis_off()
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
