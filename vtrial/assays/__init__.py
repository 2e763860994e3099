"""In vitro assays on the IL-1RI binding model: simulate plates, fit curves, recover Ki and IC50.

- `displacement`: radioligand displacement (EL4 6.1): 4PL, Cheng-Prusoff and full-model Ki;
- `functional`: functional IL-1β neutralisation (MRC-5 IL-6, whole-blood IL-8);
- `calibration`: optax calibration of a functional assay's unknown parameter to an IC50;
- `pbmc`: PBMC + LPS cytokine release with and without anakinra;
- `jobs`: the `vtrial run` jobs (config kinds `binding_displacement`,
  `functional_neutralisation`, `pbmc_lps`).
"""

from vtrial.assays.calibration import CalibrationResult as CalibrationResult, calibrate as calibrate
from vtrial.assays.displacement import (
    DisplacementDesign as DisplacementDesign,
    DisplacementFit as DisplacementFit,
    check_assumptions as check_assumptions,
    fit_displacement as fit_displacement,
    fit_full_model as fit_full_model,
    simulate_displacement as simulate_displacement,
)
from vtrial.assays.functional import fit_functional as fit_functional, simulate_functional as simulate_functional
from vtrial.assays.pbmc import fit_pbmc_curve as fit_pbmc_curve, simulate_pbmc as simulate_pbmc, summarise_pbmc as summarise_pbmc
from vtrial.assays.specs import DisplacementSpec as DisplacementSpec, FunctionalSpec as FunctionalSpec, PbmcSpec as PbmcSpec
