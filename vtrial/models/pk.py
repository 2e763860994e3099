r"""Standard compartmental PK models with NONMEM-style parameter names.

All amounts are in mg, volumes in L, clearances in L/h, rate constants in 1/h, so
concentrations come out in mg/L (`conc_mg_per_l`). Each model takes a body-weight
covariate `bw` (kg) used for mg/kg doses; add allometric scaling with
`vtrial.design.population.CovariateEffect`.

| model | states | parameters | routes |
|---|---|---|---|
| `one_compartment()` | central | cl, v | iv |
| `one_compartment(absorption=True)` | depot, central | ka, f, alag, cl, v | oral/sc/ip (depot), iv |
| `two_compartment()` | central, peripheral | cl, v1, q, v2 | iv |
| `two_compartment(absorption=True)` | depot, central, peripheral | ka, f, alag, cl, v1, q, v2 | oral/sc/ip (depot), iv |

One-compartment: $\dot A_c = k_a A_d - (CL/V) A_c + r_c$. Two-compartment:
$\dot A_c = k_a A_d - \frac{CL+Q}{V_1} A_c + \frac{Q}{V_2} A_p + r_c$,
$\dot A_p = \frac{Q}{V_1} A_c - \frac{Q}{V_2} A_p$. Depot: $\dot A_d = -k_a A_d + r_d$.
Extravascular doses are scaled by `f` and delayed by `alag` (h).

Every model declares its linear PK (`Model.linear_pk`), so by default the solve is
exact (closed form, `vtrial.engine.linear_pk`); `SolverOptions(pk="ode")` integrates instead.
"""

from __future__ import annotations

import jax.numpy as jnp

from vtrial.models.linear_pk import LinearPK, MammillaryConstants
from vtrial.models.base import Covariate, Model, Observable, Panel, Parameter, Route, State, standard_endpoints

_INF = float("inf")


def _absorption_parameters(ka: float, f: float, alag: float) -> tuple[Parameter, ...]:
    return (
        Parameter("ka", ka, "1/h", 0.0, _INF, "first-order absorption rate constant"),
        Parameter("f", f, "-", 0.0, 1.0, "bioavailability of extravascular doses"),
        Parameter("alag", alag, "h", 0.0, _INF, "absorption lag time"),
    )


def _absorption_routes() -> tuple[Route, ...]:
    return tuple(Route(r, "depot", "f", "alag") for r in ("oral", "sc", "ip")) + (Route("iv", "central"),)


def _constants(absorption: bool, two: bool):
    def constants(p) -> MammillaryConstants:
        ka = jnp.stack([p["ka"]]) if absorption else jnp.zeros((0,), jnp.result_type(p["cl"]))
        if two:
            return MammillaryConstants(ka, p["cl"], p["v1"], p["q"][None], p["v2"][None])
        empty = jnp.zeros((0,), jnp.result_type(p["cl"]))
        return MammillaryConstants(ka, p["cl"], p["v"], empty, empty)

    return constants


def _linear_pk(absorption: bool, two: bool) -> LinearPK:
    depots = ("depot",) if absorption else ()
    peripherals = ("peripheral",) if two else ()
    return LinearPK(depots, "central", peripherals, _constants(absorption, two))


def _conc(index: int, volume: str):
    return lambda y, p: y[index] / p[volume]


def one_compartment(
    *, absorption: bool = False, cl: float = 0.1, v: float = 1.0, ka: float = 1.0, f: float = 1.0, alag: float = 0.0, bw_kg: float = 0.25
) -> Model:
    """One-compartment model with linear elimination, i.v. or first-order absorption."""
    params = (
        Parameter("cl", cl, "L/h", 0.0, _INF, "clearance"),
        Parameter("v", v, "L", 1e-12, _INF, "volume of distribution"),
    )
    if absorption:

        def rhs(t, y, p, rate):
            depot, central = y
            return jnp.stack([-p["ka"] * depot + rate[0], p["ka"] * depot - p["cl"] / p["v"] * central + rate[1]])

        states = (State("depot", "mg"), State("central", "mg"))
        params = _absorption_parameters(ka, f, alag) + params
        routes = _absorption_routes()
        c = 1
    else:

        def rhs(t, y, p, rate):
            return jnp.stack([-p["cl"] / p["v"] * y[0] + rate[0]])

        states = (State("central", "mg"),)
        routes = (Route("iv", "central"),)
        c = 0
    return Model(
        name="one_compartment" + ("_absorption" if absorption else ""),
        states=states,
        parameters=params,
        vector_field=rhs,
        observables=(Observable("conc_mg_per_l", _conc(c, "v"), "plasma concentration", "mg/L"),),
        routes=routes,
        covariates=(Covariate("bw", "kg", bw_kg, "body weight"),),
        description=__doc__.splitlines()[0],
        linear_pk=_linear_pk(absorption, two=False),
        endpoints=standard_endpoints("conc_mg_per_l"),
        panels=(Panel("conc_mg_per_l", "concentration (mg/L)"),),
        report_time_unit="h",
    )


def two_compartment(
    *,
    absorption: bool = False,
    cl: float = 0.1,
    v1: float = 1.0,
    q: float = 0.2,
    v2: float = 2.0,
    ka: float = 1.0,
    f: float = 1.0,
    alag: float = 0.0,
    bw_kg: float = 0.25,
) -> Model:
    """Two-compartment model with linear elimination, i.v. or first-order absorption."""
    params = (
        Parameter("cl", cl, "L/h", 0.0, _INF, "clearance"),
        Parameter("v1", v1, "L", 1e-12, _INF, "central volume"),
        Parameter("q", q, "L/h", 0.0, _INF, "intercompartmental clearance"),
        Parameter("v2", v2, "L", 1e-12, _INF, "peripheral volume"),
    )

    def disposition(central, peripheral, p):
        k10, k12, k21 = p["cl"] / p["v1"], p["q"] / p["v1"], p["q"] / p["v2"]
        return -(k10 + k12) * central + k21 * peripheral, k12 * central - k21 * peripheral

    if absorption:

        def rhs(t, y, p, rate):
            depot, central, peripheral = y
            dc, dp = disposition(central, peripheral, p)
            return jnp.stack([-p["ka"] * depot + rate[0], p["ka"] * depot + dc + rate[1], dp + rate[2]])

        states = (State("depot", "mg"), State("central", "mg"), State("peripheral", "mg"))
        params = _absorption_parameters(ka, f, alag) + params
        routes = _absorption_routes()
        c = 1
    else:

        def rhs(t, y, p, rate):
            dc, dp = disposition(y[0], y[1], p)
            return jnp.stack([dc + rate[0], dp + rate[1]])

        states = (State("central", "mg"), State("peripheral", "mg"))
        routes = (Route("iv", "central"),)
        c = 0
    return Model(
        name="two_compartment" + ("_absorption" if absorption else ""),
        states=states,
        parameters=params,
        vector_field=rhs,
        observables=(Observable("conc_mg_per_l", _conc(c, "v1"), "plasma concentration", "mg/L"),),
        routes=routes,
        covariates=(Covariate("bw", "kg", bw_kg, "body weight"),),
        description=__doc__.splitlines()[0],
        linear_pk=_linear_pk(absorption, two=True),
        endpoints=standard_endpoints("conc_mg_per_l"),
        panels=(Panel("conc_mg_per_l", "concentration (mg/L)"),),
        report_time_unit="h",
    )
