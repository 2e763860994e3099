"""Layer 4, estimation: fitting models to data with optax.

- `least_squares`: named-parameter least-squares and likelihood fits with uncertainty;
- `curvefit`: four-parameter logistic concentration-response fits and Cheng-Prusoff Ki;
- `population` (with `population_spec`, `population_data`, `focei`, `covariance`,
  `population_tables`): population fits of NONMEM datasets by FOCE-I, FOCE, Laplace or
  FO, with NONMEM's covariance step and diagnostics.
"""

from vtrial.estimation.individual import fit_individuals as fit_individuals
from vtrial.estimation.population_data import PopulationData as PopulationData
from vtrial.estimation.population_spec import EstimationSpec as EstimationSpec
from vtrial.estimation.population import (
    ObjectiveValue as ObjectiveValue,
    PopulationFit as PopulationFit,
    fit_population as fit_population,
    population_objective as population_objective,
)
