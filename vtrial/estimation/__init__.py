"""Layer 4, estimation: fitting models to data with optax.

- `least_squares`: named-parameter least-squares and likelihood fits with uncertainty;
- `curvefit`: four-parameter logistic concentration-response fits and Cheng-Prusoff Ki;
- `population` (with `population_spec`, `population_data`, `focei`, `covariance`,
  `population_tables`): population fits of NONMEM datasets by FOCE-I, FOCE, Laplace or
  FO, with NONMEM's covariance step and diagnostics.

The names below are imported when first used: a population fit never imports
`individual`'s optax loop, nor a curve fit the population machinery.
"""

from importlib import import_module

#: Public name -> the module that defines it.
_WHERE = {
    "fit_individuals": "individual",
    "PopulationData": "population_data",
    "EstimationSpec": "population_spec",
    "ObjectiveValue": "population",
    "PopulationFit": "population",
    "fit_population": "population",
    "population_objective": "population",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value
