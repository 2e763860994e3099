r"""CIA-1: anakinra in Lewis rats with collagen-induced arthritis (the flagship model).

**A reconstruction, not the published fit.** The structure follows the population
PK/PD/disease-progression model of Liu, Lon, DuBois, Almon and Jusko (J Pharmacokinet
Pharmacodyn 2011;38:769-786): two-compartment PK with two sequential s.c. absorption
stages and linear elimination, a transduction-based feedback disease model with
logistic growth, and an indirect response (inhibited production) of paw volume with
$I_{max} = 0.28$. The paper's full parameter table is not available, so only `imax`
(Liu 2011), `t_onset` (13.9 d) and `kout` (Earp 2009, Pharm Res 26:196) are published
values (source "P"); every other value is an assumption (source "A") chosen so the
model reproduces the published behaviour (model card CIA-1, the project's design
document for this model, whose parameter table the `source` fields repeat). Any
value can be replaced from a config.

Time is in hours after collagen immunisation (day 0). With $C = A_c / V_1$ (mg/L) and
$\mathrm{inh}(C) = I_{max} C / (IC_{50} + C)$:

$$
\begin{aligned}
\dot A_{d1} &= F_{sc} R(t) - k_{a1} A_{d1}, \qquad \dot A_{d2} = k_{a1} A_{d1} - k_{a2} A_{d2},\\
\dot A_c &= k_{a2} A_{d2} - \tfrac{CL + Q}{V_1} A_c + \tfrac{Q}{V_2} A_p, \qquad
\dot A_p = \tfrac{Q}{V_1} A_c - \tfrac{Q}{V_2} A_p,\\
\dot G &= k_{grow} G (1 - G) - k_{fb} F G, \qquad \dot F = k_f (G - F),\\
\dot T_1 &= k_{tr}(G - T_1),\; \dot T_2 = k_{tr}(T_1 - T_2),\; \dot T_3 = k_{tr}(T_2 - T_3),
\quad k_{tr} = 3/\tau_{tr},\\
\dot E &= k_{out} E_0 (1 + s_{dis} T_3)(1 - \mathrm{inh}(C)) - k_{out} E .
\end{aligned}
$$

Disease onset is a parameter event: at $t = t_{onset}$, $g_0$ is added to $G$.
Body weight (`bw`, kg; reference 0.2 kg): $CL = CL_{ref}(BW/0.2)^{0.75}$, same for $Q$;
$V_1 = V_{1,ref} BW/0.2$, same for $V_2$ (exponents are the parameters `allo_cl`,
`allo_v`). The s.c. route doses `depot1` with bioavailability `f_sc` (a bolus adds
`f_sc * amount`, a pump adds `f_sc * R(t)`); the i.v. route doses `central`.
"""

from __future__ import annotations

import jax.numpy as jnp

from vtrial.models.linear_pk import LinearPK, MammillaryConstants
from vtrial.models.base import Covariate, Model, Observable, Panel, Parameter, ParameterEvent, Route, State, standard_endpoints

#: 1 mg/L of anakinra (17.3 kDa) in nM.
NM_PER_MG_PER_L = 1e6 / 17_300.0
BW_REF_KG = 0.2
_INF = float("inf")

PARAMETERS = (
    Parameter("f_sc", 0.75, "-", 0.0, 1.0, "s.c. bioavailability", "A"),
    Parameter("ka1", 0.35, "1/h", 0.0, _INF, "first s.c. absorption stage", "A"),
    Parameter("ka2", 0.15, "1/h", 0.0, _INF, "second s.c. absorption stage", "A"),
    Parameter("cl_ref", 0.095, "L/h", 0.0, _INF, "clearance at 0.2 kg", "A: human 137 mL/min scaled by BW^0.75 (Yang 2003)"),
    Parameter("v1_ref", 0.012, "L", 1e-9, _INF, "central volume at 0.2 kg", "A"),
    Parameter("q_ref", 0.020, "L/h", 0.0, _INF, "intercompartmental clearance at 0.2 kg", "A"),
    Parameter("v2_ref", 0.016, "L", 1e-9, _INF, "peripheral volume at 0.2 kg", "A"),
    Parameter("t_onset", 333.6, "h", 0.0, _INF, "disease onset after immunisation", "P: 13.9 d (Earp 2009, Pharm Res 26:196)"),
    Parameter("g0", 0.01, "-", 0.0, 1.0, "disease activity added at onset", "A"),
    Parameter("k_grow", 0.057, "1/h", 0.0, _INF, "logistic growth of disease activity", "A"),
    Parameter("k_fb", 0.0855, "1/h", 0.0, _INF, "feedback suppression of disease activity", "A"),
    Parameter("k_f", 0.01, "1/h", 0.0, _INF, "build-up of the counter-regulatory signal", "A"),
    Parameter("tau_tr", 12.0, "h", 1e-9, _INF, "mean transit time of transduction (3 stages)", "A"),
    Parameter("s_dis", 1.25, "-", 0.0, _INF, "stimulation of paw-volume production by disease", "A"),
    Parameter("paw0", 1.4, "mL", 1e-9, _INF, "baseline hind-paw volume", "A"),
    Parameter("kout", 0.466, "1/h", 0.0, _INF, "paw edema loss rate", "P: Lewis rat (Earp 2009)"),
    Parameter("imax", 0.28, "-", 0.0, 1.0, "maximal inhibition of paw-volume production", "P: Liu 2011"),
    Parameter("ic50", 0.5, "mg/L", 1e-12, _INF, "plasma concentration of half-maximal inhibition", "A"),
    Parameter("allo_cl", 0.75, "-", -_INF, _INF, "allometric exponent of cl and q", "card"),
    Parameter("allo_v", 1.0, "-", -_INF, _INF, "allometric exponent of v1 and v2", "card"),
)

STATES = (
    State("depot1", "mg", 0.0, "s.c. depot, first absorption stage"),
    State("depot2", "mg", 0.0, "s.c. depot, second absorption stage"),
    State("central", "mg", 0.0, "anakinra in plasma"),
    State("peripheral", "mg", 0.0, "anakinra in tissue"),
    State("disease", "-", 0.0, "disease activity G (0..1)"),
    State("feedback", "-", 0.0, "counter-regulatory signal F"),
    State("transit1", "-", 0.0, "transduction of G to the paw, stage 1"),
    State("transit2", "-", 0.0, "stage 2"),
    State("transit3", "-", 0.0, "stage 3"),
    State("paw", "mL", "paw0", "hind-paw volume E"),
)


def scaled_pk(p):
    """Clearances (L/h) and volumes (L) at the animal's body weight."""
    w = p["bw"] / BW_REF_KG
    return (
        p["cl_ref"] * w ** p["allo_cl"],
        p["q_ref"] * w ** p["allo_cl"],
        p["v1_ref"] * w ** p["allo_v"],
        p["v2_ref"] * w ** p["allo_v"],
    )


def mammillary_constants(p) -> MammillaryConstants:
    """The linear PK block (two s.c. stages into a two-compartment model) for the closed form."""
    cl, q, v1, v2 = scaled_pk(p)
    return MammillaryConstants(jnp.stack([p["ka1"], p["ka2"]]), cl, v1, q[None], v2[None])


def vector_field(t, y, p, rate):
    depot1, depot2, central, peripheral, g, f, tr1, tr2, tr3, paw = y
    cl, q, v1, v2 = scaled_pk(p)
    conc = central / v1
    inh = p["imax"] * conc / (p["ic50"] + conc)
    k_tr = 3.0 / p["tau_tr"]
    return jnp.stack(
        [
            -p["ka1"] * depot1,
            p["ka1"] * depot1 - p["ka2"] * depot2,
            p["ka2"] * depot2 - (cl + q) / v1 * central + q / v2 * peripheral,
            q / v1 * central - q / v2 * peripheral,
            p["k_grow"] * g * (1.0 - g) - p["k_fb"] * f * g,
            p["k_f"] * (g - f),
            k_tr * (g - tr1),
            k_tr * (tr1 - tr2),
            k_tr * (tr2 - tr3),
            p["kout"] * p["paw0"] * (1.0 + p["s_dis"] * tr3) * (1.0 - inh) - p["kout"] * paw,
        ]
    ) + rate


def _conc(y, p):
    return y[2] / scaled_pk(p)[2]


def cia_rat() -> Model:
    """The CIA-1 model (a reconstruction of Liu 2011; see the module docstring)."""
    return Model(
        name="cia_rat",
        states=STATES,
        parameters=PARAMETERS,
        vector_field=vector_field,
        observables=(
            Observable("conc_mg_per_l", _conc, "plasma anakinra", "mg/L"),
            Observable("conc_nM", lambda y, p: _conc(y, p) * NM_PER_MG_PER_L, "plasma anakinra (17.3 kDa)", "nM"),
            Observable("paw_volume_ml", lambda y, p: y[9], "hind-paw volume", "mL"),
            Observable("paw_swelling_pct", lambda y, p: 100.0 * (y[9] - p["paw0"]) / p["paw0"], "swelling above baseline", "%"),
        ),
        routes=(Route("sc", "depot1", bioavailability="f_sc"), Route("iv", "central")),
        covariates=(Covariate("bw", "kg", BW_REF_KG, "body weight"),),
        events=(ParameterEvent(time="t_onset", state="disease", amount="g0"),),
        linear_pk=LinearPK(("depot1", "depot2"), "central", ("peripheral",), mammillary_constants),
        description="CIA-1: reconstruction of the Liu 2011 anakinra PK/PD/disease model in Lewis rats",
        # Exposure of plasma anakinra; inhibition of paw swelling over days 22-28, the
        # settled phase of the disease (card CIA-1).
        endpoints=standard_endpoints("conc_mg_per_l", "paw_swelling_pct", (22 * 24.0, 28 * 24.0)),
        panels=(Panel("conc_mg_per_l", "plasma anakinra (mg/L)"), Panel("paw_volume_ml", "paw volume (mL)")),
    )
