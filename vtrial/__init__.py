"""vtrial: GPU-accelerated virtual trials for preclinical pharmacology.

float64 is enabled on import (the default precision of every solve); pass
`SolverOptions(dtype="float32")` for single precision.

Unless the user has chosen otherwise, equinox's runtime checks (which diffrax uses
internally) are set to return NaN rather than raise through a host callback
(`EQX_ON_ERROR=nan`): a host callback in the compiled solve makes it slower and keeps
it out of JAX's persistent compilation cache, while a failed animal is reported through
its status (a NaN output marks it `nonfinite_output`). This takes effect only when
vtrial is imported before equinox/diffrax.
"""

import os as _os

_os.environ.setdefault("EQX_ON_ERROR", "nan")

import jax as _jax  # noqa: E402

_jax.config.update("jax_enable_x64", True)

from vtrial import models as models  # noqa: E402
from vtrial.dosing import Bolus as Bolus, Infusion as Infusion, Regimen as Regimen  # noqa: E402
from vtrial.errors import DataError as DataError, SpecError as SpecError  # noqa: E402
from vtrial.population import (  # noqa: E402
    CovariateDistribution as CovariateDistribution,
    CovariateEffect as CovariateEffect,
    Population as Population,
    ResidualError as ResidualError,
)
from vtrial.simulate import (  # noqa: E402
    iter_population_chunks as iter_population_chunks,
    simulate_population as simulate_population,
)
from vtrial.solve import SolverOptions as SolverOptions  # noqa: E402
from vtrial.trial import Arm as Arm, SimulationResult as SimulationResult, simulate as simulate  # noqa: E402

__version__ = "0.1.0"
