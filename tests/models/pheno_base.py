"""Phenobarbital in neonates without covariates (the base model of a covariate search on
../shared/data/pheno): one compartment, i.v. boluses, CL and V with exponential random
effects; the covariates WGT (kg) and APGR (Apgar score) are declared, for
`[[covariate_effects]]` or `[covariate_search]` candidates to use. The published model
(tests/models/pheno.py) has CL ~ WGT, V ~ WGT and V larger if APGR < 5."""

from __future__ import annotations

import math

import jax.numpy as jnp

from vtrial.models import Covariate, Model, Observable, Parameter, Route, State
from vtrial.models.linear_pk import LinearPK, MammillaryConstants


def _constants(p) -> MammillaryConstants:
    empty = jnp.zeros((0,), jnp.result_type(p["cl"]))
    return MammillaryConstants(empty, p["cl"], p["v"], empty, empty)


def pheno_base() -> Model:
    return Model(
        name="pheno_base",
        description="phenobarbital in neonates: one compartment, i.v. boluses, no covariate effects",
        states=(State("central", "mg"),),
        parameters=(
            Parameter("cl", 0.006, "L/h", 0.0, math.inf, "clearance"),
            Parameter("v", 1.3, "L", 0.0, math.inf, "volume"),
        ),
        covariates=(
            Covariate("wgt", "kg", 1.3, "birth weight"),
            Covariate("apgr", "-", 7, "Apgar score", levels=tuple(range(1, 11))),
        ),
        vector_field=lambda t, y, p, rate: jnp.stack([-p["cl"] / p["v"] * y[0] + rate[0]]),
        observables=(Observable("conc_mg_per_l", lambda y, p: y[0] / p["v"], "serum concentration", "mg/L"),),
        routes=(Route("iv", "central"),),
        linear_pk=LinearPK((), "central", (), _constants),
        report_time_unit="h",
    )
