"""Config schema of the CAF TSLP neutralisation assay (`kind = "tslp_neutralisation"`, card CAF-1 5a).

Pydantic, strict: unknown keys are errors and every number must be finite. Units are in
the key names: nM (`_nm`), ng/mL, pg/mL, per hour (`_per_h`), hours (`_h`). The model is
`vtrial.models.caf_tslp_well`; the assay is `vtrial.assays.tslp`.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from vtrial.assays.specs import Immunoassay, Strict
from vtrial.limits import MAX_SEED
from vtrial.models.il1_link import ANAKINRA_MW_KDA


class TslpParameters(Strict):
    """The well model's parameters (card CAF-1; all A except `ki_nm` and `kl_nm`)."""

    ki_nm: float = Field(0.21, gt=0, le=1e6)
    kl_nm: float = Field(0.26, gt=0, le=1e6)
    tau: float = Field(30.0, gt=0, le=1e6)
    k_m_per_h: float = Field(0.3, gt=0, le=1e6)
    s_il: float = Field(20.0, ge=0, le=1e6)
    s_tnf: float = Field(10.0, ge=0, le=1e6)
    kt_nm: float = Field(0.3, gt=0, le=1e6)
    k_sec_pg_per_ml_h: float = Field(2.0, ge=0, le=1e6)
    k_deg_per_h: float = Field(0.03, ge=0, le=1e6)


#: config name (TslpParameters) -> model parameter name (`caf_tslp_well`)
MODEL_NAMES = {
    "ki_nm": "k_i", "kl_nm": "k_l", "tau": "tau", "k_m_per_h": "k_m", "s_il": "s_il", "s_tnf": "s_t",
    "kt_nm": "k_t", "k_sec_pg_per_ml_h": "k_sec", "k_deg_per_h": "k_deg",
}


class Stimulus(Strict):
    """One stimulus of the CAFs: IL-1 (α + β, nM) and TNF-α (nM) in the well."""

    name: str = Field(pattern=r"^[A-Za-z0-9_+\-]+$")
    il1_nm: float = Field(0.0, ge=0, le=1e6)
    tnf_nm: float = Field(0.0, ge=0, le=1e6)
    description: str = ""


class MassGrid(Strict):
    """Anakinra concentrations: `n` log-spaced steps from `start_ng_per_ml` to `stop_ng_per_ml`."""

    start_ng_per_ml: float = Field(gt=0, le=1e8)
    stop_ng_per_ml: float = Field(gt=0, le=1e8)
    n: int = Field(ge=4, le=1000)

    @model_validator(mode="after")
    def _increasing(self):
        if not self.stop_ng_per_ml > self.start_ng_per_ml:
            raise ValueError(f"stop_ng_per_ml ({self.stop_ng_per_ml}) must be greater than start_ng_per_ml ({self.start_ng_per_ml})")
        return self

    def concentrations_ng_per_ml(self) -> np.ndarray:
        return np.logspace(np.log10(self.start_ng_per_ml), np.log10(self.stop_ng_per_ml), self.n)


def ng_per_ml_to_nm(value):
    """Anakinra ng/mL -> nM (17.3 kDa: 1 ng/mL = 0.0578 nM)."""
    return np.asarray(value, float) / ANAKINRA_MW_KDA


class TslpSpec(Strict):
    """TSLP release by primary CAFs under several stimuli, each across an anakinra grid."""

    title: str = "CAF TSLP neutralisation"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    donors: int = Field(3, ge=1, le=10000)
    replicates: int = Field(3, ge=1, le=10000)
    incubation_h: float = Field(48.0, gt=0, le=1e4)
    parameters: TslpParameters = TslpParameters()
    donor_cv: dict[str, float] = Field(default_factory=dict, description="between-donor CV (fraction, log-normal) per parameter")
    stimuli: list[Stimulus] = Field(min_length=1)
    grid: MassGrid
    reference_ng_per_ml: float = Field(10000.0, gt=0, le=1e8, description="the reference anakinra concentration (card: 10 µg/mL)")
    baseline: str = Field("medium", description="the stimulus without IL-1 or TNF-α (unstimulated CAFs)")
    noise: Immunoassay = Immunoassay(cv=0.12, sd_pg_per_ml=5.0)

    @model_validator(mode="after")
    def _consistent(self):
        names = [s.name for s in self.stimuli]
        if len(set(names)) != len(names):
            raise ValueError(f"stimulus names must be unique, got {names}")
        if self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not one of the stimuli {names}")
        for name, cv in self.donor_cv.items():
            if name not in TslpParameters.model_fields:
                raise ValueError(f"donor_cv.{name}: unknown parameter; known: {', '.join(TslpParameters.model_fields)}")
            if not 0 <= cv <= 5:
                raise ValueError(f"donor_cv.{name}: CV must lie in [0, 5], got {cv}")
        return self
