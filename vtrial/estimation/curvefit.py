"""Concentration-response fitting: four-parameter logistic, Cheng-Prusoff Ki, figure.

Reading such data from files is `vtrial.io.tables.load_concentration_response`.

The four-parameter logistic (4PL) for an inhibition curve,

$$y = \\mathrm{bottom} + \\frac{\\mathrm{top} - \\mathrm{bottom}}{1 + (c/\\mathrm{IC50})^{h}},$$

falls from `top` (at $c = 0$) to `bottom` when the Hill slope $h > 0$. It is fitted by
`vtrial.estimation.least_squares.fit_least_squares` with IC50 on the log scale, so the reported IC50
is positive and its 95% interval is asymmetric.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vtrial.errors import DataError  # noqa: E402  (re-exported: curvefit.DataError)
from vtrial.estimation.least_squares import FitResult, fit_least_squares  # noqa: E402

__all__ = ["DataError", "KiEstimate", "cheng_prusoff_ki", "curve_fit_figure", "fit_logistic4", "logistic4"]

LN10 = float(np.log(10.0))
MIN_DISTINCT_CONCENTRATIONS = 4  # one per 4PL parameter
#: Largest |value| the fit accepts: squares of larger values overflow float64.
MAX_MAGNITUDE = 1e150



# ---------------------------------------------------------------------------
# model


def logistic4(conc, bottom, top, log10_ic50, hill):
    """Four-parameter logistic response, safe at `conc == 0`.

    **Arguments:**

    - `conc`: concentration(s) >= 0, any shape, same unit as the IC50.
    - `bottom`, `top`: responses as $c \\to \\infty$ and at $c = 0$ (for `hill > 0`).
    - `log10_ic50`: $\\log_{10}$ IC50 (IC50 in the unit of `conc`).
    - `hill`: Hill slope (> 0: decreasing inhibition curve; < 0: increasing).

    **Returns:** the response, shape of `conc`. Written as
    `bottom + (top - bottom) * sigmoid(-hill * (ln c - ln IC50))`, with `c = 0` replaced
    by its limit (`top` if `hill > 0`, `bottom` if `hill < 0`, the midpoint if 0) through
    `jnp.where` on a safe argument, so values and gradients stay finite at `c = 0`.
    """
    conc = jnp.asarray(conc)
    positive = conc > 0
    log_conc = jnp.log(jnp.where(positive, conc, 1.0))
    fraction_top = jax.nn.sigmoid(-hill * (log_conc - log10_ic50 * LN10))
    at_zero = jnp.where(hill > 0, 1.0, jnp.where(hill < 0, 0.0, 0.5))
    return bottom + (top - bottom) * jnp.where(positive, fraction_top, at_zero)


def _logistic4_residuals(params, data):
    conc, response = data
    log10_ic50 = jnp.log(params["ic50"]) / LN10
    return response - logistic4(conc, params["bottom"], params["top"], log10_ic50, params["hill"])


def _starting_values(conc: np.ndarray, response: np.ndarray) -> dict[str, float]:
    """Data-driven start: bottom/top = min/max of the mean response per concentration,
    IC50 = log-linear interpolation at the midpoint crossing, Hill = +-1 by direction."""
    levels, inverse = np.unique(conc, return_inverse=True)
    means = np.bincount(inverse, weights=response) / np.bincount(inverse)
    bottom, top = float(means.min()), float(means.max())
    if top == bottom:
        top = bottom + 1.0
    pos = levels > 0
    x, y = np.log10(levels[pos]), means[pos]
    slope = np.polyfit(x, y, 1)[0] if x.size >= 2 else -1.0
    hill = 1.0 if slope <= 0 else -1.0
    mid = 0.5 * (bottom + top)
    log10_ic50 = float(np.median(x))
    crossing = np.flatnonzero((y[:-1] - mid) * (y[1:] - mid) <= 0)
    if crossing.size:
        i = crossing[0]
        w = 0.0 if y[i + 1] == y[i] else (mid - y[i]) / (y[i + 1] - y[i])
        log10_ic50 = float(x[i] + w * (x[i + 1] - x[i]))
    return {"bottom": bottom, "top": top, "ic50": 10.0**log10_ic50, "hill": hill}


def fit_logistic4(conc, response, *, conc_unit: str = "nM", response_unit: str = "",
                  steps: int = 500, tol: float = 1e-9) -> FitResult:
    """Fit the four-parameter logistic by least squares.

    **Arguments:**

    - `conc`: 1-D concentrations >= 0 (replicates repeat a concentration), unit `conc_unit`.
    - `response`: 1-D responses, same length.
    - `conc_unit`, `response_unit`: units reported by `FitResult.to_frame()`.
    - `steps`, `tol`: passed to `fit_least_squares`.

    **Returns:** a `FitResult` with parameters `bottom, top, ic50, hill`; `ic50` is
    estimated on the log scale and reported in `conc_unit` with an asymmetric 95%
    interval. The compiled fit is reused for every data set of the same length.

    **Raises:** `DataError` for mismatched lengths, non-finite or negative values, or
    fewer than 4 distinct concentrations.
    """
    conc = np.asarray(conc, dtype=float).ravel()
    response = np.asarray(response, dtype=float).ravel()
    check_curve_data(conc, response)
    fit = fit_least_squares(
        _logistic4_residuals,
        _starting_values(conc, response),
        data=(conc, response),
        transforms={"ic50": "log"},
        steps=steps,
        tol=tol,
        units={"bottom": response_unit, "top": response_unit, "ic50": conc_unit, "hill": "1"},
    )
    tested = conc[conc > 0]
    ic50 = fit.estimates["ic50"]
    if tested.size and not tested.min() <= ic50 <= tested.max():
        note = (f"IC50 {ic50:.3g} {conc_unit} lies outside the tested concentrations "
                f"({tested.min():.3g}-{tested.max():.3g} {conc_unit}); it is an extrapolation.")
        fit = dataclasses.replace(fit, warnings=fit.warnings + (note,))
    return fit


def check_curve_data(conc: np.ndarray, response: np.ndarray) -> None:
    """Concentration-response data a 4PL can be fitted to, else a `DataError` naming the value."""
    if conc.shape != response.shape:
        raise DataError(f"conc has {conc.size} values but response has {response.size}; give one response per concentration.")
    for name, values in (("conc", conc), ("response", response)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise DataError(f"{name} value {bad[0] + 1} (1-based) is not finite ({values[bad[0]]}); remove or correct it.")
    if np.any(conc < 0):
        i = int(np.flatnonzero(conc < 0)[0])
        raise DataError(f"conc value {i + 1} (1-based) is negative ({conc[i]}); concentrations must be >= 0.")
    n_levels = np.unique(conc).size
    if n_levels < MIN_DISTINCT_CONCENTRATIONS:
        raise DataError(f"only {n_levels} distinct concentrations; the 4-parameter logistic needs at least "
                        f"{MIN_DISTINCT_CONCENTRATIONS}. Add concentrations to the series.")
    for name, values in (("conc", conc), ("response", response)):
        big = np.flatnonzero(np.abs(values) > MAX_MAGNITUDE)
        if big.size:
            raise DataError(f"{name} value {big[0] + 1} (1-based) is {values[big[0]]:.3g}: beyond {MAX_MAGNITUDE:g}, the fit's "
                            "sums of squares overflow; give the values in a larger unit (e.g. thousands).")
    if np.ptp(response) <= 1e-12 * np.max(np.abs(response), initial=0.0):
        raise DataError(f"every response is {response[0]:.6g}: a flat line has no IC50 or Hill slope to estimate; "
                        "check the response column.")


# ---------------------------------------------------------------------------
# Cheng-Prusoff


@dataclasses.dataclass(frozen=True)
class KiEstimate:
    """Ki from an IC50 by Cheng-Prusoff: `ki`, its delta-method `se`, the 95% interval
    `ci_low`/`ci_high` (the IC50 interval divided by `factor`), and
    `factor = 1 + L/KD` (all concentrations in the IC50's unit)."""

    ki: float
    se: float
    ci_low: float
    ci_high: float
    factor: float


def cheng_prusoff_ki(ic50: float | FitResult, ligand_conc: float, kd_ligand: float, *,
                     ic50_se: float = float("nan"),
                     ic50_ci: tuple[float, float] = (float("nan"), float("nan"))) -> KiEstimate:
    """Competitive-antagonist Ki from an IC50: $K_i = \\mathrm{IC50} / (1 + L/K_D)$.

    **Arguments:**

    - `ic50`: the IC50, or a `FitResult` with an `ic50` parameter (its SE and 95%
      interval are then used).
    - `ligand_conc`: free labelled-ligand (or agonist) concentration L, same unit as KD.
    - `kd_ligand`: KD of that ligand (> 0).
    - `ic50_se`, `ic50_ci`: SE and interval when `ic50` is a number.

    **Returns:** a `KiEstimate`. L and KD are treated as known constants, so the SE is
    `se(IC50) / factor` (delta method) and the interval is the IC50 interval / factor.
    """
    if isinstance(ic50, FitResult):
        ic50_se = ic50.se["ic50"]
        ic50_ci = (ic50.ci_low["ic50"], ic50.ci_high["ic50"])
        ic50 = ic50.estimates["ic50"]
    if not kd_ligand > 0:
        raise ValueError(f"kd_ligand must be > 0, got {kd_ligand}.")
    if not ligand_conc >= 0:
        raise ValueError(f"ligand_conc must be >= 0, got {ligand_conc}.")
    factor = 1.0 + ligand_conc / kd_ligand
    return KiEstimate(ki=ic50 / factor, se=ic50_se / factor, ci_low=ic50_ci[0] / factor,
                      ci_high=ic50_ci[1] / factor, factor=factor)


# ---------------------------------------------------------------------------
# plot


def curve_fit_figure(conc, response, fit: FitResult, *, conc_unit: str, title: str = "Concentration-response fit"):
    """Data and fitted 4PL curve on a log concentration axis (a matplotlib figure; save it
    with `vtrial.io.writers.save_figure`).

    **Arguments:**

    - `conc`, `response`: the data (1-D, same length); zero concentrations are drawn at
      the left edge of the axis with an open marker and a note.
    - `fit`: a `FitResult` from `fit_logistic4`.
    - `conc_unit`, `title`: axis label unit and title.

    **Returns:** the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conc = np.asarray(conc, dtype=float).ravel()
    response = np.asarray(response, dtype=float).ravel()
    est = fit.estimates
    pos = conc > 0
    lo = conc[pos].min() if pos.any() else est["ic50"] / 100
    hi = conc[pos].max() if pos.any() else est["ic50"] * 100
    lo, hi = min(lo, est["ic50"]), max(hi, est["ic50"])
    zero_x = lo / 10 ** 0.75
    grid = np.logspace(np.log10(lo) - 0.25, np.log10(hi) + 0.25, 200)
    curve = np.asarray(logistic4(grid, est["bottom"], est["top"], np.log10(est["ic50"]), est["hill"]))

    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.scatter(conc[pos], response[pos], s=22, color="C0", label="data", zorder=3)
    if (~pos).any():
        ax.scatter(np.full((~pos).sum(), zero_x), response[~pos], s=30, facecolors="none",
                   edgecolors="C0", marker="s", zorder=3, label=f"conc = 0 (drawn at {zero_x:.3g})")
    ax.plot(grid, curve, color="C1", label="4PL fit")
    ic50, ci = est["ic50"], (fit.ci_low["ic50"], fit.ci_high["ic50"])
    if np.all(np.isfinite(ci)):
        ax.axvspan(ci[0], ci[1], color="C1", alpha=0.12, label="IC50 95% CI")
    ax.axvline(ic50, color="C1", ls="--", lw=1)
    mid = 0.5 * (est["bottom"] + est["top"])
    ax.plot([ic50], [mid], marker="D", color="C3", zorder=4,
            label=f"IC50 = {ic50:.3g} {conc_unit} (h = {est['hill']:.2f})")
    ax.set_xscale("log")
    ax.set_xlim(zero_x / 10 ** 0.25, hi * 10 ** 0.35)
    ax.set_xlabel(f"concentration ({conc_unit})")
    response_unit = fit.units.get("bottom", "")
    ax.set_ylabel(f"response ({response_unit})" if response_unit else "response")
    ax.set_title(title)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
