"""vtrial: GPU-accelerated virtual trials for preclinical pharmacology.

Importing vtrial enables float64 and sets equinox's error mode (`vtrial.settings`).

The public names below are loaded on first use (PEP 562 module `__getattr__`), so
`import vtrial` costs a fraction of a second and a command pays only for the parts it
uses (JAX, diffrax, pandas, matplotlib, the estimation code). `from vtrial import X` and
`vtrial.X` work as if everything had been imported eagerly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from vtrial import settings as settings  # first: x64 and equinox's error mode
from vtrial.errors import DataError as DataError, SpecError as SpecError
from vtrial.version import __version__ as __version__

#: public name -> module it lives in (the attribute has the same name)
_EXPORTS = {
    "Bolus": "vtrial.design.dosing", "Infusion": "vtrial.design.dosing", "Regimen": "vtrial.design.dosing",
    "CovariateDistribution": "vtrial.design.population", "CovariateEffect": "vtrial.design.population",
    "Population": "vtrial.design.population", "ResidualError": "vtrial.design.population",
    "iter_population_chunks": "vtrial.engine.runner", "simulate_population": "vtrial.engine.runner",
    "SolverOptions": "vtrial.engine.solve",
    "Arm": "vtrial.design.trial", "SimulationResult": "vtrial.design.trial", "simulate": "vtrial.design.trial",
    "RegimenShape": "vtrial.design.regimen_space", "RegimenSpace": "vtrial.design.regimen_space",
    "Requirement": "vtrial.design.targets",
    "GradientSettings": "vtrial.design.gradient_search",
    "OptimizationResult": "vtrial.design.optimize", "Uncertainty": "vtrial.design.optimize", "optimize": "vtrial.design.optimize",
    "PowerResult": "vtrial.design.power", "power": "vtrial.design.power",
    "Endpoint": "vtrial.models.base",
    "EstimationSpec": "vtrial.estimation", "PopulationData": "vtrial.estimation", "PopulationFit": "vtrial.estimation",
    "fit_population": "vtrial.estimation",
    "RunRecord": "vtrial.jobs", "check_config": "vtrial.jobs", "run_config": "vtrial.jobs",
    "fit": "vtrial.jobs.fit", "trial_config_from_fit": "vtrial.jobs.fit",
    "DataSpec": "vtrial.io.nonmem", "read_nonmem": "vtrial.io.nonmem",
}
#: subpackages reachable as attributes (`vtrial.models.get_model(...)`) without importing them
_SUBPACKAGES = ("models", "analysis", "assays", "design", "engine", "estimation", "io", "jobs")


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"vtrial.{name}")
    else:
        raise AttributeError(f"module 'vtrial' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBPACKAGES))


__all__ = sorted(["settings", "DataError", "SpecError", "__version__", "models", *_EXPORTS])

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from vtrial import models as models
    from vtrial.design.dosing import Bolus as Bolus, Infusion as Infusion, Regimen as Regimen
    from vtrial.design.gradient_search import GradientSettings as GradientSettings
    from vtrial.design.optimize import OptimizationResult as OptimizationResult, Uncertainty as Uncertainty, optimize as optimize
    from vtrial.design.population import (CovariateDistribution as CovariateDistribution, CovariateEffect as CovariateEffect,
                                          Population as Population, ResidualError as ResidualError)
    from vtrial.design.power import PowerResult as PowerResult, power as power
    from vtrial.design.regimen_space import RegimenShape as RegimenShape, RegimenSpace as RegimenSpace
    from vtrial.design.targets import Requirement as Requirement
    from vtrial.design.trial import Arm as Arm, SimulationResult as SimulationResult, simulate as simulate
    from vtrial.engine.runner import iter_population_chunks as iter_population_chunks, simulate_population as simulate_population
    from vtrial.engine.solve import SolverOptions as SolverOptions
    from vtrial.estimation import (EstimationSpec as EstimationSpec, PopulationData as PopulationData,
                                   PopulationFit as PopulationFit, fit_population as fit_population)
    from vtrial.io.nonmem import DataSpec as DataSpec, read_nonmem as read_nonmem
    from vtrial.jobs import RunRecord as RunRecord, check_config as check_config, run_config as run_config
    from vtrial.jobs.fit import fit as fit, trial_config_from_fit as trial_config_from_fit
    from vtrial.models.base import Endpoint as Endpoint
