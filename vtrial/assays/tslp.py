r"""CAF TSLP neutralisation (card CAF-1, 5a): stimuli x anakinra grid, an IC50 per stimulus.

Primary cancer-associated fibroblasts (one culture per donor) are stimulated for 48 h by
each stimulus of the config (medium, tumour-cell supernatant, rhIL-1β, rhTNF-α,
supernatant + TNF-α), each across an anakinra grid (plus no anakinra), and TSLP is read
by ELISA. The well is `vtrial.models.caf_tslp_well`; every well of every donor is solved
in one batched call (`vtrial.assays.common.simulate_plate`).

Per stimulus that contains IL-1 a four-parameter logistic is fitted to TSLP against
anakinra (ng/mL; every donor and replicate pooled) and its IC50 is compared with the
link's closed form $K_I (1 + l)(1 + \tau\rho_0)$, $l = L/K_L$, $\rho_0 = l/(1+l)$
(`vtrial.models.il1_link.il1_ic50`), which the model obeys exactly: the TSLP made because
of IL-1 is proportional to the signal $E$, and $E(c)/E(0)$ is a Hill-1 curve with that
midpoint. So the IC50 moves right with the IL-1 level of the stimulus. A stimulus without
IL-1 has no curve to fit; its TSLP does not depend on anakinra.

Each donor x stimulus also gets a noise-free "full block" well (`il1r_ko = 1`: no IL-1
signal), the floor of the IL-1-driven TSLP, so the share of the IL-1 excess that the
reference concentration removes is `(top - reference) / (top - block)`.

Assumptions (besides the card's): donors differ log-normally in the parameters named in
`donor_cv` (card: `s_il` and `k_sec`, 40%); replicate wells share their donor's
parameters and differ by ELISA error only (`measurement_noise`, proportional 12% +
5 pg/mL); the 4PL is fitted to the pooled absolute TSLP, which for noise-free data
recovers the closed form exactly because every donor's curve is affine in $E(c)/E(0)$.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import pandas as pd

from vtrial.assays.common import config_keys, config_names, curve_table, fit_logistic4_scaled, fit_rows, goodness_of_fit_rows, measurement_noise, simulate_plate, value_row
from vtrial.assays.tslp_specs import MODEL_NAMES, TslpSpec, ng_per_ml_to_nm
from vtrial.design.population import Population
from vtrial.estimation.curvefit import logistic4
from vtrial.estimation.least_squares import FitResult
from vtrial.models.caf_tslp_well import caf_tslp_well
from vtrial.models.il1_link import ANAKINRA_MW_KDA, agonist_ratio, il1_ic50

CONC = "anakinra_ng_per_ml"
RESPONSE = "tslp_pg_per_ml"


def closed_form_ic50_ng_per_ml(spec: TslpSpec, il1_nm: float) -> float:
    """The link's IC50 for IL-1 `il1_nm` (nM), in ng/mL of anakinra (17.3 kDa)."""
    p = spec.parameters
    return float(il1_ic50(p.ki_nm, agonist_ratio(il1_nm, p.kl_nm), p.tau)) * ANAKINRA_MW_KDA


def concentrations_ng_per_ml(spec: TslpSpec) -> np.ndarray:
    """0, the grid, and the reference concentration (replacing a grid point equal to it)."""
    grid = spec.grid.concentrations_ng_per_ml()
    same = np.isclose(grid, spec.reference_ng_per_ml, rtol=1e-9)
    grid = np.where(same, spec.reference_ng_per_ml, grid)
    return np.unique(np.concatenate([[0.0], grid, [spec.reference_ng_per_ml]]))


def donors(spec: TslpSpec, *, seed: int, typical: bool) -> pd.DataFrame:
    """One row per donor: the well model's parameters, log-normal around the config's values
    (`donor_cv`, keyed per donor by `vtrial.design.population.Population`); `typical`: one
    donor at the config's values."""
    values = {MODEL_NAMES[k]: float(v) for k, v in spec.parameters.model_dump().items()}
    with config_keys(config_names(MODEL_NAMES, "parameters")):
        pop = Population.build(caf_tslp_well(), typical=values,
                               cv_percent={MODEL_NAMES[k]: 100.0 * v for k, v in spec.donor_cv.items() if v > 0})
    draws = pop.typical_animals(1) if typical else pop.sample(jax.random.fold_in(jax.random.PRNGKey(seed), 7), spec.donors)
    frame = pd.DataFrame({k: np.asarray(draws[k], float) for k in MODEL_NAMES.values()})
    frame.insert(0, "donor", np.arange(len(frame)) + 1)
    return frame


@dataclass(frozen=True)
class TslpPlate:
    """A simulated TSLP plate.

    - `wells`: one row per well: `well`, `donor`, `stimulus`, `replicate`,
      `anakinra_ng_per_ml`, `anakinra_nM`, `tslp_pg_per_ml` (observed),
      `expected_tslp_pg_per_ml`, `tslp_mrna_fold`, `il1_signal`, `status`;
    - `blocks`: per donor and stimulus, the noise-free TSLP with IL-1 signalling fully
      blocked (`block_tslp_pg_per_ml`);
    - `donors`: the donor parameters.
    """

    wells: pd.DataFrame
    blocks: pd.DataFrame
    donors: pd.DataFrame


def simulate_tslp(spec: TslpSpec, *, seed: int | None = None, typical: bool = False, progress=None) -> TslpPlate:
    """Every donor x stimulus x concentration (and each full-block well) in one batched solve.

    `typical=True`: the typical donor, one noise-free well per concentration.
    """
    seed = spec.seed if seed is None else seed
    dn = donors(spec, seed=seed, typical=typical)
    conc = concentrations_ng_per_ml(spec)
    stim = spec.stimuli
    # unique wells: donor (slowest) x stimulus x concentration, then the block wells
    n_d, n_s, n_c = len(dn), len(stim), conc.size
    d_idx = np.repeat(np.arange(n_d), n_s * n_c)
    s_idx = np.tile(np.repeat(np.arange(n_s), n_c), n_d)
    c_val = np.tile(conc, n_d * n_s)
    bd, bs = np.repeat(np.arange(n_d), n_s), np.tile(np.arange(n_s), n_d)
    all_d, all_s = np.concatenate([d_idx, bd]), np.concatenate([s_idx, bs])
    params = {k: dn[k].to_numpy()[all_d] for k in MODEL_NAMES.values()}
    params["il1_nm"] = np.array([s.il1_nm for s in stim])[all_s]
    params["tnf_nm"] = np.array([s.tnf_nm for s in stim])[all_s]
    params["anakinra_nm"] = ng_per_ml_to_nm(np.concatenate([c_val, np.zeros(bd.size)]))
    params["il1r_ko"] = np.concatenate([np.zeros(c_val.size), np.ones(bd.size)])
    sol = simulate_plate(caf_tslp_well(), params, [spec.incubation_h], progress=progress)
    # Wells whose solve failed keep their status and NaN values; fits leave them out.
    obs = {k: v[:, 0] for k, v in sol.observables.items()}
    m = c_val.size
    reps = 1 if typical else spec.replicates
    row = np.repeat(np.arange(m), reps)  # replicate wells of one unique well
    expected = obs["tslp_pg_per_ml"][:m][row]
    observed = expected if typical else measurement_noise(seed, expected, spec.noise.cv, spec.noise.sd_pg_per_ml, stream=20)
    names = np.array([s.name for s in stim])
    wells = pd.DataFrame({
        "well": np.arange(row.size),
        "donor": dn["donor"].to_numpy()[d_idx][row],
        "stimulus": names[s_idx][row],
        "replicate": np.tile(np.arange(reps), m) + 1,
        CONC: c_val[row],
        "anakinra_nM": ng_per_ml_to_nm(c_val[row]),
        RESPONSE: observed,
        f"expected_{RESPONSE}": expected,
        "tslp_mrna_fold": obs["tslp_mrna_fold"][:m][row],
        "il1_signal": obs["il1_signal"][:m][row],
        "status": sol.status_names[:m][row],
    })
    blocks = pd.DataFrame({"donor": dn["donor"].to_numpy()[bd], "stimulus": names[bs], "block_tslp_pg_per_ml": obs["tslp_pg_per_ml"][m:]})
    return TslpPlate(wells, blocks, dn)


def summarise_tslp(spec: TslpSpec, plate: TslpPlate) -> pd.DataFrame:
    """Per stimulus and concentration: wells, mean and SD of TSLP, expected TSLP, and the
    % of the IL-1-driven TSLP removed, `100 (top - expected) / (top - block)` (NaN for a
    stimulus without IL-1), with `top` the stimulus's expected TSLP without anakinra."""
    w = plate.wells
    g = w.groupby(["stimulus", CONC], sort=False)
    out = pd.DataFrame({
        "n_wells": g.size(),
        f"{RESPONSE}_mean": g[RESPONSE].mean(),
        f"{RESPONSE}_sd": g[RESPONSE].std(ddof=1),
        f"expected_{RESPONSE}": g[f"expected_{RESPONSE}"].mean(),
        "il1_signal": g["il1_signal"].mean(),
    }).reset_index()
    top = out[out[CONC] == 0].set_index("stimulus")[f"expected_{RESPONSE}"]
    block = plate.blocks.groupby("stimulus")["block_tslp_pg_per_ml"].mean()
    span = (top - block.reindex(top.index)).reindex(out["stimulus"]).to_numpy()
    removed = 100.0 * (top.reindex(out["stimulus"]).to_numpy() - out[f"expected_{RESPONSE}"].to_numpy())
    with np.errstate(divide="ignore", invalid="ignore"):
        out["il1_excess_removed_pct"] = np.where(span > 1e-9 * np.abs(top.max()), removed / span, np.nan)
    out.insert(2, "anakinra_nM", ng_per_ml_to_nm(out[CONC]))
    return out


@dataclass(frozen=True)
class TslpFit:
    """The 4PL fit of each IL-1 stimulus (None for a stimulus without IL-1) and the plate."""

    spec: TslpSpec
    plate: TslpPlate
    fits: dict[str, FitResult | None]

    def ic50_ng_per_ml(self, stimulus: str) -> float:
        fit = self.fits[stimulus]
        return float("nan") if fit is None else float(fit.estimates["ic50"])

    def closed_form_ng_per_ml(self, stimulus: str) -> float:
        s = next(s for s in self.spec.stimuli if s.name == stimulus)
        return closed_form_ic50_ng_per_ml(self.spec, s.il1_nm) if s.il1_nm > 0 else float("nan")

    def _levels(self) -> pd.DataFrame:
        """Per stimulus: observed mean TSLP without anakinra, at the reference, and the block."""
        w, ref = self.plate.wells, self.spec.reference_ng_per_ml
        mean = lambda sel: w[sel].groupby("stimulus")[RESPONSE].mean()  # noqa: E731
        return pd.DataFrame({
            "top": mean(w[CONC] == 0), "reference": mean(np.isclose(w[CONC], ref)),
            "block": self.plate.blocks.groupby("stimulus")["block_tslp_pg_per_ml"].mean(),
        })

    def table(self) -> pd.DataFrame:
        """`curve_fit.csv`: the contract columns plus `stimulus`."""
        levels, spec = self._levels(), self.spec
        base = levels.loc[spec.baseline, "top"]
        il1 = [s for s in spec.stimuli if self.fits[s.name] is not None]
        lowest = min(il1, key=lambda s: s.il1_nm).name if il1 else None
        parts = []
        for s in spec.stimuli:
            rows = []
            fit, lv = self.fits[s.name], levels.loc[s.name]
            if fit is not None:
                ic50, closed = self.ic50_ng_per_ml(s.name), self.closed_form_ng_per_ml(s.name)
                rows += [
                    fit_rows(fit, "4pl", units={"bottom": "pg/mL", "top": "pg/mL", "ic50": "ng/mL"}),
                    goodness_of_fit_rows(fit, self.plate.wells.loc[self.plate.wells["stimulus"] == s.name, RESPONSE], "pg/mL"),
                    value_row("ic50_nM", ic50 / ANAKINRA_MW_KDA, "nM", "4pl", "fitted IC50 (17.3 kDa)"),
                    value_row("ic50_closed_form", closed, "ng/mL", "closed form", f"K_I (1 + l)(1 + tau rho0), IL-1 {s.il1_nm:g} nM"),
                    value_row("ic50_over_closed_form", ic50 / closed, "1", "diagnostic", "fitted IC50 / closed form"),
                    value_row("ic50_shift", ic50 / self.ic50_ng_per_ml(lowest), "1", "diagnostic", f"IC50 / IC50 of {lowest}"),
                ]
            else:
                rows.append(value_row("ic50", float("nan"), "ng/mL", "4pl", "no IL-1 in this stimulus: TSLP does not depend on anakinra"))
            excess = lv["top"] - lv["block"]
            rows += [
                value_row("tslp_without_anakinra", lv["top"], "pg/mL", "data", "mean of the wells without anakinra"),
                value_row("fold_over_baseline", lv["top"] / base, "1", "data", f"over {spec.baseline}"),
                value_row("tslp_change_at_reference_pct", 100.0 * (lv["top"] - lv["reference"]) / lv["top"], "%", "data",
                          f"TSLP lowered by anakinra {spec.reference_ng_per_ml:g} ng/mL"),
                value_row("il1_excess_removed_at_reference_pct",
                          100.0 * (lv["top"] - lv["reference"]) / excess if fit is not None else float("nan"), "%", "data",
                          "share of the IL-1-driven TSLP (top - full block) removed" if fit is not None else "no IL-1-driven TSLP"),
            ]
            part = curve_table(rows)
            part["stimulus"] = s.name
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    def figure(self, title: str):
        """TSLP against anakinra, one colour per stimulus: the wells (points; no anakinra at
        the left edge) and the fitted 4PL of each IL-1 stimulus (lines); a stimulus without
        IL-1 gets its mean level (dotted)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        w = self.plate.wells
        pos = w.loc[w[CONC] > 0, CONC]
        zero_x = pos.min() / 10.0
        grid = np.logspace(np.log10(pos.min()) - 0.3, np.log10(pos.max()) + 0.3, 200)
        fig, ax = plt.subplots(figsize=(7.2, 4.8))
        for i, s in enumerate(self.spec.stimuli):
            colour = f"C{i}"
            d = w[w["stimulus"] == s.name]
            x = np.where(d[CONC] > 0, d[CONC], zero_x)
            ax.scatter(x, d[RESPONSE], s=10, color=colour, alpha=0.5, lw=0)
            fit = self.fits[s.name]
            if fit is None:
                ax.plot(grid, np.full(grid.size, d[RESPONSE].mean()), color=colour, ls=":", lw=1.4, label=f"{s.name}: no IL-1")
                continue
            est = fit.estimates
            curve = np.asarray(logistic4(grid, est["bottom"], est["top"], np.log10(est["ic50"]), est["hill"]))
            ax.plot(grid, curve, color=colour, lw=1.8, label=f"{s.name}: IC50 {est['ic50']:.3g} ng/mL "
                                                           f"(closed form {self.closed_form_ng_per_ml(s.name):.3g})")
        ax.axvline(zero_x * 3.0, color="0.6", lw=0.6)
        ax.set_xscale("log")
        ax.set_xlabel(f"anakinra (ng/mL; no anakinra drawn at {zero_x:.2g})")
        ax.set_ylabel("TSLP (pg/mL)")
        ax.set_title(title)
        ax.legend(fontsize=7.5, frameon=False)
        fig.tight_layout()
        return fig


def fit_tslp(spec: TslpSpec, plate: TslpPlate) -> TslpFit:
    """Fit the 4PL (IC50 in ng/mL) to the pooled wells of every stimulus that contains IL-1."""
    fits = {}
    for s in spec.stimuli:
        if s.il1_nm <= 0:
            fits[s.name] = None
            continue
        w = plate.wells[plate.wells["stimulus"] == s.name]
        fits[s.name] = fit_logistic4_scaled(w[CONC].to_numpy(), w[RESPONSE].to_numpy(), conc_unit="ng/mL", response_unit="pg/mL")
    return TslpFit(spec, plate, fits)
