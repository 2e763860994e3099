"""Figures of study design: attainment against daily dose, and power against study size.

Both return matplotlib figures (save them with `vtrial.io.writers.save_figure`).
"""

from __future__ import annotations

import math

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
                # drawn above the star (zorder), large and open, so a search that lands on the grid's answer stays visible
                ax.plot([g["daily_dose_mg_per_kg"]], [next(iter(g["shares"].values()))], "o", mfc="none", mec=c, mew=1.8,
                        ms=13, zorder=5, label=None if len(s) else f"{shape} (gradient)")
    ax.axhline(target_pta, color="k", ls="--", lw=1, label=f"{target_label}: PTA {target_pta:g}")
    if chosen is not None:
        ax.plot([chosen["daily_dose_mg_per_kg"]], [chosen["pta"]], "*", color="k", ms=10, zorder=4,
                label=f"chosen: {chosen['regimen']}")
    ax.set_xscale("log")
    ax.set_xlabel("daily dose (mg/kg/day)")
    ax.set_ylabel("probability of target attainment")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3, which="both")
    # the legend goes beside the axes: inside, it covers the curves wherever they run
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    fig.subplots_adjust(right=0.68)
    if title:
        ax.set_title(title + "\nbands: Clopper-Pearson 95%; circles: gradient search; star: least drug meeting every requirement", fontsize=9)
    return fig


def plot_power(table: pd.DataFrame, target_power: float, *, title: str = "", alpha: float = 0.05, comparisons: int = 1):
    """Power against animals per arm, one line per test and comparison with
    Clopper-Pearson 95% error bars, and the target power as a dashed line; where a
    Mann-Whitney test cannot reach significance at all (`alpha` / `comparisons`, the level
    of Holm's or Bonferroni's first step), a note says why its power is 0.

    **Arguments:** `table`: `power.csv` (`n`, `test`, `comparison`, `power`, `ci_low`, `ci_high`)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, ((test, comparison), g) in enumerate(table.groupby(["test", "comparison"], sort=False)):
        ax.errorbar(g["n"], g["power"], yerr=[g["power"] - g["ci_low"], g["ci_high"] - g["power"]], marker="o", ms=4,
                    capsize=3, lw=1.4, label=f"{test}: {comparison}", color=plt.get_cmap("tab10")(i % 10))
    ax.axhline(target_power, color="k", ls="--", lw=1, label=f"target power {target_power:g}")
    # A two-sided Mann-Whitney test of n vs n animals has a smallest attainable p-value,
    # 2 / C(2n, n) (complete separation); where it is not below the level the first
    # comparison must pass (alpha / comparisons under Holm or Bonferroni), the test's
    # power is exactly 0 by construction: say so instead of leaving a line at 0 unexplained.
    level = alpha / comparisons
    ns = sorted(int(n) for n in table.loc[table["test"] == "mann_whitney", "n"].unique())
    floor = [n for n in ns if 2.0 / math.comb(2 * n, n) >= level]
    if floor:
        at = f"n = {floor[0]}" + (f"-{floor[-1]}" if len(floor) > 1 else "")
        # a caption under the axes, where it cannot cover a curve
        fig.text(0.02, 0.015, f"Mann-Whitney's power is 0 at {at} per arm by construction:\nits smallest two-sided "
                              f"p-value, 2 / C(2n, n) ({', '.join(f'{2.0 / math.comb(2 * n, n):.2g}' for n in floor)}), "
                              f"is not below {level:.3g}" + (f" (alpha {alpha:g} / {comparisons} comparisons)." if comparisons > 1 else "."),
                 fontsize=7.5)
        fig.subplots_adjust(bottom=0.2)
    ax.set_xlabel("animals per arm")
    ax.set_ylabel("power")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title + "\nerror bars: Clopper-Pearson 95% over the replicate studies", fontsize=9)
    return fig
