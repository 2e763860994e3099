"""Phenobarbital in neonates (Grasela & Donn 1985): NONMEM's classic first example, as a
model file outside the package (a config names it as `"pheno.py:pheno"`).

NONMEM's control stream (ADVAN1 TRANS2):

    $PK
    TVCL = THETA(1) * WGT
    TVV  = THETA(2) * WGT
    IF (APGR .LT. 5) TVV = TVV * (1 + THETA(3))
    CL = TVCL * EXP(ETA(1))
    V  = TVV * EXP(ETA(2))
    S1 = V
    $ERROR  Y = F * (1 + EPS(1))
    $THETA (0, 0.00469307) (0, 1.00916) (-0.99, 0.1)

Here the THETAs are the model's parameters `tvcl`, `tvv`, `apgr_v` (the random effects
sit on `tvcl` and `tvv`, exponential: `tvcl * exp(eta)` times WGT is NONMEM's CL), and
`individual` is the $PK: it computes `cl` and `v` from them and the covariates `wgt`
(kg) and `apgr` (the Apgar score, a categorical code 1-10).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from vtrial.models import Covariate, Model, Observable, Parameter, Route, State
from vtrial.models.linear_pk import LinearPK, MammillaryConstants


def _individual(p):
    """NONMEM's $PK: CL = THETA1*WGT, V = THETA2*WGT*(1 + THETA3 if APGR < 5)."""
    v = p["tvv"] * p["wgt"] * (1.0 + jnp.where(p["apgr"] < 5, p["apgr_v"], 0.0))
    return {"cl": p["tvcl"] * p["wgt"], "v": v}


def _constants(p) -> MammillaryConstants:
    empty = jnp.zeros((0,), jnp.result_type(p["cl"]))
    return MammillaryConstants(empty, p["cl"], p["v"], empty, empty)


def pheno() -> Model:
    return Model(
        name="pheno",
        description="phenobarbital in neonates: one compartment, i.v. boluses, CL and V per kg, V larger if APGR < 5",
        states=(State("central", "mg"),),
        parameters=(
            Parameter("tvcl", 0.0047, "L/h/kg", 0.0, math.inf, "clearance per kg (THETA1)"),
            Parameter("tvv", 1.0, "L/kg", 0.0, math.inf, "volume per kg (THETA2)"),
            Parameter("apgr_v", 0.1, "-", -0.99, math.inf, "fractional change of V when APGR < 5 (THETA3)"),
        ),
        covariates=(
            Covariate("wgt", "kg", 1.3, "birth weight"),
            Covariate("apgr", "-", 7, "Apgar score", levels=tuple(range(1, 11))),
        ),
        individual=_individual,
        vector_field=lambda t, y, p, rate: jnp.stack([-p["cl"] / p["v"] * y[0] + rate[0]]),
        observables=(Observable("conc_mg_per_l", lambda y, p: y[0] / p["v"], "serum concentration", "mg/L"),),
        routes=(Route("iv", "central"),),
        linear_pk=LinearPK((), "central", (), _constants),
        report_time_unit="h",
    )
