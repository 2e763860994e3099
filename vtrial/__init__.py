"""vtrial: GPU-accelerated virtual trials for preclinical pharmacology.

Importing vtrial enables float64 and sets equinox's error mode (`vtrial.settings`).
"""

from vtrial import settings as settings  # first: x64 and equinox's error mode

from vtrial import models as models  # noqa: E402
from vtrial.design.dosing import Bolus as Bolus, Infusion as Infusion, Regimen as Regimen  # noqa: E402
from vtrial.errors import DataError as DataError, SpecError as SpecError  # noqa: E402
from vtrial.design.population import (  # noqa: E402
    CovariateDistribution as CovariateDistribution,
    CovariateEffect as CovariateEffect,
    Population as Population,
    ResidualError as ResidualError,
)
from vtrial.engine.runner import (  # noqa: E402
    iter_population_chunks as iter_population_chunks,
    simulate_population as simulate_population,
)
from vtrial.engine.solve import SolverOptions as SolverOptions  # noqa: E402
from vtrial.design.trial import Arm as Arm, SimulationResult as SimulationResult, simulate as simulate  # noqa: E402
from vtrial.design.regimen_space import RegimenShape as RegimenShape, RegimenSpace as RegimenSpace  # noqa: E402
from vtrial.design.targets import Requirement as Requirement  # noqa: E402
from vtrial.design.gradient_search import GradientSettings as GradientSettings  # noqa: E402
from vtrial.design.optimize import OptimizationResult as OptimizationResult, Uncertainty as Uncertainty, optimize as optimize  # noqa: E402
from vtrial.design.power import PowerResult as PowerResult, power as power  # noqa: E402
from vtrial.models.base import Endpoint as Endpoint  # noqa: E402
from vtrial.estimation import (  # noqa: E402
    EstimationSpec as EstimationSpec,
    PopulationData as PopulationData,
    PopulationFit as PopulationFit,
    fit_population as fit_population,
)
from vtrial.jobs import RunRecord as RunRecord, check_config as check_config, run_config as run_config  # noqa: E402
from vtrial.jobs.fit import fit as fit, trial_config_from_fit as trial_config_from_fit  # noqa: E402
from vtrial.io.nonmem import DataSpec as DataSpec, read_nonmem as read_nonmem  # noqa: E402

from vtrial.version import __version__ as __version__  # noqa: E402
