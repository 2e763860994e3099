r"""Radioligand displacement (EL4 6.1, 125I-IL-1α vs anakinra): simulate, fit, recover Ki.

**Experiment** (model card, system 1). Cells, labelled ligand ($L_{tot}$) and unlabelled
antagonist ($I_{tot}$, one concentration per well) are incubated together for $t_{inc}$,
washed and counted. Each well is one parameter set of the binding model
(`vtrial.models.binding.il1r_binding`), and the plate (all concentrations and replicates,
plus one noise-free reference well without antagonist) is one batched solve.

**Read-out.** Counts are proportional to the label on the cells:
$\mu = a\,RL(t_{inc}) + b\,L_{free}(t_{inc})$, with $a$ (cpm per nM bound) chosen so
that specific binding without antagonist gives `full_specific_cpm` counts, and the
nonspecific term $b L_{free}$ linear in free ligand, with $b$ chosen so that it is
`nsb_fraction` of the total bound label without antagonist. Both are fixed per config
(assumption: the tracer's specific activity and the counting efficiency are the same in
every well). Observed counts are Poisson($\mu \varepsilon$), where $\varepsilon$ is a
mean-one log-normal well factor with coefficient of variation `well_cv` (cells and
pipetting; default 5%, an assumption added to the card's Poisson counting, which alone
gives a 0.7% error at 20,000 cpm: far below real triplicates, and with so little noise
the 95% interval of the Cheng-Prusoff Ki could not cover the truth, because Cheng-Prusoff
itself is 1% biased by receptor depletion). `well_cv = 0` gives pure counting noise.
`typical` wells carry $\mu$ itself.

**Fits.** (1) Four-parameter logistic on counts (`vtrial.estimation.curvefit.fit_logistic4`, through
`vtrial.assays.common.fit_logistic4_scaled`) gives
IC50 and Hill slope, and Cheng-Prusoff gives $K_i = IC50/(1 + L_{tot}/K_{D,L})$.
(2) The full model: the kinetic binding model with exact depletion at the design's
receptor, ligand, rate constants and incubation time, fitted for $K_i$, $a$ and $b$ by
weighted least squares (weights $1/\sqrt{\max(y, 1) + (cv\,y)^2}$ from the noise model)
with optax L-BFGS
(`vtrial.estimation.least_squares.fit_least_squares`), gradients through the diffrax solve.

**Which Ki to trust.** Cheng-Prusoff assumes equilibrium and negligible depletion. The
fit reports ligand depletion $RL/L_{tot}$ (equilibrium, no antagonist), antagonist
depletion $RI/I_{tot}$ (equilibrium, at the IC50) and the equilibration fraction
$1 - e^{-k_{obs} t_{inc}}$ with $k_{obs}$ the slower of the linearised relaxation rates
$k_{on,L}(L + R) + k_{off,L}$ (no antagonist) and $k_{on,I}(I + R) + k_{off,I}$ (at the
IC50). Cheng-Prusoff is recommended only when both depletions are at most
`max_depletion` and equilibration at least `min_equilibration`; otherwise the
full-model Ki is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from vtrial.assays._ode import well_readout
from vtrial.assays.common import (
    config_keys,
    curve_table,
    fit_logistic4_scaled,
    fit_rows,
    goodness_of_fit_rows,
    plot_curve,
    measurement_noise,
    poisson_counts,
    simulate_plate,
    value_row,
)
from vtrial.assays.specs import DisplacementSpec, Trust
from vtrial.errors import SpecError
from vtrial.estimation.curvefit import KiEstimate, cheng_prusoff_ki, logistic4
from vtrial.estimation.least_squares import FitResult, fit_least_squares
from vtrial.models.binding import equilibrium, il1r_binding

CONC_COLUMN = "concentration_nM"


@lru_cache(maxsize=1)
def binding_model():
    """The one binding model instance every plate shares (compiled once)."""
    return il1r_binding()


def _bound_ligand_readout(y, p):
    return y[0]


def _bound_ligand():
    return well_readout(binding_model(), _bound_ligand_readout, "ki")


#: binding-model name -> config key, for messages
CONFIG_KEYS = {"r_tot": "cells.per_well", "l_tot": "ligand.conc_nm", "kd_l": "ligand.kd_nm", "kon_l": "ligand.kon_per_nm_h",
               "i_tot": "grid", "kon_i": "antagonist.kon_per_nm_h", "ki": "antagonist.ki_nm"}


@dataclass(frozen=True)
class DisplacementDesign:
    """What the experimenter knows about the wells: everything but the antagonist's Ki.

    Concentrations in nM, rate constants in 1/nM/h, time in h.
    """

    r_tot_nm: float
    ligand_nm: float
    kd_l_nm: float
    kon_l: float
    kon_i: float
    incubation_h: float

    @classmethod
    def from_spec(cls, spec: DisplacementSpec) -> "DisplacementDesign":
        return cls(spec.cells.receptor_nm(), spec.ligand.conc_nm, spec.ligand.kd_nm, spec.ligand.kon_per_nm_h,
                   spec.antagonist.kon_per_nm_h, spec.incubation_h)

    def wells(self, conc_nm) -> dict[str, np.ndarray]:
        """Binding-model parameters (all but `ki`) of wells with antagonist `conc_nm`."""
        conc = np.asarray(conc_nm, float).ravel()
        full = lambda v: np.full(conc.size, float(v))  # noqa: E731
        return {"r_tot": full(self.r_tot_nm), "l_tot": full(self.ligand_nm), "i_tot": conc, "kon_l": full(self.kon_l),
                "kd_l": full(self.kd_l_nm), "kon_i": full(self.kon_i)}


@dataclass(frozen=True)
class Plate:
    """A simulated plate.

    - `wells`: one row per well: `well`, `replicate`, `concentration_nM`, `counts_cpm`
      (observed), `expected_counts_cpm`, `specific_bound_nM` (RL), `free_ligand_nM`,
      `status` (solver status, "ok");
    - `cpm_per_nm_bound`, `nsb_cpm_per_nm_free`: the read-out constants $a$, $b$;
    - `reference_bound_nm`: RL of the noise-free reference well without antagonist;
    - `ki_nm`: the true Ki the plate was simulated with.
    """

    wells: pd.DataFrame
    cpm_per_nm_bound: float
    nsb_cpm_per_nm_free: float
    reference_bound_nm: float
    ki_nm: float
    design: DisplacementDesign


def simulate_displacement(spec: DisplacementSpec, *, seed: int | None = None, typical: bool = False,
                          progress=None) -> Plate:
    """Simulate the displacement plate of `spec` in one batched solve.

    `typical=True`: one noise-free well per concentration; otherwise `spec.replicates`
    wells per concentration with Poisson counting noise keyed by `seed` (default
    `spec.seed`) and the well index.
    """
    design = DisplacementDesign.from_spec(spec)
    conc = spec.grid.concentrations_nm()
    reps = 1 if typical else spec.replicates
    well_conc = np.repeat(conc, reps)
    params = design.wells(np.append(well_conc, 0.0))  # last well: reference, no antagonist
    params["ki"] = np.full(well_conc.size + 1, spec.antagonist.ki_nm)
    with config_keys(CONFIG_KEYS):
        sol = simulate_plate(binding_model(), params, [spec.incubation_h], progress=progress)
    rl = sol.observables["bound_ligand_nm"][:, 0]
    free = sol.observables["free_ligand_nm"][:, 0]
    if sol.status[-1] != 0:  # without the reference well nothing can be scaled to counts
        raise SpecError("ligand", f"the reference well (no antagonist) failed to solve ({sol.status_names[-1]}); "
                                  "check cells, ligand and incubation_h")
    a = spec.counting.full_specific_cpm / rl[-1]
    f = spec.counting.nsb_fraction
    b = f / (1.0 - f) * spec.counting.full_specific_cpm / free[-1]
    mean = a * rl[:-1] + b * free[:-1]
    seed = spec.seed if seed is None else seed
    if typical:
        counts = mean
    else:
        counts = poisson_counts(seed, measurement_noise(seed, mean, spec.counting.well_cv, 0.0, stream=1))
    wells = pd.DataFrame({
        "well": np.arange(well_conc.size),
        "replicate": np.tile(np.arange(reps), conc.size) + 1,
        CONC_COLUMN: well_conc,
        "counts_cpm": counts,
        "expected_counts_cpm": mean,
        "specific_bound_nM": rl[:-1],
        "free_ligand_nM": free[:-1],
        "status": sol.status_names[:-1],
    })
    return Plate(wells, float(a), float(b), float(rl[-1]), spec.antagonist.ki_nm, design)


# ---------------------------------------------------------------------------
# fitting


def _full_model_residuals(params, data):
    rl = _bound_ligand()(params["ki"], data["wells"], data["t_end"])
    mean = params["cpm_per_nm_bound"] * rl + params["nsb_cpm_per_nm_free"] * (data["wells"]["l_tot"] - rl)
    return (data["counts"] - mean) / data["sigma"]


def fit_full_model(conc_nm, counts, design: DisplacementDesign, *, ki_init: float, top: float, bottom: float,
                   well_cv: float = 0.05) -> FitResult:
    """Fit Ki, $a$ and $b$ of the full kinetic binding model to counts (weighted least squares).

    `ki_init` (nM), `top` and `bottom` (cpm; e.g. from the 4PL fit) give starting values;
    `well_cv` sets the weights $1/\\sqrt{\\max(y,1) + (cv\\,y)^2}$.
    Returns a `FitResult` with parameters `ki` (nM), `cpm_per_nm_bound`,
    `nsb_cpm_per_nm_free` (cpm/nM), all estimated on the log scale.
    """
    conc = np.asarray(conc_nm, float).ravel()
    counts = np.asarray(counts, float).ravel()
    wells = design.wells(conc)
    rl0 = float(_bound_ligand()(ki_init, design.wells([0.0]), design.incubation_h)[0])
    b0 = max(bottom, 1e-3 * max(top, 1.0)) / design.ligand_nm
    a0 = (top - b0 * (design.ligand_nm - rl0)) / rl0
    if not a0 > 0:
        a0 = max(top, 1.0) / rl0
    data = {"wells": wells, "t_end": float(design.incubation_h), "counts": counts, "sigma": np.sqrt(np.maximum(counts, 1.0) + (well_cv * counts) ** 2)}
    return fit_least_squares(
        _full_model_residuals,
        {"ki": ki_init, "cpm_per_nm_bound": a0, "nsb_cpm_per_nm_free": b0},
        data=data,
        transforms={"ki": "log", "cpm_per_nm_bound": "log", "nsb_cpm_per_nm_free": "log"},
        units={"ki": "nM", "cpm_per_nm_bound": "cpm/nM", "nsb_cpm_per_nm_free": "cpm/nM"},
    )


@dataclass(frozen=True)
class Assumptions:
    """Checks of the Cheng-Prusoff assumptions (fractions) and the resulting advice."""

    ligand_depletion: float
    antagonist_depletion: float
    equilibration: float
    recommended: str
    reason: str


def check_assumptions(design: DisplacementDesign, ki_nm: float, ic50_nm: float, trust: Trust = Trust()) -> Assumptions:
    """Depletion and equilibration of `design` for an antagonist of Ki `ki_nm` (see module doc)."""
    rl0, _ = equilibrium(design.r_tot_nm, design.ligand_nm, 0.0, design.kd_l_nm, ki_nm)
    rl0 = float(rl0)
    lig_dep = rl0 / design.ligand_nm
    rl50, ri50 = (float(v) for v in equilibrium(design.r_tot_nm, design.ligand_nm, ic50_nm, design.kd_l_nm, ki_nm))
    ant_dep = ri50 / ic50_nm if ic50_nm > 0 else 0.0
    r0 = design.r_tot_nm - rl0
    k_l = design.kon_l * (design.ligand_nm - rl0 + r0) + design.kon_l * design.kd_l_nm
    r50 = design.r_tot_nm - rl50 - ri50
    k_i = design.kon_i * (ic50_nm - ri50 + r50) + design.kon_i * ki_nm
    eq = 1.0 - math.exp(-min(k_l, k_i) * design.incubation_h)
    problems = []
    if lig_dep > trust.max_depletion:
        problems.append(f"ligand depletion {lig_dep:.1%} > {trust.max_depletion:.0%}")
    if ant_dep > trust.max_depletion:
        problems.append(f"antagonist depletion at the IC50 {ant_dep:.1%} > {trust.max_depletion:.0%}")
    if eq < trust.min_equilibration:
        problems.append(f"equilibration {eq:.1%} < {trust.min_equilibration:.0%} after {design.incubation_h:g} h")
    if problems:
        return Assumptions(lig_dep, ant_dep, eq, "ki_full_model",
                           "trust ki_full_model: Cheng-Prusoff assumptions fail (" + "; ".join(problems) + ")")
    return Assumptions(lig_dep, ant_dep, eq, "ki_cheng_prusoff",
                       f"trust ki_cheng_prusoff: ligand depletion {lig_dep:.1%}, antagonist depletion {ant_dep:.1%}, "
                       f"equilibration {eq:.1%} meet the Cheng-Prusoff assumptions")


@dataclass(frozen=True)
class DisplacementFit:
    """4PL fit, Cheng-Prusoff Ki, full-model fit and which Ki to trust."""

    logistic: FitResult
    cheng_prusoff: KiEstimate
    full_model: FitResult
    assumptions: Assumptions
    design: DisplacementDesign
    conc_nm: np.ndarray
    counts: np.ndarray

    @property
    def ki_recommended(self) -> float:
        if self.assumptions.recommended == "ki_full_model":
            return self.full_model.estimates["ki"]
        return self.cheng_prusoff.ki

    def table(self) -> pd.DataFrame:
        """Rows of `curve_fit.csv` (columns `CURVE_COLUMNS`)."""
        cp, full, a = self.cheng_prusoff, self.full_model, self.assumptions
        ratio = cp.ki / full.estimates["ki"]
        trusted = a.recommended
        cp_note = (f"IC50/(1 + L/KD), L = {self.design.ligand_nm:g} nM, KD = {self.design.kd_l_nm:g} nM; "
                   + ("trusted" if trusted == "ki_cheng_prusoff" else f"biased: {ratio:.2f} x ki_full_model"))
        full_note = ("kinetic binding model, exact depletion, "
                     f"R_tot = {self.design.r_tot_nm:.3g} nM, t = {self.design.incubation_h:g} h; "
                     + ("trusted" if trusted == "ki_full_model" else "consistent with ki_cheng_prusoff (intervals overlap)"
                        if full.ci_low["ki"] <= cp.ci_high and cp.ci_low <= full.ci_high["ki"]
                        else "differs from ki_cheng_prusoff beyond both intervals"))
        chosen = full if trusted == "ki_full_model" else None
        rec = value_row("ki_recommended", self.ki_recommended, "nM", "recommendation", a.reason,
                        se=chosen.se["ki"] if chosen else cp.se,
                        ci=(chosen.ci_low["ki"], chosen.ci_high["ki"]) if chosen else (cp.ci_low, cp.ci_high))
        return curve_table([
            fit_rows(self.logistic, "4pl", units={"bottom": "cpm", "top": "cpm"}),
            goodness_of_fit_rows(self.logistic, self.counts, "cpm"),
            value_row("ki_cheng_prusoff", cp.ki, "nM", "cheng_prusoff", cp_note, cp.se, (cp.ci_low, cp.ci_high)),
            fit_rows(full, "full_model", rename={"ki": "ki_full_model"}, notes={"ki": full_note}),
            value_row("ligand_depletion_fraction", a.ligand_depletion, "1", "diagnostic", "RL/L_tot at equilibrium, no antagonist"),
            value_row("antagonist_depletion_fraction", a.antagonist_depletion, "1", "diagnostic", "RI/I_tot at equilibrium at the IC50"),
            value_row("equilibration_fraction", a.equilibration, "1", "diagnostic", "1 - exp(-k_obs t), slower of ligand and antagonist"),
            value_row("ki_cp_over_full", ratio, "1", "diagnostic", "ki_cheng_prusoff / ki_full_model"),
            rec,
        ])

    def figure(self, title: str):
        """Data, fitted 4PL and full-model curves."""
        est = self.logistic.estimates
        pos = self.conc_nm[self.conc_nm > 0]
        grid = np.logspace(np.log10(pos.min()) - 0.3, np.log10(pos.max()) + 0.3, 60)
        curve4 = np.asarray(logistic4(grid, est["bottom"], est["top"], np.log10(est["ic50"]), est["hill"]))
        full = self.full_model.estimates
        rl = np.asarray(_bound_ligand()(full["ki"], self.design.wells(grid), self.design.incubation_h))
        curve_full = full["cpm_per_nm_bound"] * rl + full["nsb_cpm_per_nm_free"] * (self.design.ligand_nm - rl)
        return plot_curve(
            self.conc_nm, self.counts,
            {f"4PL: IC50 {est['ic50']:.3g} nM, Ki(CP) {self.cheng_prusoff.ki:.3g} nM": (grid, curve4),
             f"full model: Ki {full['ki']:.3g} nM": (grid, curve_full)},
            conc_label="anakinra (nM)", response_label="bound label (cpm)", title=title, ic50=est["ic50"],
        )


def fit_displacement(conc_nm, counts, design: DisplacementDesign, trust: Trust = Trust(), *,
                     well_cv: float = 0.05) -> DisplacementFit:
    """Fit a displacement curve both ways and decide which Ki to trust.

    **Arguments:** `conc_nm` antagonist concentrations (nM) and `counts` (cpm), 1-D;
    `design` the known assay conditions; `trust` the thresholds of the assumption checks;
    `well_cv` the well-to-well CV used in the full model's weights.
    """
    conc = np.asarray(conc_nm, float).ravel()
    counts = np.asarray(counts, float).ravel()
    logistic = fit_logistic4_scaled(conc, counts, conc_unit="nM", response_unit="cpm")
    solved = np.isfinite(counts)  # wells whose solve failed (status) carry NaN
    conc, counts = conc[solved], counts[solved]
    cp = cheng_prusoff_ki(logistic, design.ligand_nm, design.kd_l_nm)
    ki0 = cp.ki if np.isfinite(cp.ki) and cp.ki > 0 else float(np.sqrt(conc[conc > 0].min() * conc.max()))
    est = logistic.estimates
    full = fit_full_model(conc, counts, design, ki_init=ki0, top=max(est["top"], est["bottom"]), bottom=min(est["top"], est["bottom"]),
                          well_cv=well_cv)
    assumptions = check_assumptions(design, full.estimates["ki"], est["ic50"])
    return DisplacementFit(logistic, cp, full, assumptions, design, conc, counts)


def summarise_plate(plate: Plate) -> pd.DataFrame:
    """Per concentration: wells, mean and SD of counts, expected counts, specific binding
    as a fraction of the no-antagonist value."""
    w = plate.wells
    g = w.groupby(CONC_COLUMN, sort=True)
    out = pd.DataFrame({
        "n_wells": g.size(),
        "counts_mean_cpm": g["counts_cpm"].mean(),
        "counts_sd_cpm": g["counts_cpm"].std(ddof=1),
        "expected_counts_cpm": g["expected_counts_cpm"].mean(),
        "specific_bound_nM": g["specific_bound_nM"].mean(),
    }).reset_index()
    out["specific_binding_fraction"] = out["specific_bound_nM"] / plate.reference_bound_nm
    return out


__all__ = [
    "DisplacementDesign", "DisplacementFit", "Plate", "binding_model", "check_assumptions", "fit_displacement",
    "fit_full_model", "simulate_displacement", "summarise_plate",
]
