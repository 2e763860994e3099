r"""Functional IL-1β neutralisation assays: MRC-5 IL-6 release and whole-blood IL-8 expression.

Both assays stimulate cells with a fixed IL-1β concentration in the presence of anakinra
and read a cytokine after the incubation. The well (binding with exact depletion, the
whole-blood sink, operational transduction, accumulation) and its assumptions are
`vtrial.models.functional_well`; this module lays out plates, adds immunoassay noise and
fits the curve. The parameter named in the config's `[calibration]` table is calibrated
(`vtrial.assays.calibration`) so that the simulated IC50 equals the seed's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from vtrial.assays.common import (
    config_keys,
    config_names,
    curve_table,
    fit_logistic4_scaled,
    fit_rows,
    goodness_of_fit_rows,
    measurement_noise,
    plot_curve,
    simulate_plate,
    value_row,
)
from vtrial.assays.specs import CALIBRATABLE_UNITS, FunctionalParameters, FunctionalSpec
from vtrial.errors import SpecError
from vtrial.estimation.curvefit import logistic4
from vtrial.estimation.least_squares import FitResult
from vtrial.models.functional_well import functional_model

CONC_COLUMN = "concentration_nM"

#: config name (FunctionalParameters) -> model parameter name
MODEL_NAMES = {
    "agonist_nm": "l_tot",
    "agonist_kd_nm": "kd_l",
    "agonist_kon_per_nm_h": "kon_l",
    "ki_nm": "ki",
    "antagonist_kon_per_nm_h": "kon_i",
    "sink_capacity_nm": "s_tot",
    "sink_kd_nm": "kd_s",
    "sink_kon_per_nm_h": "kon_s",
    "fu_plasma": "fu",
    "tau": "tau",
    "emax_pg_per_ml_h": "emax",
    "basal_pg_per_ml_h": "basal",
}


#: model name -> config key, for messages
CONFIG_KEYS = config_names(MODEL_NAMES, "parameters", r_tot="parameters.cells_per_well", i_tot="grid")


def model_parameters(params: FunctionalParameters, conc_nm, **overrides) -> dict[str, np.ndarray]:
    """Model parameters of wells with anakinra `conc_nm` (nM), from the config's values.

    `overrides` replace model parameters (model names, e.g. `l_tot=0.0`).
    """
    conc = np.asarray(conc_nm, float).ravel()
    out = {"r_tot": params.receptor_nm(), "i_tot": conc}
    for cfg, name in MODEL_NAMES.items():
        out[name] = getattr(params, cfg)
    out.update(overrides)
    return {k: np.broadcast_to(np.asarray(v, float), conc.shape).copy() for k, v in out.items()}


@dataclass(frozen=True)
class FunctionalPlate:
    """A simulated functional plate.

    - `wells`: `well`, `replicate`, `concentration_nM`, `<readout>_pg_per_ml` (observed),
      `expected_<readout>_pg_per_ml`, `receptor_occupancy`, `status`;
    - `top`, `bottom`: noise-free read-outs without anakinra and with the receptor fully
      blocked (no IL-1β signal), pg/mL.
    """

    wells: pd.DataFrame
    response_column: str
    top: float
    bottom: float


def simulate_functional(spec: FunctionalSpec, *, seed: int | None = None, typical: bool = False,
                        parameters: FunctionalParameters | None = None, progress=None) -> FunctionalPlate:
    """Simulate the plate of `spec` (one batched solve: every well plus two reference wells).

    `typical=True`: one noise-free well per concentration; otherwise `spec.replicates`
    wells per concentration with immunoassay noise keyed by `seed` (default `spec.seed`).
    `parameters` replaces `spec.parameters` (used during calibration).
    """
    params = parameters or spec.parameters
    conc = spec.grid.concentrations_nm()
    reps = 1 if typical else spec.replicates
    well_conc = np.repeat(conc, reps)
    wells = model_parameters(params, np.concatenate([well_conc, [0.0, 0.0]]))
    wells["l_tot"][-1] = 0.0  # last reference well: no IL-1β signal (= full receptor block)
    with config_keys(CONFIG_KEYS):
        sol = simulate_plate(functional_model(), wells, [spec.incubation_h], progress=progress)
    if np.any(sol.status[-2:] != 0):  # the top and bottom reference wells scale the curve
        raise SpecError("parameters", "a reference well (no anakinra, or no IL-1β) failed to solve "
                                      f"({', '.join(sol.status_names[-2:])}); check the parameters")
    resp = sol.observables["cytokine_pg_per_ml"][:, 0]
    mean = resp[:-2]
    seed = spec.seed if seed is None else seed
    observed = mean if typical else measurement_noise(seed, mean, spec.noise.cv, spec.noise.sd_pg_per_ml)
    col = f"{spec.readout}_pg_per_ml"
    frame = pd.DataFrame({
        "well": np.arange(well_conc.size),
        "replicate": np.tile(np.arange(reps), conc.size) + 1,
        CONC_COLUMN: well_conc,
        col: observed,
        f"expected_{col}": mean,
        "receptor_occupancy": sol.observables["receptor_occupancy"][:-2, 0],
        "status": sol.status_names[:-2],
    })
    return FunctionalPlate(frame, col, float(resp[-2]), float(resp[-1]))


@dataclass(frozen=True)
class FunctionalFit:
    """4PL fit of a functional plate, compared with the calibration target."""

    logistic: FitResult
    spec: FunctionalSpec
    conc_nm: np.ndarray
    response: np.ndarray

    @property
    def ic50_nm(self) -> float:
        return self.logistic.estimates["ic50"]

    def table(self) -> pd.DataFrame:
        cal = self.spec.calibration
        value = getattr(self.spec.parameters, cal.parameter)
        return curve_table([
            fit_rows(self.logistic, "4pl", units={"bottom": "pg/mL", "top": "pg/mL"}),
            goodness_of_fit_rows(self.logistic, self.response, "pg/mL"),
            value_row("ic50_target", cal.target_ic50_nm, "nM", "calibration", f"seed IC50 {cal.source}".strip()),
            value_row("ic50_over_target", self.ic50_nm / cal.target_ic50_nm, "1", "diagnostic", "fitted IC50 / target"),
            value_row(cal.parameter, value, CALIBRATABLE_UNITS[cal.parameter], "calibration",
                      "calibrated by `vtrial calibrate` so the simulated IC50 equals the target"),
        ])

    def figure(self, title: str):
        est = self.logistic.estimates
        pos = self.conc_nm[self.conc_nm > 0]
        grid = np.logspace(np.log10(pos.min()) - 0.3, np.log10(pos.max()) + 0.3, 200)
        curve = np.asarray(logistic4(grid, est["bottom"], est["top"], np.log10(est["ic50"]), est["hill"]))
        return plot_curve(
            self.conc_nm, self.response, {f"4PL: IC50 {est['ic50'] * 1e3:.3g} pM, Hill {est['hill']:.2f}": (grid, curve)},
            conc_label="anakinra (nM)", response_label=f"{self.spec.readout} (pg/mL)", title=title, ic50=est["ic50"],
        )


def fit_functional(spec: FunctionalSpec, plate: FunctionalPlate) -> FunctionalFit:
    """Fit the four-parameter logistic to a functional plate (IC50 in nM)."""
    conc = plate.wells[CONC_COLUMN].to_numpy()
    resp = plate.wells[plate.response_column].to_numpy()
    fit = fit_logistic4_scaled(conc, resp, conc_unit="nM", response_unit="pg/mL")
    return FunctionalFit(fit, spec, conc, resp)


def summarise_functional(plate: FunctionalPlate) -> pd.DataFrame:
    """Per concentration: wells, mean and SD of the read-out, expected value, % inhibition
    of the IL-1β-driven part ((top - expected) / (top - bottom))."""
    w, col = plate.wells, plate.response_column
    g = w.groupby(CONC_COLUMN, sort=True)
    out = pd.DataFrame({
        "n_wells": g.size(),
        f"{col}_mean": g[col].mean(),
        f"{col}_sd": g[col].std(ddof=1),
        f"expected_{col}": g[f"expected_{col}"].mean(),
        "receptor_occupancy": g["receptor_occupancy"].mean(),
    }).reset_index()
    span = plate.top - plate.bottom
    out["inhibition_percent"] = 100.0 * (plate.top - out[f"expected_{col}"]) / span if span > 0 else np.nan
    return out
