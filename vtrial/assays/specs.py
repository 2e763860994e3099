"""Config schemas of the in vitro assays (pydantic, strict: unknown keys are errors).

Units are in the key names: concentrations in nM (`_nm`), rate constants per nM per hour
(`_per_nm_h`), times in hours (`_h`), cytokines in pg/mL. Every numeric range is checked
here, so a bad value is reported as a `SpecError` naming the field before anything is
simulated or written. Upper bounds are generous physical limits (concentrations and Kd
up to 1 mM, association rates up to 1e6 /nM/h, times up to 10,000 h, cell counts up to
1e10 per well), so an absurd number (say 1e308) is refused instead of failing the solve.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from vtrial.limits import MAX_OUTPUT_TIMES, MAX_SEED
from vtrial.schema import Strict as _Strict
from vtrial.models.binding import receptor_nm


Strict = _Strict  # strict, finite numbers (`vtrial.schema.Strict`)


class Grid(Strict):
    """Antagonist concentrations: `n` log-spaced steps from `start_nm` to `stop_nm`."""

    start_nm: float = Field(gt=0, le=1e6)
    stop_nm: float = Field(gt=0, le=1e6)
    n: int = Field(ge=4, le=1000)

    @model_validator(mode="after")
    def _increasing(self):
        if not self.stop_nm > self.start_nm:
            raise ValueError(f"stop_nm ({self.stop_nm}) must be greater than start_nm ({self.start_nm})")
        return self

    def concentrations_nm(self) -> np.ndarray:
        return np.logspace(np.log10(self.start_nm), np.log10(self.stop_nm), self.n)


class Cells(Strict):
    """Cells in a well and their receptors; gives the receptor concentration."""

    per_well: float = Field(gt=0, le=1e10)
    sites_per_cell: float = Field(gt=0, le=1e7)
    volume_ml: float = Field(gt=0, le=1e3)

    def receptor_nm(self) -> float:
        return receptor_nm(self.per_well, self.sites_per_cell, self.volume_ml)


class Binder(Strict):
    """A ligand or antagonist at the receptor: dissociation constant and association rate."""

    kd_nm: float = Field(gt=0, le=1e6)
    kon_per_nm_h: float = Field(10.0, gt=0, le=1e6)


class Ligand(Binder):
    conc_nm: float = Field(gt=0, le=1e6)


class Antagonist(Strict):
    """The competitive antagonist (anakinra): Ki and association rate constant."""

    ki_nm: float = Field(gt=0, le=1e6)
    kon_per_nm_h: float = Field(10.0, gt=0, le=1e6)


class Counting(Strict):
    """Gamma counting: counts at full specific binding (no competitor), nonspecific share,
    and the well-to-well coefficient of variation (cells, pipetting) on top of Poisson noise."""

    full_specific_cpm: float = Field(20000.0, gt=0, le=1e12)
    nsb_fraction: float = Field(0.05, ge=0, lt=1)
    well_cv: float = Field(0.05, ge=0, le=1)


class Trust(Strict):
    """When Cheng-Prusoff is trusted: ligand depletion (no antagonist) and antagonist
    depletion (at the IC50) at most `max_depletion`, and equilibration at least
    `min_equilibration` (fraction 1 - exp(-k_obs t))."""

    max_depletion: float = Field(0.10, gt=0, lt=1)
    min_equilibration: float = Field(0.95, gt=0, lt=1)


class DisplacementSpec(Strict):
    """A radioligand displacement assay (`kind = "binding_displacement"`, e.g. EL4 6.1)."""

    title: str = "radioligand displacement"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    replicates: int = Field(3, ge=1, le=10000)
    incubation_h: float = Field(gt=0, le=1e4)
    cells: Cells
    ligand: Ligand
    antagonist: Antagonist
    grid: Grid
    counting: Counting = Counting()
    trust: Trust = Trust()


# ---------------------------------------------------------------------------
# functional neutralisation (MRC-5 IL-6, whole-blood IL-8)

#: Parameters `vtrial calibrate` may adjust, with their units.
CALIBRATABLE_UNITS = {"ki_nm": "nM", "tau": "1", "fu_plasma": "1", "agonist_kd_nm": "nM"}
CALIBRATABLE = tuple(CALIBRATABLE_UNITS)


class FunctionalParameters(Strict):
    """Parameters of the operational functional model (see `vtrial.assays.functional`)."""

    cells_per_well: float = Field(gt=0, le=1e10)
    sites_per_cell: float = Field(gt=0, le=1e7)
    volume_ml: float = Field(gt=0, le=1e3)
    agonist_nm: float = Field(gt=0, le=1e6)
    agonist_kd_nm: float = Field(gt=0, le=1e6)
    agonist_kon_per_nm_h: float = Field(gt=0, le=1e6)
    ki_nm: float = Field(gt=0, le=1e6)
    antagonist_kon_per_nm_h: float = Field(gt=0, le=1e6)
    sink_capacity_nm: float = Field(0.0, ge=0, le=1e6)
    sink_kd_nm: float = Field(0.07, gt=0, le=1e6)
    sink_kon_per_nm_h: float = Field(10.0, gt=0, le=1e6)
    fu_plasma: float = Field(1.0, gt=0, le=1)
    tau: float = Field(gt=0, le=1e12)
    emax_pg_per_ml_h: float = Field(gt=0, le=1e12)
    basal_pg_per_ml_h: float = Field(0.0, ge=0, le=1e12)

    def receptor_nm(self) -> float:
        return receptor_nm(self.cells_per_well, self.sites_per_cell, self.volume_ml)


class Immunoassay(Strict):
    """ELISA read-out error: proportional (CV, fraction) and additive (pg/mL)."""

    cv: float = Field(0.10, ge=0, le=2)
    sd_pg_per_ml: float = Field(1.0, ge=0, le=1e12)


class Calibration(Strict):
    """Which parameter `vtrial calibrate` adjusts so that the simulated IC50 is the target."""

    parameter: Literal[CALIBRATABLE]  # type: ignore[valid-type]
    target_ic50_nm: float = Field(gt=0, le=1e6)
    source: str = ""


class FunctionalSpec(Strict):
    """A functional IL-1 neutralisation assay (`kind = "functional_neutralisation"`)."""

    title: str = "functional neutralisation"
    readout: str = Field("cytokine", pattern=r"^[a-z][a-z0-9_]*$")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    replicates: int = Field(3, ge=1, le=10000)
    incubation_h: float = Field(gt=0, le=1e4)
    parameters: FunctionalParameters
    grid: Grid
    noise: Immunoassay = Immunoassay()
    calibration: Calibration


# ---------------------------------------------------------------------------
# PBMC + LPS


class PbmcParameters(Strict):
    """Parameters of the PBMC + LPS cytokine model (see `vtrial.assays.pbmc`)."""

    cells_per_well: float = Field(1e6, gt=0, le=1e10)
    sites_per_cell: float = Field(200.0, gt=0, le=1e7)
    volume_ml: float = Field(1.0, gt=0, le=1e3)
    il1b_kd_nm: float = Field(gt=0, le=1e6)
    il1b_kon_per_nm_h: float = Field(10.0, gt=0, le=1e6)
    ki_nm: float = Field(gt=0, le=1e6)
    anakinra_kon_per_nm_h: float = Field(10.0, gt=0, le=1e6)
    tau: float = Field(gt=0, le=1e12)
    lps_ec50_pg_per_ml: float = Field(gt=0, le=1e12)
    k_act_per_h: float = Field(gt=0, le=1e6)
    il1b_prod_pg_per_ml_h: float = Field(ge=0, le=1e12)
    il1b_amp: float = Field(ge=0, le=1e12)
    il1b_deg_per_h: float = Field(ge=0, le=1e6)
    il6_prod_pg_per_ml_h: float = Field(ge=0, le=1e12)
    il6_amp: float = Field(ge=0, le=1e12)
    il6_deg_per_h: float = Field(ge=0, le=1e6)
    tnfa_prod_pg_per_ml_h: float = Field(ge=0, le=1e12)
    tnfa_amp: float = Field(ge=0, le=1e12)
    tnfa_deg_per_h: float = Field(ge=0, le=1e6)
    basal_pg_per_ml_h: float = Field(0.0, ge=0, le=1e12)


class Condition(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_+\-]+$")
    lps_pg_per_ml: float = Field(ge=0, le=1e12)
    anakinra_nm: float = Field(ge=0, le=1e6)


class PbmcCurve(Strict):
    """A concentration-response of anakinra on one cytokine at one time (LPS-stimulated)."""

    readout: Literal["il1b", "il6", "tnfa"] = "il1b"
    time_h: float = Field(16.0, gt=0, le=1e4)
    lps_pg_per_ml: float = Field(100.0, gt=0, le=1e12)
    grid: Grid


class PbmcSpec(Strict):
    """PBMC + LPS cytokine release (`kind = "pbmc_lps"`)."""

    title: str = "PBMC + LPS"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    donors: int = Field(6, ge=1, le=100000)
    duration_h: float = Field(16.0, gt=0, le=1e4)
    output_every_h: float = Field(1.0, gt=0, le=1e4)
    readout_times_h: list[Annotated[float, Field(gt=0, le=1e4)]] = Field(default_factory=lambda: [6.0, 16.0], min_length=1, max_length=1000)
    parameters: PbmcParameters
    donor_cv: dict[str, float] = Field(default_factory=dict)
    conditions: list[Condition] = Field(min_length=1)
    reference: str = Field("lps", description="condition the anakinra effect is measured against")
    treated: str = Field("lps_anakinra")
    noise: Immunoassay = Immunoassay()
    curve: PbmcCurve

    @model_validator(mode="after")
    def _consistent(self):
        # Messages start with the key they are about: the config reader reports them there.
        names = [c.name for c in self.conditions]
        if len(set(names)) != len(names):
            raise ValueError("conditions: condition names must be unique")
        for role in ("reference", "treated"):
            if getattr(self, role) not in names:
                raise ValueError(f"{role}: {getattr(self, role)!r} is not one of the conditions {names}")
        for i, t in enumerate(self.readout_times_h):
            if not 0 < t <= self.duration_h:
                raise ValueError(f"readout_times_h.{i}: readout time {t} h must lie in (0, duration_h = {self.duration_h}]")
        if self.curve.time_h > self.duration_h:
            raise ValueError(f"curve.time_h: {self.curve.time_h} must be <= duration_h ({self.duration_h})")
        n = self.duration_h / self.output_every_h + 1
        if n > MAX_OUTPUT_TIMES:
            raise ValueError(f"output_every_h: {n:.3g} output times over duration_h; the limit is {MAX_OUTPUT_TIMES:,}")
        known = set(PbmcParameters.model_fields)
        for name, cv in self.donor_cv.items():
            if name not in known:
                raise ValueError(f"donor_cv.{name}: unknown parameter; known: {', '.join(sorted(known))}")
            if not (0 <= cv <= 5):
                raise ValueError(f"donor_cv.{name}: CV must lie in [0, 5], got {cv}")
        return self
