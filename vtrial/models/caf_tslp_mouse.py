r"""CAF-1 (5b): TSLP of human CAFs in orthotopic pancreatic tumours in immunodeficient mice.

**A reconstruction, not a published model.** Brunetto et al. 2019 (J Immunother Cancer
7:45) co-injected human IL-1⁺ pancreatic cancer cells and CAFs orthotopically into
immunodeficient mice and found that anakinra significantly reduced tumour TSLP. Strain,
dose, schedule and read-out were not visible, so, as in model card CAF-1 (the project's
design document for the CAF models), every number is an assumption (source `A`) except K_I
and K_L of the shared IL-1RI link (`vtrial.models.il1_link`); the PK is the mouse module
MPK-1 (`vtrial.models.mouse_pk`: i.p. depot and biophase $C_e$, itself all assumptions).

Time in h after tumour injection (day 0). States: MPK-1 ($A_{dep}, A_c, A_p$ in mg,
$C_e$ in mg/L) and the CAF TSLP mRNA in the tumour $m$ (fold vs CAFs without IL-1):

$$
\dot m = k_m\,(1 + S_{IL}\, E - m), \quad m(0) = 1, \qquad
E = \frac{\tau\rho}{1 + \tau\rho},\; \rho = \frac{l}{1 + l + c},\;
c = 57.8\,C_e / K_I,\; l = IL_t / K_L,
$$

with the in vitro well's $\tau$, $k_m$ and $S_{IL}$ (`vtrial.models.caf_tslp_well`) and the
tumour IL-1 $IL_t$ = 0.01 nM (A). Assumptions of the card: K_I is the murine receptor's
although the target is human IL-1RI on human CAFs; tumour growth is not modelled and
anakinra does not change it; $m(0) = 1$ at injection (CAFs not yet stimulated).
`il1r_ko = 1` removes the IL-1 signal (a full-block reference).
"""

from __future__ import annotations

import jax.numpy as jnp

from vtrial.models import mouse_pk
from vtrial.models.base import Endpoint, Model, Observable, Panel, Parameter, State, standard_endpoints
from vtrial.models.caf_tslp_well import TSLP_PARAMETERS
from vtrial.models.il1_link import agonist_ratio, antagonist_ratio, il1_signal as operational_signal, knockout

_INF = float("inf")
#: Harvest: day 28, 24 h after the last dose (card).
HARVEST_H = 28 * 24.0

PARAMETERS = (
    *mouse_pk.parameters(("ip",), effect_site=True),
    *TSLP_PARAMETERS,
    Parameter("il_t", 0.01, "nM", 0.0, _INF, "IL-1 in the tumour, from the human tumour cells", "A"),
)

STATES = (*mouse_pk.states("a_dep", effect_site=True), State("tslp_mrna", "fold", 1.0, "CAF TSLP mRNA in the tumour"))


def il1_signal(y, p):
    """The absolute IL-1RI signal E on the CAFs (C_site = C_e, L = IL_t)."""
    c = antagonist_ratio(y[3], p["k_i"])
    return knockout(operational_signal(c, agonist_ratio(p["il_t"], p["k_l"]), p["tau"]), p["il1r_ko"])


def vector_field(t, y, p, rate):
    a_dep, a_c, a_p, c_e, m = y
    absorbed = p["ka_ip"] * a_dep
    d_c, d_p = mouse_pk.pk_rates(a_c, a_p, p, absorbed)
    return jnp.stack(
        [
            -absorbed,
            d_c,
            d_p,
            mouse_pk.effect_site_rate(mouse_pk.plasma_conc(a_c, p), c_e, p),
            p["k_m"] * (1.0 + p["s_il"] * il1_signal(y, p) - m),
        ]
    ) + rate


def caf_tslp_mouse() -> Model:
    """The CAF-1 in vivo model (a reconstruction; see the module docstring)."""
    return Model(
        name="caf_tslp_mouse",
        states=STATES,
        parameters=PARAMETERS,
        vector_field=vector_field,
        observables=(
            Observable("plasma_anakinra_mg_l", lambda y, p: mouse_pk.plasma_conc(y[1], p), "plasma anakinra", "mg/L"),
            Observable("effect_site_anakinra_mg_l", lambda y, p: y[3], "anakinra in the tumour (biophase)", "mg/L"),
            Observable("il1_signal", il1_signal, "IL-1RI signal E on the CAFs (0-1)", "-"),
            Observable("tslp_mrna_fold", lambda y, p: y[4], "tumour TSLP mRNA vs CAFs without IL-1", "fold"),
            Observable("tslp_excess_fold", lambda y, p: y[4] - 1.0, "TSLP mRNA above CAFs without IL-1", "fold"),
        ),
        routes=mouse_pk.routes("ip"),
        covariates=(mouse_pk.bw_covariate(0.025),),
        linear_pk=mouse_pk.linear_pk("a_dep", "ka_ip"),
        description="CAF-1 in vivo: TSLP of human CAFs in orthotopic pancreatic tumours (reconstruction)",
        endpoints=(
            # Exposure at the site: the biophase is smooth, so an hourly grid resolves it.
            *standard_endpoints("effect_site_anakinra_mg_l"),
            Endpoint("tslp_mrna_harvest_fold", "tslp_mrna_fold", "value", HARVEST_H, description="tumour TSLP mRNA at harvest (day 28)"),
            Endpoint("tslp_excess_harvest_fold", "tslp_excess_fold", "value", HARVEST_H, inhibition="tslp_excess_inhibition_pct",
                     description="TSLP mRNA excess at harvest; its inhibition is the share removed"),
        ),
        panels=(
            Panel("tslp_mrna_fold", "tumour TSLP mRNA (fold)"),
            Panel("effect_site_anakinra_mg_l", "anakinra in the tumour (mg/L)"),
        ),
    )
