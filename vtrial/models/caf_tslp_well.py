r"""CAF-1 (5a): one well of primary pancreatic cancer-associated fibroblasts (CAFs) making TSLP.

**A reconstruction, not a published model.** Brunetto et al. 2019 (J Immunother Cancer
7:45) showed that IL-1α/β from pancreatic cancer cells make CAFs secrete TSLP and that
anakinra blocks it; De Monte 2011 and an AACR abstract add TNF-α as an IL-1R-independent
stimulus. Concentrations, incubation time and effect sizes were not visible, so every
number of model card CAF-1 (the project's design document for the CAF models) is an assumption (source `A`)
except K_I and K_L of the shared IL-1RI link (`vtrial.models.il1_link`). The assay
(plates, donors, fits) is `vtrial.assays.tslp`.

One well, time in h, anakinra not depleted (it is in vast excess over the receptors),
binding at equilibrium. With the IL-1 stimulus $L$ (nM), anakinra $C$ (nM; 57.8 nM per
µg/mL), TNF-α $TNF$ (nM):

$$
\begin{aligned}
E &= \frac{\tau\rho}{1 + \tau\rho}, \quad \rho = \frac{l}{1 + l + c},\quad l = L/K_L,\; c = C/K_I
   &&\text{(absolute signal: } L \text{ is the experimental variable)}\\
T &= \frac{TNF}{TNF + K_T} &&\text{(IL-1R-independent stimulus)}\\
\dot m &= k_m\,(1 + S_{IL} E + S_T T - m), \; m(0) = 1 &&\text{(TSLP mRNA, fold)}\\
\dot P &= k_{sec}\, m - k_{deg} P, \; P(0) = 0 &&\text{(TSLP in the medium, pg/mL)}
\end{aligned}
$$

The TSLP made because of IL-1 is proportional to $E$, and $E(C)/E(0) = c_{50}/(c_{50} + c)$
exactly, so the IC50 of anakinra on TSLP is the link's closed form
$K_I (1 + l)(1 + \tau\rho_0)$ whatever the incubation time: it shifts right as IL-1 rises.
"""

from __future__ import annotations

from functools import lru_cache

import jax.numpy as jnp

from vtrial.models.base import Model, Observable, Parameter, State
from vtrial.models.il1_link import agonist_ratio, il1_signal as operational_signal, knockout, link_parameters

_INF = float("inf")

#: The card's TSLP parameters, shared with the in vivo model (`caf_tslp_mouse`).
TSLP_PARAMETERS = (
    *link_parameters(tau=30.0, tau_source="A (fibroblasts respond to low pM IL-1)"),
    Parameter("k_m", 0.3, "1/h", 0.0, _INF, "TSLP mRNA turnover", "A"),
    Parameter("s_il", 20.0, "-", 0.0, _INF, "TSLP mRNA induction at full IL-1 signal", "A"),
)

PARAMETERS = TSLP_PARAMETERS + (
    Parameter("s_t", 10.0, "-", 0.0, _INF, "TSLP mRNA induction at full TNF-α signal", "A"),
    Parameter("k_t", 0.3, "nM", 1e-12, _INF, "TNF-α concentration of half-maximal signal", "A"),
    Parameter("k_sec", 2.0, "pg/mL/h", 0.0, _INF, "TSLP secretion per unit mRNA fold", "A"),
    Parameter("k_deg", 0.03, "1/h", 0.0, _INF, "TSLP loss from the medium", "A"),
    Parameter("il1_nm", 0.0, "nM", 0.0, _INF, "IL-1 (α + β) in the well: the stimulus", "design"),
    Parameter("tnf_nm", 0.0, "nM", 0.0, _INF, "TNF-α in the well", "design"),
    Parameter("anakinra_nm", 0.0, "nM", 0.0, _INF, "anakinra in the well (not depleted)", "design"),
)


def il1_signal(y, p):
    """The absolute IL-1RI signal E of the well (0 without IL-1, or with `il1r_ko` = 1)."""
    c = p["anakinra_nm"] / p["k_i"]
    return knockout(operational_signal(c, agonist_ratio(p["il1_nm"], p["k_l"]), p["tau"]), p["il1r_ko"])


def vector_field(t, y, p, rate):
    m, tslp = y[0], y[1]
    tnf = p["tnf_nm"] / (p["tnf_nm"] + p["k_t"])
    return jnp.stack(
        [
            p["k_m"] * (1.0 + p["s_il"] * il1_signal(y, p) + p["s_t"] * tnf - m),
            p["k_sec"] * m - p["k_deg"] * tslp,
        ]
    ) + rate


@lru_cache(maxsize=1)
def caf_tslp_well() -> Model:
    """The CAF-1 in vitro well (a reconstruction; see the module docstring)."""
    return Model(
        name="caf_tslp_well",
        states=(State("tslp_mrna", "fold", 1.0, "TSLP mRNA vs unstimulated CAFs"), State("tslp", "pg/mL", 0.0, "TSLP in the medium")),
        parameters=PARAMETERS,
        vector_field=vector_field,
        observables=(
            Observable("tslp_pg_per_ml", lambda y, p: y[1], "TSLP in the supernatant (ELISA)", "pg/mL"),
            Observable("tslp_mrna_fold", lambda y, p: y[0], "TSLP mRNA", "fold"),
            Observable("il1_signal", il1_signal, "IL-1RI signal E (0-1)", "-"),
        ),
        description="CAF-1 in vitro: TSLP secretion by pancreatic CAFs stimulated by IL-1 and TNF-α",
        report_time_unit="h",
    )
