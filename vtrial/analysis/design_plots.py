"""Figures of study design: attainment against daily dose, and power against study size.

Both return matplotlib figures (save them with `vtrial.io.writers.save_figure`).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_attainment(table: pd.DataFrame, target_pta: float, *, chosen: dict | None = None, gradient: list[dict] | None = None,
                    title: str = "", target_label: str = "target"):
    """PTA against daily dose (mg/kg/day, log axis), one line per regimen shape with its
    Clopper-Pearson 95% band, the target as a dashed line, the chosen regimen as a star
    and the gradient search's dose per shape as an open circle.

    **Arguments:** `table`: `attainment.csv` (`shape`, `daily_dose_mg_per_kg`, `pta`,
    `pta_ci_low`, `pta_ci_high`); `gradient`: its `per_shape` entries."""
    fig, ax = plt.subplots(figsize=(9, 5.2))
    colours = plt.get_cmap("tab10")
    shapes = list(dict.fromkeys([*table["shape"], *(g["shape"] for g in gradient or [])]))
    for i, shape in enumerate(shapes):
        c = colours(i % 10)
        s = table[table["shape"] == shape]
        if len(s):
            ax.plot(s["daily_dose_mg_per_kg"], s["pta"], color=c, lw=1.6, label=shape)
            ax.fill_between(s["daily_dose_mg_per_kg"], s["pta_ci_low"], s["pta_ci_high"], color=c, alpha=0.15, lw=0)
        for g in gradient or []:
            if g["shape"] == shape and g.get("feasible") and g.get("daily_dose_mg_per_kg"):
                ax.plot([g["daily_dose_mg_per_kg"]], [next(iter(g["shares"].values()))], "o", mfc="none", color=c, ms=8,
                        label=None if len(s) else f"{shape} (gradient)")
    ax.axhline(target_pta, color="k", ls="--", lw=1, label=f"{target_label}: PTA {target_pta:g}")
    if chosen is not None:
        ax.plot([chosen["daily_dose_mg_per_kg"]], [chosen["pta"]], "*", color="k", ms=14, label=f"chosen: {chosen['regimen']}")
    ax.set_xscale("log")
    ax.set_xlabel("daily dose (mg/kg/day)")
    ax.set_ylabel("probability of target attainment")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    if title:
        ax.set_title(title + "\nbands: Clopper-Pearson 95%; circles: gradient search; star: least drug meeting every requirement", fontsize=9)
    return fig


def plot_power(table: pd.DataFrame, target_power: float, *, title: str = ""):
    """Power against animals per arm, one line per test and comparison with
    Clopper-Pearson 95% error bars, and the target power as a dashed line.

    **Arguments:** `table`: `power.csv` (`n`, `test`, `comparison`, `power`, `ci_low`, `ci_high`)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, ((test, comparison), g) in enumerate(table.groupby(["test", "comparison"], sort=False)):
        ax.errorbar(g["n"], g["power"], yerr=[g["power"] - g["ci_low"], g["ci_high"] - g["power"]], marker="o", ms=4,
                    capsize=3, lw=1.4, label=f"{test}: {comparison}", color=plt.get_cmap("tab10")(i % 10))
    ax.axhline(target_power, color="k", ls="--", lw=1, label=f"target power {target_power:g}")
    ax.set_xlabel("animals per arm")
    ax.set_ylabel("power")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title + "\nerror bars: Clopper-Pearson 95% over the replicate studies", fontsize=9)
    return fig
