r"""MPK-1: anakinra PK in the mouse, as building blocks a card's model composes (§0.2).

Source: model card MPK-1 (§0.2 of the project's design document for the IL-1 link and the
mouse PK). **No mouse anakinra PK was
found**, so MPK-1 is CIA-1's rat PK scaled to the mouse with CIA-1's allometric rules
(reference 0.2 kg -> 0.025 kg), plus first-order absorption for bolus routes. Every
value is an assumption (source "A"); in particular the effect-site rate `ke0` is the
cards' key unverified assumption (a mouse plasma + tissue PK study would settle it).

With $C_p = A_c / V_1$ (mg/L), a bolus of `F * dose` into the depot (i.p. or s.c.; an
i.v. dose goes into $A_c$):

$$
\begin{aligned}
\dot A_{dep} &= -k_a A_{dep}, \\
\dot A_c &= k_a A_{dep} - CL\,C_p - Q\,(C_p - A_p/V_2), \qquad
\dot A_p = Q\,(C_p - A_p/V_2), \\
\dot C_e &= k_{e0}\,(C_p - C_e) \qquad \text{(optional biophase, } C_{site} = C_e\text{)},
\end{aligned}
$$

$CL = CL_{ref}(BW/0.025)^{0.75}$, $Q = Q_{ref}(BW/0.025)^{0.75}$,
$V_1 = V_{1,ref}\,BW/0.025$, $V_2 = V_{2,ref}\,BW/0.025$ (BW in kg, covariate `bw`;
doses in mg/kg are multiplied by it).

**The closed form.** Depot, central and peripheral (and any extra peripheral a card
adds, such as the peritoneal cavity of MSU-1) form a linear mammillary system, declared
with `linear_pk(...)` and solved exactly by `vtrial.engine.linear_pk`. The biophase is
linear too but *not* mammillary: it is a concentration that follows $C_p$ without taking
mass from it, while the engine's form conserves mass between central and peripherals
(making it a peripheral of vanishing volume would be an approximation). A model that
uses it therefore integrates $C_e$ with its other non-PK states, fed the exact $C_p$.

A card's model composes: `parameters(...)` (the table with units and sources),
`states(...)`, `routes(...)`, `disposition(p)`, `pk_rates(...)`, `effect_site_rate(...)`
and `linear_pk(...)`; `mouse_pk(...)` is MPK-1 on its own, as a `Model`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from vtrial.models.base import Covariate, Model, Observable, Panel, Parameter, Route, State, standard_endpoints
from vtrial.models.linear_pk import LinearPK, MammillaryConstants

#: Reference body weight of the scaled parameters (kg).
BW_REF_KG = 0.025
#: Allometric exponents of clearances and volumes (CIA-1's rules).
ALLO_CL, ALLO_V = 0.75, 1.0
#: The absorption routes MPK-1 defines: route -> (ka, F) typical values and source.
ABSORPTION = {
    "ip": (1.5, 0.9, "A (fast peritoneal uptake of a 17-kDa protein)"),
    "sc": (0.7, 0.75, "A: human s.c. F 0.80-0.95 (S24, S28); rat IL-1beta s.c. F 0.405, t1/2 1.59 h (S29, O19)"),
}
_INF = float("inf")

_DISPOSITION = (
    Parameter("cl_ref", 0.020, "L/h", 0.0, _INF, "clearance at 0.025 kg",
              "A: CIA-1 cl_ref 0.095 L/h x (0.025/0.2)^0.75 (0.8 L/h/kg, of the order of mouse GFR)"),
    Parameter("v1_ref", 0.0015, "L", 1e-12, _INF, "central volume at 0.025 kg", "A: CIA-1 v1_ref x 0.125 (plasma volume of a 25-g mouse)"),
    Parameter("q_ref", 0.0042, "L/h", 0.0, _INF, "intercompartmental clearance at 0.025 kg", "A: CIA-1 q_ref x 0.125^0.75"),
    Parameter("v2_ref", 0.0020, "L", 1e-12, _INF, "peripheral volume at 0.025 kg", "A: CIA-1 v2_ref x 0.125"),
)


class Disposition(NamedTuple):
    """One animal's scaled disposition: `cl`, `q` (L/h), `v1`, `v2` (L)."""

    cl: jnp.ndarray
    q: jnp.ndarray
    v1: jnp.ndarray
    v2: jnp.ndarray


def parameters(absorption: tuple[str, ...] = ("ip",), *, effect_site: bool = False, ke0: float = 0.1) -> tuple[Parameter, ...]:
    """MPK-1's parameters: disposition, `ka_<route>`/`f_<route>` per absorption route, `ke0`.

    **Arguments:**
    - `absorption`: routes with a first-order depot, from `ABSORPTION` ("ip", "sc");
    - `effect_site`: add `ke0` (1/h), the biophase rate constant (typical `ke0`).
    """
    out = list(_DISPOSITION)
    for route in absorption:
        ka, f, source = ABSORPTION[route]
        out += [
            Parameter(f"ka_{route}", ka, "1/h", 0.0, _INF, f"{route} absorption rate constant", source),
            Parameter(f"f_{route}", f, "-", 0.0, 1.0, f"{route} bioavailability", source),
        ]
    if effect_site:
        out.append(Parameter("ke0", ke0, "1/h", 0.0, _INF, "biophase (effect-site) rate constant",
                             "A, key assumption: tissue biophase t1/2 ~7 h (slow lymph-limited exit from inflamed tissue)"))
    return tuple(out)


def bw_covariate(reference_kg: float) -> Covariate:
    """The body-weight covariate `bw` (kg) at a card's typical weight."""
    return Covariate("bw", "kg", reference_kg, "body weight")


def disposition(p) -> Disposition:
    """Clearances and volumes at the animal's body weight `p["bw"]` (kg)."""
    w = p["bw"] / BW_REF_KG
    return Disposition(p["cl_ref"] * w**ALLO_CL, p["q_ref"] * w**ALLO_CL, p["v1_ref"] * w**ALLO_V, p["v2_ref"] * w**ALLO_V)


def plasma_conc(a_c, p):
    """$C_p = A_c / V_1$ (mg/L) from the central amount (mg)."""
    return a_c / disposition(p).v1


def pk_rates(a_c, a_p, p, absorbed=0.0):
    r"""$(\dot A_c, \dot A_p)$ of central and peripheral (mg/h), with `absorbed` (mg/h,
    e.g. $k_a A_{dep}$) flowing into the central compartment; doses' `rate` not included."""
    d = disposition(p)
    c_p = a_c / d.v1
    exchange = d.q * (c_p - a_p / d.v2)
    return absorbed - d.cl * c_p - exchange, exchange


def effect_site_rate(c_p, c_e, p):
    r"""$\dot C_e = k_{e0}(C_p - C_e)$ (mg/L/h)."""
    return p["ke0"] * (c_p - c_e)


def states(depot: str | None = "a_dep", *, effect_site: bool = False) -> tuple[State, ...]:
    """MPK-1's states: the depot (if any), `a_c`, `a_p` (mg) and the biophase `c_e` (mg/L)."""
    out = [State(depot, "mg", 0.0, "absorption depot")] if depot else []
    out += [State("a_c", "mg", 0.0, "anakinra in plasma (central)"), State("a_p", "mg", 0.0, "anakinra in tissue (peripheral)")]
    if effect_site:
        out.append(State("c_e", "mg/L", 0.0, "anakinra at the effect site (biophase)"))
    return tuple(out)


def routes(absorption: str | None = "ip", depot: str = "a_dep") -> tuple[Route, ...]:
    """Dose routes: `absorption` into `depot` with bioavailability `f_<route>`, and "iv" into `a_c`."""
    out = (Route(absorption, depot, bioavailability=f"f_{absorption}"),) if absorption else ()
    return out + (Route("iv", "a_c"),)


def linear_pk(depot: str | None = "a_dep", ka: str | None = "ka_ip", extra_peripherals: tuple[tuple[str, str, str], ...] = ()) -> LinearPK:
    """The closed-form declaration: `depot` (rate constant parameter `ka`) -> `a_c` <-> `a_p`.

    `extra_peripherals`: `(state, q parameter, v parameter)` of further compartments that
    exchange with plasma as $\\dot A_j = Q_j (C_p - A_j / V_j)$ (at most one more: the
    engine's form takes two peripherals).
    """

    def constants(p) -> MammillaryConstants:
        d = disposition(p)
        kas = jnp.stack([p[ka]]) if depot else jnp.zeros((0,), jnp.result_type(d.cl))
        q = jnp.stack([d.q, *(p[qn] for _, qn, _ in extra_peripherals)])
        v = jnp.stack([d.v2, *(p[vn] for _, _, vn in extra_peripherals)])
        return MammillaryConstants(kas, d.cl, d.v1, q, v)

    return LinearPK((depot,) if depot else (), "a_c", ("a_p", *(s for s, _, _ in extra_peripherals)), constants)


def mouse_pk(absorption: str = "ip", *, effect_site: bool = False, bw_kg: float = BW_REF_KG) -> Model:
    """MPK-1 on its own: an `absorption` ("ip" or "sc") depot and i.v. route, optional biophase.

    Observables `plasma_anakinra_mg_l` (and `effect_site_anakinra_mg_l`).
    """

    def vector_field(t, y, p, rate):
        a_dep, a_c, a_p = y[0], y[1], y[2]
        absorbed = p[f"ka_{absorption}"] * a_dep
        d_c, d_p = pk_rates(a_c, a_p, p, absorbed)
        rhs = [-absorbed, d_c, d_p]
        if effect_site:
            rhs.append(effect_site_rate(plasma_conc(a_c, p), y[3], p))
        return jnp.stack(rhs) + rate

    observables = [Observable("plasma_anakinra_mg_l", lambda y, p: plasma_conc(y[1], p), "plasma anakinra", "mg/L")]
    if effect_site:
        observables.append(Observable("effect_site_anakinra_mg_l", lambda y, p: y[3], "anakinra at the effect site", "mg/L"))
    return Model(
        name=f"mouse_pk_{absorption}" + ("_effect_site" if effect_site else ""),
        states=states("a_dep", effect_site=effect_site),
        parameters=parameters((absorption,), effect_site=effect_site),
        vector_field=vector_field,
        observables=tuple(observables),
        routes=routes(absorption),
        covariates=(bw_covariate(bw_kg),),
        linear_pk=linear_pk("a_dep", f"ka_{absorption}"),
        description="MPK-1: mouse anakinra PK scaled from CIA-1 (all values assumptions)",
        endpoints=standard_endpoints("plasma_anakinra_mg_l"),
        panels=(Panel("plasma_anakinra_mg_l", "plasma anakinra (mg/L)", log_scale=True),),
        report_time_unit="h",
    )
