r"""ALPHA-1: Ross River (RRV) and chikungunya (CHIKV) virus arthritis in mice, bone loss.

**A reconstruction, not a published model.** Chen et al. 2019 (Arthritis Rheumatol
71:1185) found that anakinra reduced RRV- and CHIKV-induced bone loss (P < 0.001 and
P < 0.05) without changing disease score, weight loss or viraemia; Chen 2014 (PNAS) and
2015 (J Virol) tie the loss to a raised RANKL/OPG ratio. Dose, schedule, mouse age and
effect sizes were not visible, so every number of model card ALPHA-1 (the project's
design document for this model) is an assumption (source `A`, or `A*`
where recalled from the Mahalingam lab but not seen) except K_I and K_L of the shared
IL-1RI link (`vtrial.models.il1_link`); the PK is the mouse module MPK-1
(`vtrial.models.mouse_pk`, i.p. depot, biophase $C_e$), itself all assumptions.

Time in h after s.c. infection (t = 0). States: MPK-1 ($A_{dep}, A_c, A_p$ in mg,
$C_e$ in mg/L), virus $V$ (fraction of its carrying capacity), adaptive clearance $Ab$,
joint inflammation $INF$ (0-1), RANKL/OPG ratio $RO$, osteoclasts $OC$ (fold), BV/TV
relative to mock $b$:

$$
\begin{aligned}
\dot V &= r V (1 - V) - k_c Ab\, V, \quad V(0) = v_0 \;(10^{-4}\text{ infected, 0 mock}), &
\dot{Ab} &= k_{ab} \frac{V}{V + V_{50}},\\
\dot{INF} &= k_{inf}\Big(\frac{V}{V + V_{50}} - INF\Big), &
\dot{RO} &= k_{ro}\big(1 + S_{ro}\, INF\,(1 - f_{ro} + f_{ro} f_{sig}) - RO\big),\\
\dot{OC} &= k_{oc}(RO - OC), &
\dot b &= k_b (1 - OC\, b),
\end{aligned}
$$

$RO(0) = OC(0) = b(0) = 1$; $f_{sig}$ is the link at $C_{site} = C_e$ and
$L = IL_{pk}\, INF$ (nM), and 0 in an IL-1R knockout (`il1r_ko = 1`). No drug term enters
$V$, $Ab$ or $INF$, so virus and disease are the same under anakinra (as published).

Observables: BV/TV $= BV_0 b$ (%), its loss vs mock $100(1 - b)$, RANKL/OPG, TRAP⁺
osteoclasts, titre $V_{pk,log} + \log_{10} V$ (log10 PFU/g), disease score
$DS_{max} INF$, weight gain $g_w t_{days} - w_{loss} INF$ (%).

The two viruses differ in their parameters and body weight (RRV: 25-day-old C57BL/6,
0.012 kg; CHIKV: 0.020 kg): `alphavirus_bone_mouse("rrv")` and `("chikv")` are the two
columns of the card, registered as `alphavirus_bone_mouse` and
`alphavirus_bone_mouse_chikv` (a config's arm cannot change the body-weight covariate,
so each virus has its config).

**Assumptions of this implementation** (beyond the card's):
- the card's logit-scale IIV of $f_{ro}$ is carried by `f_ro_odds_factor` (typical 1):
  $f_{ro,i} = s f_{ro} / (1 - f_{ro} + s f_{ro})$, so a log-normal factor $s$ (the engine's
  variability) is a normal shift of $\mathrm{logit}\, f_{ro}$;
- the weight gain is carried as an eleventh state, $\dot w = g_w/24 - w_{loss}\,\dot{INF}$,
  $w(0) = 0$, which is the card's formula exactly (observables see states, not time);
- the titre floors $V$ at $10^{-12}$ inside the logarithm, so a mock animal ($V \equiv 0$)
  reads $V_{pk,log} - 12$ instead of $-\infty$; infected animals stay far above it;
- anakinra "days 1-14" means an i.p. bolus at 24, 48, ..., 336 h (the configs' arms).

References (the labels in this docstring and in the parameters' `source` fields):
[O9] Chen W, ..., Mahalingam S. Arthritis Rheumatol 2019;71:1185-1190 (anakinra and bone loss in alphavirus arthritis).
"""

from __future__ import annotations

import jax.numpy as jnp

from vtrial.models import mouse_pk
from vtrial.models.base import Endpoint, Model, Observable, Panel, Parameter, State, standard_endpoints
from vtrial.models.il1_link import agonist_ratio, antagonist_ratio, il1_dependent, knockout, link_parameters, signalling_fraction

_INF = float("inf")
#: Floor of V inside the titre's logarithm (see the module docstring).
V_FLOOR = 1e-12
DAY10_H, DAY15_H = 240.0, 360.0

#: The card's parameter table: name -> (RRV, CHIKV, unit, description, source).
CARD = {
    "r": (0.12, 0.20, "1/h", "virus replication rate", "A (titre peak at day 3.9 RRV, 2.5 CHIKV)"),
    "kc": (0.1, 0.1, "1/h", "clearance of virus by the adaptive response", "A"),
    "kab": (0.02, 0.03, "1/h", "build-up of adaptive clearance", "A (titre 2.7 / 3.7 log below peak by day 10)"),
    "v50": (0.1, 0.1, "-", "virus level of half-maximal drive", "A"),
    "k_inf": (0.012, 0.03, "1/h", "joint inflammation rate constant", "A (inflammation peak at day 6.5 / 4.5)"),
    "il_pk": (0.05, 0.05, "nM", "joint IL-1 at full inflammation", "A"),
    "k_ro": (0.05, 0.05, "1/h", "RANKL/OPG turnover", "A"),
    "s_ro": (3.0, 2.5, "-", "RANKL/OPG stimulation by inflammation", "A (RANKL/OPG peak about 2.5-fold)"),
    "f_ro": (0.75, 0.5, "-", "IL-1-dependent fraction of the RANKL/OPG stimulation",
             "A (protection stronger for RRV, P < 0.001, than CHIKV, P < 0.05 [O9])"),
    "k_oc": (0.03, 0.03, "1/h", "osteoclastogenesis rate constant", "A (t1/2 about 1 d)"),
    "k_b": (0.002, 0.002, "1/h", "trabecular bone turnover", "A (young-mouse turnover)"),
    "bv0": (20.0, 20.0, "%", "mock tibial-epiphysis BV/TV", "A"),
    "vpk_log": (7.0, 6.5, "log10 PFU/g", "titre at V = 1", "A"),
    "ds_max": (5.0, 2.0, "score", "disease score at full inflammation", "A"),
}
BW_KG = {"rrv": (0.012, "A* (25-day-old C57BL/6)"), "chikv": (0.020, "A* (C57BL/6)")}

STATES = (
    *mouse_pk.states("a_dep", effect_site=True),
    State("virus", "-", "v0", "virus, fraction of its carrying capacity"),
    State("antibody", "-", 0.0, "adaptive clearance Ab"),
    State("inflammation", "-", 0.0, "joint inflammation INF (0-1)"),
    State("rankl_opg", "fold", 1.0, "RANKL/OPG ratio"),
    State("osteoclasts", "fold", 1.0, "TRAP+ osteoclasts"),
    State("bone", "-", 1.0, "BV/TV relative to mock"),
    State("weight_gain", "%", 0.0, "weight gain since infection"),
)


def _parameters(virus: str) -> tuple[Parameter, ...]:
    column = 0 if virus == "rrv" else 1
    card = []
    for name, row in CARD.items():
        upper = 1.0 if name == "f_ro" else _INF
        lower = -_INF if name == "vpk_log" else 0.0
        card.append(Parameter(name, row[column], row[2], lower, upper, row[3], row[4]))
    return (
        *mouse_pk.parameters(("ip",), effect_site=True),
        *link_parameters(tau=3.0, tau_source="A"),
        *card,
        Parameter("f_ro_odds_factor", 1.0, "-", 1e-12, _INF, "multiplies the odds of f_ro: carries its logit-scale IIV", "implementation"),
        Parameter("v0", 1e-4, "-", 0.0, 1.0, "virus at infection (0: mock)", "card"),
        Parameter("g_w", 3.0, "%/day", -_INF, _INF, "weight gain of a growing mouse", "A"),
        Parameter("w_loss", 10.0, "%", 0.0, _INF, "weight lost at full inflammation", "A"),
    )


def il1_signal(y, p):
    """f_sig at the joint: C_site = C_e, L = IL_pk INF (0 in a knockout)."""
    c = antagonist_ratio(y[3], p["k_i"])
    l = agonist_ratio(p["il_pk"] * y[6], p["k_l"])
    return knockout(signalling_fraction(c, l, p["tau"]), p["il1r_ko"])


def f_ro(p):
    """The animal's IL-1-dependent fraction of RANKL/OPG stimulation (logit-scale IIV applied)."""
    odds = p["f_ro"] * p["f_ro_odds_factor"]
    return odds / (1.0 - p["f_ro"] + odds)


def vector_field(t, y, p, rate):
    a_dep, a_c, a_p, c_e, v, ab, inf, ro, oc, b, _ = y
    absorbed = p["ka_ip"] * a_dep
    d_c, d_p = mouse_pk.pk_rates(a_c, a_p, p, absorbed)
    drive = v / (v + p["v50"])
    d_inf = p["k_inf"] * (drive - inf)
    return jnp.stack(
        [
            -absorbed,
            d_c,
            d_p,
            mouse_pk.effect_site_rate(mouse_pk.plasma_conc(a_c, p), c_e, p),
            p["r"] * v * (1.0 - v) - p["kc"] * ab * v,
            p["kab"] * drive,
            d_inf,
            p["k_ro"] * (1.0 + p["s_ro"] * inf * il1_dependent(f_ro(p), il1_signal(y, p)) - ro),
            p["k_oc"] * (ro - oc),
            p["k_b"] * (1.0 - oc * b),
            p["g_w"] / 24.0 - p["w_loss"] * d_inf,
        ]
    ) + rate


OBSERVABLES = (
    Observable("plasma_anakinra_mg_l", lambda y, p: mouse_pk.plasma_conc(y[1], p), "plasma anakinra", "mg/L"),
    Observable("effect_site_anakinra_mg_l", lambda y, p: y[3], "anakinra at the joint (biophase)", "mg/L"),
    Observable("il1_signal_fraction", il1_signal, "fraction of IL-1 signalling left at the joint (f_sig)", "-"),
    Observable("bv_tv_pct", lambda y, p: p["bv0"] * y[9], "tibial-epiphysis BV/TV (µCT)", "%"),
    Observable("bv_tv_loss_pct", lambda y, p: 100.0 * (1.0 - y[9]), "BV/TV loss vs mock", "%"),
    Observable("rankl_opg_fold", lambda y, p: y[7], "joint RANKL/OPG mRNA ratio", "fold"),
    Observable("trap_oc_fold", lambda y, p: y[8], "TRAP+ osteoclasts", "fold"),
    Observable("log10_titre", lambda y, p: p["vpk_log"] + jnp.log10(jnp.maximum(y[4], V_FLOOR)), "tissue titre", "log10 PFU/g"),
    Observable("disease_score", lambda y, p: p["ds_max"] * y[6], "clinical disease score", "score"),
    Observable("weight_gain_pct", lambda y, p: y[10], "weight gain since infection", "%"),
)

ENDPOINTS = (
    # Exposure at the site (the biophase is smooth, so an hourly grid resolves it; the
    # plasma peak of an i.p. bolus, at about 10 min, needs a finer one).
    *standard_endpoints("effect_site_anakinra_mg_l"),
    Endpoint("bv_tv_day10_pct", "bv_tv_pct", "value", DAY10_H, description="BV/TV at day 10"),
    Endpoint("bv_tv_loss_day10_pct", "bv_tv_loss_pct", "value", DAY10_H, inhibition="bv_tv_loss_prevented_day10_pct",
             description="BV/TV loss vs mock at day 10; its inhibition is the share of the loss prevented"),
    Endpoint("bv_tv_loss_day15_pct", "bv_tv_loss_pct", "value", DAY15_H, inhibition="bv_tv_loss_prevented_day15_pct",
             description="BV/TV loss vs mock at day 15"),
    Endpoint("rankl_opg_peak_fold", "rankl_opg_fold", "max", description="peak RANKL/OPG"),
    Endpoint("rankl_opg_day10_fold", "rankl_opg_fold", "value", DAY10_H),
    Endpoint("trap_oc_day10_fold", "trap_oc_fold", "value", DAY10_H),
    Endpoint("titre_peak_log10", "log10_titre", "max", description="peak titre (unchanged by anakinra)"),
    Endpoint("disease_score_peak", "disease_score", "max", description="peak disease score (unchanged by anakinra)"),
)


def alphavirus_bone_mouse(virus: str = "rrv") -> Model:
    """The ALPHA-1 model for `virus` "rrv" or "chikv" (a reconstruction; see the module docstring)."""
    if virus not in BW_KG:
        raise ValueError(f"virus must be 'rrv' or 'chikv', got {virus!r}")
    bw, bw_source = BW_KG[virus]
    return Model(
        name="alphavirus_bone_mouse" + ("" if virus == "rrv" else "_chikv"),
        states=STATES,
        parameters=_parameters(virus),
        vector_field=vector_field,
        observables=OBSERVABLES,
        routes=mouse_pk.routes("ip"),
        covariates=(mouse_pk.bw_covariate(bw),),
        linear_pk=mouse_pk.linear_pk("a_dep", "ka_ip"),
        description=f"ALPHA-1: {virus.upper()} arthritis in mice, IL-1-driven bone loss (reconstruction; body weight {bw_source})",
        endpoints=ENDPOINTS,
        panels=(
            Panel("bv_tv_pct", "BV/TV (%)"),
            Panel("rankl_opg_fold", "RANKL/OPG (fold)"),
            Panel("log10_titre", "titre (log10 PFU/g): unchanged"),
            Panel("effect_site_anakinra_mg_l", "anakinra at the joint (mg/L)"),
        ),
    )
