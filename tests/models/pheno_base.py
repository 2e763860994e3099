"""Phenobarbital in neonates without covariates (the base model of a covariate search on
../shared/data/pheno): vtrial's one-compartment model (`vtrial.models.one_compartment`:
i.v. boluses, CL and V, closed-form linear PK) with the covariates WGT (kg) and APGR
(Apgar score) declared in place of its body weight, for `[[covariate_effects]]` or
`[covariate_search]` candidates to use. The published model (tests/models/pheno.py) has
CL ~ WGT, V ~ WGT and V larger if APGR < 5."""

from __future__ import annotations

import dataclasses
import math

from vtrial.models import Covariate, Model, Parameter, one_compartment


def pheno_base() -> Model:
    return dataclasses.replace(
        one_compartment(),
        name="pheno_base",
        description="phenobarbital in neonates: one compartment, i.v. boluses, no covariate effects",
        # Both bounded below by 0, not 1e-12 as the shipped V: a lower bound a > 0 is
        # estimated on the log(x - a) scale (vtrial.estimation.population_spec), so 0 keeps
        # the plain log scale and this search's numbers.
        parameters=(
            Parameter("cl", 0.006, "L/h", 0.0, math.inf, "clearance"),
            Parameter("v", 1.3, "L", 0.0, math.inf, "volume"),
        ),
        covariates=(
            Covariate("wgt", "kg", 1.3, "birth weight"),
            Covariate("apgr", "-", 7, "Apgar score", levels=tuple(range(1, 11))),
        ),
    )
