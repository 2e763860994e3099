"""Layer 3, study design: dose regimens, populations and the one trial pipeline.

- `dosing`: `Bolus`, `Infusion`, `Regimen`, lowered to `DoseRecords`;
- `population`: typical values, variability, covariates, residual error;
- `trial`: arms of animals under regimens; the chunked trial pipeline every command uses;
- `regimen_space`, `targets`: the regimens a dose optimisation searches and the
  requirements (target, exposure constraints) it must meet;
- `grid_search`, `gradient_search`, `optimize`: dose optimisation (grid sweep with common
  random numbers, gradient search through the solver, both verified and compared);
- `power`: power against study size by replicate virtual studies.
"""
