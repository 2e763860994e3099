"""The model of ../shared/data/nmtests (NONMEM ADVAN2 TRANS2) as a vtrial model file.

Compartment 1 `depot` -> compartment 2 `central`; CL = 1.1 L/h, V = 20 L, KA = 1.5 1/h.
Doses into the central compartment take their lag (ALAG2 = LAGT), bioavailability
(F2 = BIOAV), modelled rate (RATE = -1: RAT2) and duration (RATE = -2: DUR2) from the
record's data items, declared as covariates; the depot has no lag and F1 = 1.
CP = A(2) / (V / 1000) in ug/L (amounts in mg). With `weight=True` the clearance is
CL = 1.1 (WT / 70)^0.75 (the time-varying-weight scenario, timevarying_2001).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from vtrial.models.base import Covariate, Model, Observable, Parameter, Route, State
from vtrial.models.linear_pk import LinearPK, MammillaryConstants


def nmtests_model(weight: bool = False) -> Model:
    """The nmtests ADVAN2 model (a factory, as a config's `model = "file.py:factory"` names it)."""

    def cl(p):
        return p["cl"] * (p["wt"] / 70.0) ** 0.75 if weight else p["cl"]

    def rhs(t, y, p, rate):
        depot, central = y
        return jnp.stack([-p["ka"] * depot + rate[0], p["ka"] * depot - cl(p) / p["v"] * central + rate[1]])

    def constants(p):
        return MammillaryConstants(jnp.stack([p["ka"]]), cl(p), p["v"], jnp.zeros(0), jnp.zeros(0))

    covariates = (
        Covariate("lagt", "h", 0.0, "lag time of doses into the central compartment (ALAG2)", positive=False),
        Covariate("bioav", "-", 1.0, "bioavailability of doses into the central compartment (F2)"),
        Covariate("rat2", "mg/h", 1.0, "infusion rate of RATE = -1 records (R2)"),
        Covariate("dur2", "h", 1.0, "infusion duration of RATE = -2 records (D2)"),
    )
    if weight:
        covariates += (Covariate("wt", "kg", 70.0, "body weight"),)
    return Model(
        name="nmtests_advan2" + ("_wt" if weight else ""),
        states=(State("depot", "mg"), State("central", "mg")),
        parameters=(
            Parameter("cl", 1.1, "L/h", 0.0, math.inf, "clearance"),
            Parameter("v", 20.0, "L", 1e-9, math.inf, "volume"),
            Parameter("ka", 1.5, "1/h", 0.0, math.inf, "absorption rate constant"),
        ),
        vector_field=rhs,
        observables=(Observable("cp", lambda y, p: y[1] / (p["v"] / 1000.0), "concentration", "ug/L"),),
        routes=(Route("depot", "depot"), Route("central", "central", "bioav", "lagt", "rat2", "dur2")),
        covariates=covariates,
        linear_pk=LinearPK(("depot",), "central", (), constants),
    )


def nmtests_model_wt() -> Model:
    """The time-varying-weight variant (`nmtests_model(weight=True)`), for configs."""
    return nmtests_model(weight=True)
