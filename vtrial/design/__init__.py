"""Layer 3, study design: dose regimens, populations and the one trial pipeline.

- `dosing`: `Bolus`, `Infusion`, `Regimen`, lowered to `DoseRecords`;
- `population`: typical values, variability, covariates, residual error;
- `trial`: arms of animals under regimens; the chunked trial pipeline every command uses.
"""
