r"""AMI-1: permanent coronary ligation in CD-1 mice, anakinra 1 vs 100 mg/kg/day, 7 vs 14 days.

**A reconstruction, not a published model.** Model card AMI-1 (the project's design
document for this model; with the shared IL-1 link `vtrial.models.il1_link` and mouse PK
`vtrial.models.mouse_pk`). Published, as direction: anakinra
1 mg/kg/day inhibits apoptosis and remodelling after infarction [O5], 100 mg/kg adds
nothing and 2 weeks of treatment beat 1 week at 4 weeks [O6]; IL-1R1 knockout at day 7
reduces the LVEDD increase by 20%, the LVEF decrease by 50% and apoptosis by 50% [O7]
(these fix `f_rem`, `f_q`, `f_ap`: "P-derived"); body weight 32-37 g [O8]. The echo and
TUNEL magnitudes were not visible, so **every other value is an assumption (source
"A")**: `LV0`, `FS0`, and the rates `kM`, `kQ`, `A_M` fitted by the card to a vehicle
LVEDD 3.7 -> 4.8 mm, FS 45 -> 22% and apoptosis 1.5% at day 7. MPK-1 and especially its
biophase rate `ke0` are assumptions: with $k_{e0} \to \infty$ the 1 mg/kg dose would lose
about half its effect, contradicting [O5, O6]. Any value can be replaced from a config.

Time in hours after ligation. MPK-1 ($A_{dep}$ i.p. depot, $A_c$, $A_p$; $C_p = A_c/V_1$)
with its biophase $\dot C_e = k_{e0}(C_p - C_e)$, and

$$
\begin{aligned}
\dot J &= -k_r J,\; J(0) = j_0 = 1, \qquad \dot D = k_r J - k_D D, \qquad IL = IL_{pk} D \;\;\text{(nM)},\\
f_{sig} &= f_{sig}(c = C_e/K_I,\; l = IL/K_L) \;\;\text{(§0.1; 0 in the knockout)}, \quad
g_X = 1 - f_X + f_X f_{sig},\\
\dot{Ap} &= k_{ap}(Ap_0 + A_M D\, g_{ap} - Ap),\; Ap(0) = Ap_0, \qquad
\dot M = k_M D\, g_{rem}, \qquad \dot Q = k_Q D\, g_q,\\
LVEDD &= LV_0 (1 + M), \quad FS = FS_0 (1 - Q), \quad LVESD = LVEDD (1 - FS/100), \quad
\text{caspase-3} = 1 + c_3 (Ap - Ap_0).
\end{aligned}
$$

The knockout arm sets `il1r_ko = 1`. Extra observables for the knockout comparison of
[O7]: `lvedd_increase_mm` = LVEDD - LV0 and `fs_loss_points` = FS0 - FS, whose
inhibition vs vehicle is the published "LVEDD increase -20%, FS (for LVEF) decrease -50%".

**The closed form.** Depot, central and peripheral are linear mammillary PK, solved
exactly; the biophase $C_e$ follows $C_p$ without taking mass from it, which the
engine's mammillary form cannot express, so it is integrated with the disease states
(fed the exact $C_p$).

**Paired comparisons** (an animal treated vs the same animal untreated, the 1 mg/kg vs
100 mg/kg effect ratio) are made by simulating the same animals under each arm
(`vt.simulate(..., animals=table)`), not inside the model: the ratio needs three
regimens of one animal, which a twin of the untreated states alone cannot give.

Assumptions of this implementation (beyond the card's): `j0` (1 = ligation, 0 = sham)
is a design parameter so a sham arm can be added; 1 mg/L = 57.803 nM (the card writes
57.8); $f_{sig}$ uses the closed form that stays defined at $D = 0$ (see `il1_link`).

References (the labels in this docstring and in the parameters' `source` fields):
[O5] Abbate A, Salloum FN, Vecile E, et al. Circulation 2008;117:2670-2683 (anakinra inhibits apoptosis in experimental acute myocardial infarction).
[O6] Salloum FN, Chau V, Varma A, et al., Abbate A. Cardiovasc Drugs Ther 2009;23:129-135 (does dosage or duration of treatment matter?).
[O7] Abbate A, Salloum FN, Van Tassell BW, et al. PLoS One 2011;6:e27923 (the IL-1/IL-1Ra balance and cardiac remodelling in the mouse).
[O8] Abbate lab, AHA abstract 10389 (CD-1 males, 32-37 g, anakinra i.p.).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from vtrial.models import il1_link, mouse_pk
from vtrial.models.base import Endpoint, Model, Observable, Panel, Parameter, State

BW_KG = 0.033
DAY7_H, DAY28_H = 7 * 24.0, 28 * 24.0
_INF = float("inf")

PARAMETERS = (
    *mouse_pk.parameters(("ip",), effect_site=True),
    *il1_link.link_parameters(3.0, "A"),
    Parameter("j0", 1.0, "-", 0.0, _INF, "injury trigger at t = 0: 1 = coronary ligation, 0 = sham", "design"),
    Parameter("kr", 0.2, "1/h", 0.0, _INF, "decay of the injury trigger (rise of the drive over 12-24 h)", "A"),
    Parameter("kD", math.log(2.0) / 72.0, "1/h", 0.0, _INF, "decay of the DAMP/IL-1 drive", "A (IL-1 activity t1/2 3 d; 20% of peak by day 7)"),
    Parameter("IL_pk", 0.05, "nM", 0.0, _INF, "infarct/border-zone IL-1 per unit drive", "A"),
    Parameter("Ap0", 0.1, "%", 0.0, _INF, "apoptotic index of sham hearts", "A (sham)"),
    Parameter("A_M", 5.43, "%", 0.0, _INF, "apoptosis per unit drive", "A (fit: vehicle day-7 apoptosis 1.5%)"),
    Parameter("k_ap", 0.05, "1/h", 0.0, _INF, "turnover of TUNEL+ cardiomyocytes", "A (t1/2 14 h)"),
    Parameter("f_ap", 0.5, "-", 0.0, 1.0, "IL-1-dependent fraction of apoptosis", "P-derived: knockout apoptosis -50% [O7]"),
    Parameter("kM", 0.00361, "1/h", 0.0, _INF, "dilation per unit drive", "A (fit: vehicle LVEDD 3.7 -> 4.8 mm at day 7)"),
    Parameter("f_rem", 0.2, "-", 0.0, 1.0, "IL-1-dependent fraction of dilation", "P-derived: knockout LVEDD increase -20% [O7]"),
    Parameter("kQ", 0.00621, "1/h", 0.0, _INF, "loss of contractile function per unit drive", "A (fit: vehicle FS 45 -> 22% at day 7)"),
    Parameter("f_q", 0.5, "-", 0.0, 1.0, "IL-1-dependent fraction of functional loss",
              "P-derived: knockout LVEF decrease -50% [O7]; FS used as proxy"),
    Parameter("LV0", 3.7, "mm", 1e-12, _INF, "baseline LV end-diastolic diameter", "A (typical CD-1 baseline)"),
    Parameter("FS0", 45.0, "%", 0.0, 100.0, "baseline fractional shortening", "A (typical CD-1 baseline)"),
    Parameter("c3", 0.5, "1/%", 0.0, _INF, "caspase-3 fold change per % apoptosis", "A"),
)

STATES = (
    *mouse_pk.states("a_dep", effect_site=True),
    State("injury", "-", "j0", "injury trigger J"),
    State("damp", "-", 0.0, "DAMP/IL-1 drive D"),
    State("apoptosis", "%", "Ap0", "peri-infarct apoptotic index Ap"),
    State("dilation", "-", 0.0, "cumulative dilation M"),
    State("dysfunction", "-", 0.0, "cumulative loss of contractile function Q"),
)


def signalling_fraction(y, p):
    """f_sig at the infarct site: C_site = C_e, L = IL_pk D; 0 in the knockout."""
    c = il1_link.antagonist_ratio(y[3], p["k_i"])
    l = il1_link.agonist_ratio(p["IL_pk"] * y[5], p["k_l"])
    return il1_link.knockout(il1_link.signalling_fraction(c, l, p["tau"]), p["il1r_ko"])


def vector_field(t, y, p, rate):
    a_dep, a_c, a_p, c_e, j, d, ap, m, q = y
    absorbed = p["ka_ip"] * a_dep
    d_c, d_p = mouse_pk.pk_rates(a_c, a_p, p, absorbed)
    f_sig = signalling_fraction(y, p)
    return jnp.stack(
        [
            -absorbed,
            d_c,
            d_p,
            mouse_pk.effect_site_rate(mouse_pk.plasma_conc(a_c, p), c_e, p),
            -p["kr"] * j,
            p["kr"] * j - p["kD"] * d,
            p["k_ap"] * (p["Ap0"] + p["A_M"] * d * il1_link.il1_dependent(p["f_ap"], f_sig) - ap),
            p["kM"] * d * il1_link.il1_dependent(p["f_rem"], f_sig),
            p["kQ"] * d * il1_link.il1_dependent(p["f_q"], f_sig),
        ]
    ) + rate


def _lvedd(y, p):
    return p["LV0"] * (1.0 + y[7])


def _fs(y, p):
    return p["FS0"] * (1.0 - y[8])


OBSERVABLES = (
    Observable("lvedd_mm", _lvedd, "LV end-diastolic diameter", "mm"),
    Observable("lvesd_mm", lambda y, p: _lvedd(y, p) * (1.0 - _fs(y, p) / 100.0), "LV end-systolic diameter", "mm"),
    Observable("fs_pct", _fs, "fractional shortening", "%"),
    Observable("apoptosis_pct", lambda y, p: y[6], "peri-infarct apoptotic index (TUNEL+ cardiomyocytes)", "%"),
    Observable("caspase3_fold", lambda y, p: 1.0 + p["c3"] * (y[6] - p["Ap0"]), "caspase-3 activity vs sham", "fold"),
    Observable("plasma_anakinra_mg_l", lambda y, p: mouse_pk.plasma_conc(y[1], p), "plasma anakinra", "mg/L"),
    Observable("effect_site_anakinra_mg_l", lambda y, p: y[3], "anakinra at the infarct site (biophase)", "mg/L"),
    Observable("il1_signalling_fraction", signalling_fraction, "IL-1 signalling left at the infarct site, f_sig", "-"),
    Observable("lvedd_increase_mm", lambda y, p: p["LV0"] * y[7], "LVEDD increase since ligation", "mm"),
    Observable("fs_loss_points", lambda y, p: p["FS0"] * y[8], "FS lost since ligation", "% points"),
)

#: The card's read-outs: echo on days 7 and 28, apoptosis and caspase-3 on day 7, the
#: knockout comparison of [O7] as inhibitions vs the reference arm, and exposure. Plasma
#: Cmax/AUC over four weeks of 10-minute peaks would need a very fine output grid, so
#: the exposure endpoints are the smooth biophase mean (what drives the effect) and
#: the first plasma sample.
ENDPOINTS = (
    Endpoint("lvedd_day7", "lvedd_mm", "value", DAY7_H),
    Endpoint("lvedd_day28", "lvedd_mm", "value", DAY28_H),
    Endpoint("fs_day7", "fs_pct", "value", DAY7_H),
    Endpoint("fs_day28", "fs_pct", "value", DAY28_H),
    Endpoint("lvesd_day7", "lvesd_mm", "value", DAY7_H),
    Endpoint("lvesd_day28", "lvesd_mm", "value", DAY28_H),
    Endpoint("apoptosis_day7", "apoptosis_pct", "value", DAY7_H, inhibition="apoptosis_inhibition_day7_pct"),
    Endpoint("caspase3_day7", "caspase3_fold", "value", DAY7_H),
    Endpoint("lvedd_increase_day7", "lvedd_increase_mm", "value", DAY7_H, inhibition="lvedd_increase_inhibition_day7_pct"),
    Endpoint("fs_loss_day7", "fs_loss_points", "value", DAY7_H, inhibition="fs_loss_inhibition_day7_pct"),
    Endpoint("il1_signalling_mean_day0_7", "il1_signalling_fraction", "mean", 0.0, DAY7_H,
             description="mean IL-1 signalling left at the infarct site over the first week"),
    Endpoint("effect_site_mean_day0_7", "effect_site_anakinra_mg_l", "mean", 0.0, DAY7_H, role="exposure",
             description="mean biophase anakinra over the first week"),
    Endpoint("plasma_0_5h", "plasma_anakinra_mg_l", "value", 0.5, description="plasma anakinra 0.5 h after dose 1"),
)


def ami_mouse() -> Model:
    """The AMI-1 model (a reconstruction; see the module docstring)."""
    return Model(
        name="ami_mouse",
        states=STATES,
        parameters=PARAMETERS,
        vector_field=vector_field,
        observables=OBSERVABLES,
        routes=mouse_pk.routes("ip", "a_dep"),
        covariates=(mouse_pk.bw_covariate(BW_KG),),
        linear_pk=mouse_pk.linear_pk("a_dep", "ka_ip"),
        description="AMI-1: reconstruction of post-infarct remodelling in CD-1 mice with anakinra (assumed parameters)",
        endpoints=ENDPOINTS,
        panels=(
            Panel("lvedd_mm", "LVEDD (mm)"),
            Panel("fs_pct", "fractional shortening (%)"),
            Panel("apoptosis_pct", "apoptotic index (% TUNEL+)"),
            Panel("il1_signalling_fraction", "IL-1 signalling left at the infarct site (f_sig)"),
        ),
        report_time_unit="day",
    )
