"""The trial report figure: per-arm median and 90% band of concentration and response."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from vtrial.models.base import Panel


def plot_trial_report(
    summary: pd.DataFrame,
    observations: pd.DataFrame,
    panels: Sequence[Panel],
    dosing_windows: dict[str, list[tuple[float, float]]],
    *,
    title: str = "",
    max_points_per_arm: int = 400,
    time_unit: str = "day",
):
    """The trial report figure (save it with `vtrial.io.writers.save_figure`).

    **Arguments:**
    - `summary`: the long summary table (arm, time_h, observable, median, p05, p95);
    - `observations`: noisy observations (arm, time_h, observable columns), drawn as points;
    - `panels`: the model's report panels (observable, axis label, log scale);
    - `dosing_windows`: per arm, (start_h, end_h) intervals shaded (bolus: a thin line);
    - `time_unit`: the time axis in "day" or "h".
    """
    arms = list(dict.fromkeys(summary["arm"]))
    import matplotlib  # here, not at import: the numbers of a run (and a run without figures) do not need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.4 * len(panels)), sharex=True, squeeze=False)
    scale = 24.0 if time_unit == "day" else 1.0
    for ax, panel in zip(axes[:, 0], panels):
        obs = panel.observable
        for i, arm in enumerate(arms):
            c = colours(i % 10)
            s = summary[(summary["arm"] == arm) & (summary["observable"] == obs)]
            days = s["time_h"].to_numpy() / scale
            ax.plot(days, s["median"], color=c, lw=1.8, label=arm)
            ax.fill_between(days, s["p05"], s["p95"], color=c, alpha=0.18, lw=0)
            if obs in observations.columns:
                o = observations[(observations["arm"] == arm) & observations[obs].notna()]
                if len(o) > max_points_per_arm:
                    o = o.sample(max_points_per_arm, random_state=0)
                ax.scatter(o["time_h"] / scale, o[obs], s=6, color=c, alpha=0.45, lw=0)
            for start, end in dosing_windows.get(arm, []):
                if end > start:
                    ax.axvspan(start / scale, end / scale, color=c, alpha=0.08, lw=0)
                else:
                    ax.axvline(start / scale, color=c, alpha=0.4, lw=0.8, ls=":")
        ax.set_ylabel(panel.label or obs)
        if panel.log_scale:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="best")
    axes[-1, 0].set_xlabel("time (days)" if time_unit == "day" else "time (h)")
    if title:
        points = "; points: simulated observations" if any(p.observable in observations.columns for p in panels) else ""
        axes[0, 0].set_title(title + f"\nlines: median; bands: 90% of animals{points}; shading: dosing")
    return fig


def dosing_windows(records_by_arm: dict[str, list[tuple]]) -> dict[str, list[tuple[float, float]]]:
    """(start, end) per dose record; records are `Regimen.records` tuples."""
    return {arm: [(r[0], r[0] + r[3]) for r in recs] for arm, recs in records_by_arm.items()}

