"""Oral one-compartment PK driving an indirect-response biomarker (inhibited production).

Depot -> central (mg), C = A_c / V (mg/L); the biomarker R (ng/mL) is made at kin = r0 kout
and lost at kout R, production inhibited by the drug: dR/dt = kin (1 - imax C / (ic50 + C)) - kout R.
Used by the README's "Your own model": `model = "my_model.py:oral_pk_biomarker"` in a config.
"""

import jax.numpy as jnp

from vtrial.models import Model, Observable, Parameter, Route, State
from vtrial.models.linear_pk import LinearPK, MammillaryConstants

INF = float("inf")


def rhs(t, y, p, rate):
    depot, central, biomarker = y
    conc = central / p["v"]
    inhibition = p["imax"] * conc / (p["ic50"] + conc)
    return jnp.stack([
        -p["ka"] * depot + rate[0],
        p["ka"] * depot - p["cl"] / p["v"] * central + rate[1],
        p["r0"] * p["kout"] * (1 - inhibition) - p["kout"] * biomarker + rate[2],
    ])


def oral_pk_biomarker() -> Model:
    return Model(
        name="oral_pk_biomarker",
        states=(State("depot", "mg"), State("central", "mg"), State("biomarker", "ng/mL", initial="r0")),
        parameters=(
            Parameter("ka", 1.2, "1/h", 0.0, INF, "absorption rate constant"),
            Parameter("cl", 0.5, "L/h", 0.0, INF, "clearance"),
            Parameter("v", 5.0, "L", 1e-9, INF, "volume of distribution"),
            Parameter("kout", 0.1, "1/h", 1e-9, INF, "biomarker loss rate constant"),
            Parameter("r0", 100.0, "ng/mL", 0.0, INF, "baseline biomarker"),
            Parameter("imax", 0.9, "-", 0.0, 1.0, "maximal inhibition of production"),
            Parameter("ic50", 2.0, "mg/L", 1e-9, INF, "concentration of half-maximal inhibition"),
        ),
        vector_field=rhs,
        observables=(
            Observable("conc_mg_per_l", lambda y, p: y[1] / p["v"], "plasma concentration", "mg/L"),
            Observable("biomarker_ng_per_ml", lambda y, p: y[2], "biomarker", "ng/mL"),
        ),
        routes=(Route("oral", "depot"), Route("iv", "central")),
        linear_pk=LinearPK(("depot",), "central", (), lambda p: MammillaryConstants(
            jnp.stack([p["ka"]]), p["cl"], p["v"], jnp.zeros(0), jnp.zeros(0))),
        report_time_unit="h",
    )
