r"""MSU-1: monosodium urate crystal peritonitis in BALB/c mice, anakinra 200 ug i.p.

**A reconstruction, not a published model.** Model card MSU-1 (the project's design
document for this model; with the shared IL-1 link `vtrial.models.il1_link` and mouse PK
`vtrial.models.mouse_pk`). The qualitative facts are
published (IL-1 blockade or IL-1R deficiency prevents the neutrophil influx MSU crystals
cause [O1-O3]; C5a drives an IL-1R-independent part [O4]); "200 ug i.p." and "BALB/c"
come from the seed, the crystal dose, lavage volume and 6-h read-out are recalled, not
seen (A*); **every numerical parameter is an assumption (source "A")**, fitted by the card
to a vehicle N(6 h) of 3.0e6 neutrophils, an IL-1beta peak of ~110 pg/mL and a knockout
effect of -76% at 6 h. MPK-1 (mouse PK) is itself an assumption. Any value can be
replaced from a config.

Time in hours after the crystals (`t_msu_h`, 0 by default), amounts mg, volumes L. With
$C_{pc} = A_{pc}/V_{pc}$, $C_p = A_c/V_1$ (mg/L) and MPK-1's $CL, Q, V_1, V_2$ at `bw`:

$$
\begin{aligned}
\dot A_{pc} &= Q_{pc}(C_p - C_{pc}) \quad\text{(i.p. doses go here: cavity = dosing and effect site)}\\
\dot A_c &= k_{a,sc} A_{sc} + Q_{pc}(C_{pc} - C_p) - CL\,C_p - Q(C_p - A_p/V_2), \quad
\dot A_p = Q(C_p - A_p/V_2), \quad \dot A_{sc} = -k_{a,sc} A_{sc}\\
\dot X &= -k_x X, \quad \dot M = k_m (X - M), \quad \dot{IL} = k_{ilsyn} M - k_{il} IL \;\;\text{(pM)}\\
E &= E(c = C_{pc}/K_I,\; l = (IL/1000)/K_L) \;\;\text{(§0.1; 0 in the knockout)}\\
\dot K &= k_K (w_E E + w_X M - K), \qquad \dot N = k_{out} N_0 + k_{in} K - k_{out} N, \quad N(0) = N_0 .
\end{aligned}
$$

At $t = $ `t_msu_h` the crystals add `msu_x0` (= MSU dose / 3 mg; 0 for PBS) to $X$. The
knockout arm sets `il1r_ko = 1`. Observables: `neutrophils_1e6` = N,
`lavage_il1b_pg_ml` = IL x 17.3 x V_pc / V_lav, `plasma_anakinra_mg_l` = C_p,
`peritoneal_anakinra_mg_l` = C_pc, `il1_signal` = E, and `percent_inhibition`.

**Paired inhibition inside the model (a choice of this implementation).** The card's
`percent_inhibition = 100 (1 - N_treated / N_vehicle)` compares an animal with itself
untreated. Anakinra changes only K and N (X, M and IL do not depend on it), so the
model carries a vehicle twin of those two states, `chemokine_vehicle` and
`neutrophils_vehicle`: the same equations with no drug and an intact receptor
($E$ at $c = 0$, `il1r_ko` ignored). `percent_inhibition` is then a true per-animal
observable from one solve, exact for every parameter set, and in the knockout arm it is
the knockout's effect. The two extra states are the only departure from the card's 9.

**The closed form.** $A_{pc}$ exchanges two-way with plasma exactly like a mammillary
peripheral (volume $V_{pc}$, clearance $Q_{pc}$, no elimination), so the whole PK block
($A_{sc} \to A_c \leftrightarrow A_p, A_{pc}$: one depot, central, two peripherals) is
declared linear and solved exactly; an i.p. bolus is a jump of a peripheral amount,
which the closed form propagates like any other.

Assumptions of this implementation (beyond the card's): the site concentration uses
1 mg/L = 57.803 nM (17.3 kDa; the card writes 57.8); $V_{pc}$ and $Q_{pc}$ are not
scaled with body weight (the card gives no rule); the s.c. pre-dose of arm 6 ("1 h
before the crystals") is expressed by moving the crystals to `t_msu_h = 1`, since doses
cannot precede t = 0.

References (the labels in this docstring and in the parameters' `source` fields):
[O1] So A, De Smedt T, Revaz S, Tschopp J. Arthritis Res Ther 2007;9:R28 (IL-1 inhibition by anakinra in acute gout).
[O2] Martinon F, Pétrilli V, Mayor A, Tardivel A, Tschopp J. Nature 2006;440:237-241 (uric acid crystals activate the NALP3 inflammasome).
[O3] Chen CJ, Shi Y, Hearn A, et al., Rock KL. J Clin Invest 2006;116:2262-2271 (MyD88-dependent IL-1R signalling in gouty inflammation).
[O4] Khameneh HJ et al. Front Pharmacol 2017;8:10 (C5a in MSU crystal-induced peritonitis).
"""

from __future__ import annotations

import jax.numpy as jnp

from vtrial.models import il1_link, mouse_pk
from vtrial.models.base import Endpoint, Model, Observable, Panel, Parameter, ParameterEvent, Route, State, standard_endpoints

BW_KG = 0.022
#: IL-1beta molecular weight (kDa): 1 pM = 17.3 pg/mL.
IL1B_MW_KDA = 17.3
_INF = float("inf")

PARAMETERS = (
    *mouse_pk.parameters(("sc",)),
    Parameter("v_pc", 0.001, "L", 1e-12, _INF, "peritoneal fluid volume", "A (injected 0.5-1 mL plus exudate)"),
    Parameter("q_pc", 0.0015, "L/h", 0.0, _INF, "peritoneal-plasma exchange clearance", "A (peritoneal exchange t1/2 ~28 min)"),
    Parameter("msu_x0", 1.0, "-", 0.0, _INF, "crystal stimulus injected: MSU dose / 3 mg (0 for PBS)",
              "design: 3 mg MSU in 0.5 mL i.p. (A*, recalled from Martinon 2006 / So 2007)"),
    Parameter("t_msu_h", 0.0, "h", 0.0, _INF, "time of the crystal injection", "design"),
    Parameter("kx", 0.20, "1/h", 0.0, _INF, "loss of crystal activity (coating, NET aggregation)", "A (fit)"),
    Parameter("km", 1.0, "1/h", 0.0, _INF, "macrophage/inflammasome activation rate", "A (inflammasome lag ~1 h)"),
    Parameter("k_ilsyn", 55.0, "pM/h", 0.0, _INF, "IL-1beta release per unit activation", "A (fit: lavage IL-1beta peak ~110 pg/mL)"),
    Parameter("k_il", 1.0, "1/h", 0.0, _INF, "local IL-1beta loss", "A (local IL-1beta t1/2 ~40 min)"),
    *il1_link.link_parameters(10.0, "A"),
    Parameter("kK", 1.0, "1/h", 0.0, _INF, "chemokine drive turnover", "A"),
    Parameter("wE", 1.0, "-", 0.0, _INF, "weight of the IL-1R-dependent chemokine drive", "A (fit: knockout -76% at 6 h [O1-O3])"),
    Parameter("wX", 0.25, "-", 0.0, _INF, "weight of the IL-1R-independent (C5a etc.) drive", "A (fit: knockout -76% at 6 h [O1-O3])"),
    Parameter("kin", 1.77, "1e6 cells/h", 0.0, _INF, "neutrophil influx per unit drive", "A (fit: vehicle N(6 h) = 3.0e6)"),
    Parameter("kout", 0.25, "1/h", 0.0, _INF, "peritoneal neutrophil loss", "A (residence t1/2 ~2.8 h; resolution by 24 h)"),
    Parameter("N0", 0.05, "1e6 cells", 0.0, _INF, "resident peritoneal neutrophils", "A (few resident neutrophils)"),
    Parameter("v_lav", 0.005, "L", 1e-12, _INF, "lavage volume", "A (5 mL lavage)"),
)

STATES = (
    State("a_sc", "mg", 0.0, "s.c. depot (arm 6 only)"),
    State("a_c", "mg", 0.0, "anakinra in plasma"),
    State("a_p", "mg", 0.0, "anakinra in tissue"),
    State("a_pc", "mg", 0.0, "anakinra in the peritoneal cavity (dosing and effect site)"),
    State("crystals", "-", 0.0, "crystal stimulus X"),
    State("inflammasome", "-", 0.0, "macrophage/inflammasome activation M"),
    State("il1b", "pM", 0.0, "local IL-1beta IL"),
    State("chemokine", "-", 0.0, "chemokine drive K"),
    State("neutrophils", "1e6 cells", "N0", "peritoneal neutrophils N"),
    State("chemokine_vehicle", "-", 0.0, "K of the same animal untreated (vehicle twin)"),
    State("neutrophils_vehicle", "1e6 cells", "N0", "N of the same animal untreated (vehicle twin)"),
)


def _site(y, p):
    """(c, l) at the peritoneal site: anakinra over K_I and IL-1beta over K_L."""
    c = il1_link.antagonist_ratio(y[3] / p["v_pc"], p["k_i"])
    l = il1_link.agonist_ratio(y[6] / 1000.0, p["k_l"])
    return c, l


def _signal(y, p):
    c, l = _site(y, p)
    return il1_link.knockout(il1_link.il1_signal(c, l, p["tau"]), p["il1r_ko"])


def vector_field(t, y, p, rate):
    a_sc, a_c, a_p, a_pc, x, m, il, k, n, k_veh, n_veh = y
    c_p = mouse_pk.plasma_conc(a_c, p)
    exchange = p["q_pc"] * (c_p - a_pc / p["v_pc"])
    absorbed = p["ka_sc"] * a_sc
    d_c, d_p = mouse_pk.pk_rates(a_c, a_p, p, absorbed)
    _, l = _site(y, p)
    e = _signal(y, p)
    e_vehicle = il1_link.il1_signal(0.0, l, p["tau"])
    return jnp.stack(
        [
            -absorbed,
            d_c - exchange,
            d_p,
            exchange,
            -p["kx"] * x,
            p["km"] * (x - m),
            p["k_ilsyn"] * m - p["k_il"] * il,
            p["kK"] * (p["wE"] * e + p["wX"] * m - k),
            p["kout"] * p["N0"] + p["kin"] * k - p["kout"] * n,
            p["kK"] * (p["wE"] * e_vehicle + p["wX"] * m - k_veh),
            p["kout"] * p["N0"] + p["kin"] * k_veh - p["kout"] * n_veh,
        ]
    ) + rate


OBSERVABLES = (
    Observable("neutrophils_1e6", lambda y, p: y[8], "peritoneal neutrophils per lavage", "1e6 cells"),
    Observable("lavage_il1b_pg_ml", lambda y, p: y[6] * IL1B_MW_KDA * p["v_pc"] / p["v_lav"], "IL-1beta in the lavage fluid", "pg/mL"),
    Observable("plasma_anakinra_mg_l", lambda y, p: mouse_pk.plasma_conc(y[1], p), "plasma anakinra", "mg/L"),
    Observable("peritoneal_anakinra_mg_l", lambda y, p: y[3] / p["v_pc"], "anakinra in the peritoneal fluid", "mg/L"),
    Observable("il1_signal", _signal, "IL-1RI signal E at the peritoneal site (0..1)", "-"),
    Observable("percent_inhibition", lambda y, p: 100.0 * (1.0 - y[8] / y[10]),
               "paired inhibition of neutrophils vs the same animal untreated", "%"),
)

#: The card's read-outs: neutrophils at 6 h (primary) and 24 h with inhibition vs the
#: reference arm, the paired inhibition at 6 h, the lavage IL-1beta peak, plasma exposure.
ENDPOINTS = (
    Endpoint("neutrophils_6h", "neutrophils_1e6", "value", 6.0, inhibition="neutrophil_inhibition_6h_pct",
             description="primary read-out: lavage neutrophils at 6 h"),
    Endpoint("paired_inhibition_6h", "percent_inhibition", "value", 6.0, description="inhibition vs the same animal untreated"),
    Endpoint("neutrophils_24h", "neutrophils_1e6", "value", 24.0, inhibition="neutrophil_inhibition_24h_pct",
             description="lavage neutrophils at 24 h (duration of the effect)"),
    Endpoint("il1b_peak", "lavage_il1b_pg_ml", "max", description="peak lavage IL-1beta"),
    Endpoint("il1b_tmax_h", "lavage_il1b_pg_ml", "tmax", description="time of the IL-1beta peak"),
    *standard_endpoints("plasma_anakinra_mg_l"),
)


def msu_peritonitis_mouse() -> Model:
    """The MSU-1 model (a reconstruction; see the module docstring)."""
    return Model(
        name="msu_peritonitis_mouse",
        states=STATES,
        parameters=PARAMETERS,
        vector_field=vector_field,
        observables=OBSERVABLES,
        routes=(Route("ip", "a_pc"), Route("sc", "a_sc", bioavailability="f_sc"), Route("iv", "a_c")),
        covariates=(mouse_pk.bw_covariate(BW_KG),),
        events=(ParameterEvent(time="t_msu_h", state="crystals", amount="msu_x0"),),
        linear_pk=mouse_pk.linear_pk("a_sc", "ka_sc", extra_peripherals=(("a_pc", "q_pc", "v_pc"),)),
        description="MSU-1: reconstruction of MSU-crystal peritonitis in BALB/c mice with anakinra (assumed parameters)",
        endpoints=ENDPOINTS,
        panels=(
            Panel("neutrophils_1e6", "peritoneal neutrophils (1e6)"),
            Panel("percent_inhibition", "paired inhibition of neutrophils (%)"),
            Panel("lavage_il1b_pg_ml", "lavage IL-1beta (pg/mL)"),
            Panel("plasma_anakinra_mg_l", "plasma anakinra (mg/L)"),
        ),
        report_time_unit="h",
    )
