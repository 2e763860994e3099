r"""PBMC + LPS cytokine release with and without anakinra (model card, system 4).

The culture well (LPS signal, IL-1RI occupancy with exact depletion, IL-1β, IL-6 and
TNF-α with IL-1 feedback) and its assumptions are `vtrial.models.pbmc_well`; this module
draws donors (log-normal between-donor variability), lays out the conditions and the
concentration-response curve, adds immunoassay noise and summarises the read-outs. Each
sampling time is its own well (supernatant), so read-out errors are independent.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import pandas as pd

from vtrial.assays.common import config_keys, config_names, curve_table, fit_logistic4_scaled, fit_rows, goodness_of_fit_rows, measurement_noise, plot_curve, simulate_plate, value_row
from vtrial.assays.specs import PbmcSpec
from vtrial.estimation.curvefit import logistic4
from vtrial.estimation.least_squares import FitResult
from vtrial.models.binding import MW_KDA, receptor_nm
from vtrial.models.pbmc_well import CYTOKINES, pbmc_model
from vtrial.design.population import Population

LABELS = {"il1b": "IL-1β", "il6": "IL-6", "tnfa": "TNF-α"}

#: config name (PbmcParameters) -> model parameter name
MODEL_NAMES = {
    "il1b_kd_nm": "kd_l", "il1b_kon_per_nm_h": "kon_l", "ki_nm": "ki", "anakinra_kon_per_nm_h": "kon_i", "tau": "tau",
    "lps_ec50_pg_per_ml": "lps_ec50", "k_act_per_h": "k_act",
    "il1b_prod_pg_per_ml_h": "p_il1b", "il1b_amp": "a_il1b", "il1b_deg_per_h": "d_il1b",
    "il6_prod_pg_per_ml_h": "p_il6", "il6_amp": "a_il6", "il6_deg_per_h": "d_il6",
    "tnfa_prod_pg_per_ml_h": "p_tnfa", "tnfa_amp": "a_tnfa", "tnfa_deg_per_h": "d_tnfa",
    "basal_pg_per_ml_h": "basal",
}


#: model name -> config key, for messages
CONFIG_KEYS = config_names(MODEL_NAMES, "parameters", r_tot="parameters.cells_per_well", lps="conditions.lps_pg_per_ml",
                           i_tot="conditions.anakinra_nm")


def _typical(spec: PbmcSpec) -> dict[str, float]:
    p = spec.parameters
    out = {name: float(getattr(p, cfg)) for cfg, name in MODEL_NAMES.items()}
    out["r_tot"] = receptor_nm(p.cells_per_well, p.sites_per_cell, p.volume_ml)
    return out


def donors(spec: PbmcSpec, *, seed: int | None = None, typical: bool = False) -> pd.DataFrame:
    """Donor parameters: log-normal between-donor variability (`donor_cv`, fractions) around
    the config's values, keyed per donor (`vtrial.design.population.Population`). `typical`: one
    donor at the typical values."""
    with config_keys(CONFIG_KEYS):
        pop = Population.build(pbmc_model(), typical=_typical(spec),
                               cv_percent={MODEL_NAMES[k]: 100.0 * v for k, v in spec.donor_cv.items() if v > 0})
    if typical:
        draws = pop.typical_animals(1)
    else:
        draws = pop.sample(jax.random.fold_in(jax.random.PRNGKey(spec.seed if seed is None else seed), 7), spec.donors)
    frame = pd.DataFrame({k: np.asarray(v, float) for k, v in draws.items()})
    frame.insert(0, "donor", np.arange(len(frame)) + 1)
    return frame


@dataclass(frozen=True)
class PbmcResult:
    """Simulated PBMC cultures.

    - `wells`: long table, one row per well and time: `donor`, `condition`, `lps_pg_per_ml`,
      `anakinra_nM`, `time_h`, `<cytokine>_pg_per_ml` (observed), `expected_<cytokine>_pg_per_ml`,
      `il1r_occupancy`, `status`;
    - `curve`: the anakinra concentration-response wells (same columns, at `curve.time_h`),
      plus `<readout>_percent_of_control`: the read-out in % of the same donor's well
      without anakinra (so donor-to-donor scale does not swamp the curve);
    - `donors`: the donor parameters.
    """

    wells: pd.DataFrame
    curve: pd.DataFrame
    donors: pd.DataFrame


def simulate_pbmc(spec: PbmcSpec, *, seed: int | None = None, typical: bool = False, progress=None) -> PbmcResult:
    """Every donor x condition and every donor x curve concentration in one batched solve."""
    seed = spec.seed if seed is None else seed
    dn = donors(spec, seed=seed, typical=typical)
    n_d = len(dn)
    conds = [(c.name, c.lps_pg_per_ml, c.anakinra_nm) for c in spec.conditions]
    conds += [("curve", spec.curve.lps_pg_per_ml, c) for c in np.concatenate([[0.0], spec.curve.grid.concentrations_nm()])]
    n_c = len(conds)
    params = {k: np.tile(dn[k].to_numpy(), n_c) for k in pbmc_model().parameter_names if k not in ("lps", "i_tot")}
    params["lps"] = np.repeat([c[1] for c in conds], n_d)
    params["i_tot"] = np.repeat([c[2] for c in conds], n_d)
    times = np.unique(np.concatenate([np.arange(0.0, spec.duration_h + 1e-9, spec.output_every_h), spec.readout_times_h,
                                      [spec.curve.time_h, spec.duration_h]]))
    with config_keys(CONFIG_KEYS):
        sol = simulate_plate(pbmc_model(), params, times, progress=progress)
    # Wells whose solve failed keep their status and NaN values; the summaries leave them out.
    n_w, n_t = n_d * n_c, times.size
    frame = pd.DataFrame({
        "donor": np.repeat(np.tile(dn["donor"].to_numpy(), n_c), n_t),
        "condition": np.repeat(np.repeat([c[0] for c in conds], n_d), n_t),
        "lps_pg_per_ml": np.repeat(params["lps"], n_t),
        "anakinra_nM": np.repeat(params["i_tot"], n_t),
        "time_h": np.tile(times, n_w),
    })
    for j, c in enumerate(CYTOKINES):
        mean = sol.observables[f"{c}_pg_per_ml"]
        obs = mean if typical else measurement_noise(seed, mean, spec.noise.cv, spec.noise.sd_pg_per_ml, stream=10 + j)
        frame[f"{c}_pg_per_ml"] = np.asarray(obs).reshape(-1)
        frame[f"expected_{c}_pg_per_ml"] = mean.reshape(-1)
    frame["il1r_occupancy"] = sol.observables["il1r_occupancy"].reshape(-1)
    frame["status"] = np.repeat(sol.status_names, n_t)
    is_curve = frame["condition"] == "curve"
    curve = frame[is_curve & np.isclose(frame["time_h"], spec.curve.time_h)].reset_index(drop=True)
    col = f"{spec.curve.readout}_pg_per_ml"
    control = curve[curve["anakinra_nM"] == 0].set_index("donor")[col]
    curve = curve[curve["anakinra_nM"] > 0].reset_index(drop=True)
    curve[f"{spec.curve.readout}_percent_of_control"] = 100.0 * curve[col] / control.reindex(curve["donor"]).to_numpy()
    return PbmcResult(frame[~is_curve].reset_index(drop=True), curve, dn)


def readouts(spec: PbmcSpec, result: PbmcResult) -> pd.DataFrame:
    """Observed cytokines at the read-out times: one row per donor x condition x time."""
    w = result.wells
    keep = np.isin(np.round(w["time_h"], 9), np.round(spec.readout_times_h, 9))
    cols = ["donor", "condition", "lps_pg_per_ml", "anakinra_nM", "time_h"] + [f"{c}_pg_per_ml" for c in CYTOKINES]
    return w.loc[keep, cols].reset_index(drop=True)


def summarise_pbmc(spec: PbmcSpec, result: PbmcResult) -> pd.DataFrame:
    """Per condition x time x cytokine at the read-out times: median, min and max over donors;
    for the treated condition also the median % reduction versus the reference condition and
    the fraction of donors with a reduction of at least 20%."""
    r = readouts(spec, result)
    rows = []
    for (cond, t), g in r.groupby(["condition", "time_h"], sort=False):
        for c in CYTOKINES:
            v = g[f"{c}_pg_per_ml"].to_numpy()
            row = {"condition": cond, "time_h": t, "cytokine": c, "n_donors": v.size, "median_pg_per_ml": np.median(v),
                   "min_pg_per_ml": v.min(), "max_pg_per_ml": v.max(), "median_reduction_percent": np.nan,
                   "donors_reduced_20_percent": np.nan}
            if cond == spec.treated:
                ref = r[(r["condition"] == spec.reference) & np.isclose(r["time_h"], t)].set_index("donor")[f"{c}_pg_per_ml"]
                red = 100.0 * (1.0 - g.set_index("donor")[f"{c}_pg_per_ml"] / ref.reindex(g["donor"]).to_numpy())
                row["median_reduction_percent"] = float(np.median(red))
                row["donors_reduced_20_percent"] = float(np.mean(red >= 20.0))
            rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class PbmcCurveFit:
    """4PL fit of the anakinra concentration-response (`curve.readout` at `curve.time_h`,
    in % of each donor's control without anakinra)."""

    logistic: FitResult
    conc_nm: np.ndarray
    response: np.ndarray
    spec: PbmcSpec

    def table(self) -> pd.DataFrame:
        cv = self.spec.curve
        return curve_table([
            fit_rows(self.logistic, "4pl", units={"bottom": "%", "top": "%"},
                     notes={"ic50": f"anakinra on {cv.readout} at {cv.time_h:g} h, LPS {cv.lps_pg_per_ml:g} pg/mL"}),
            goodness_of_fit_rows(self.logistic, self.response, "%"),
            value_row("ki_model", self.spec.parameters.ki_nm, "nM", "model_parameter", "anakinra Ki assumed at human IL-1RI"),
        ])

    def figure(self, title: str):
        est = self.logistic.estimates
        pos = self.conc_nm[self.conc_nm > 0]
        grid = np.logspace(np.log10(pos.min()) - 0.3, np.log10(pos.max()) + 0.3, 200)
        curve = np.asarray(logistic4(grid, est["bottom"], est["top"], np.log10(est["ic50"]), est["hill"]))
        return plot_curve(self.conc_nm, self.response, {f"4PL: IC50 {est['ic50']:.3g} nM": (grid, curve)},
                          conc_label="anakinra (nM)", response_label=f"{self.spec.curve.readout} (% of control)", title=title,
                          ic50=est["ic50"])


def fit_pbmc_curve(spec: PbmcSpec, result: PbmcResult) -> PbmcCurveFit:
    conc = result.curve["anakinra_nM"].to_numpy()
    resp = result.curve[f"{spec.curve.readout}_percent_of_control"].to_numpy()
    return PbmcCurveFit(fit_logistic4_scaled(conc, resp, conc_unit="nM", response_unit="%"), conc, resp, spec)


def condition_label(condition) -> str:
    """A condition as a reader says it: "LPS 100 pg/mL + anakinra 500 ng/mL", "medium"."""
    parts = []
    if condition.lps_pg_per_ml > 0:
        parts.append(f"LPS {condition.lps_pg_per_ml:g} pg/mL")
    if condition.anakinra_nm > 0:
        parts.append(f"anakinra {condition.anakinra_nm * MW_KDA['anakinra']:.3g} ng/mL")
    return " + ".join(parts) or "medium"


def time_course_figure(spec: PbmcSpec, result: PbmcResult):
    """Observed time courses per condition, one panel per cytokine: the median over the
    donors (the one donor's with one), as the subtitle says."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), sharex=True)
    w = result.wells
    labels = {c.name: condition_label(c) for c in spec.conditions}
    for ax, c in zip(axes, CYTOKINES):
        for i, cond in enumerate(dict.fromkeys(w["condition"])):
            g = w[w["condition"] == cond].groupby("time_h")[f"{c}_pg_per_ml"].median()
            ax.plot(g.index, g.to_numpy(), marker="o", ms=3, color=f"C{i}", label=labels.get(cond, cond))
        for t in spec.readout_times_h:
            ax.axvline(t, color="0.7", lw=0.8, ls=":")
        ax.set_title(LABELS[c])
        ax.set_xlabel("time (h)")
        ax.set_ylabel("pg/mL")
    axes[0].legend(fontsize=8, frameon=False)
    n = w["donor"].nunique()
    shown = f"donor {w['donor'].iloc[0]} (the only one)" if n == 1 else f"median over {n} donors"
    fig.suptitle(f"{spec.title}\n{shown}; dotted lines: read-out times", fontsize=10)
    fig.tight_layout()
    return fig
