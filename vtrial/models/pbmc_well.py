r"""One PBMC + LPS culture well with and without anakinra (model card, system 4).

The assay (donors, conditions, read-outs) is `vtrial.assays.pbmc`.

A small mechanistic model of one culture well (time in h, cytokines in pg/mL):

- **LPS signal.** TLR4 activation $x$ follows the LPS stimulus with a delay,
  $dx/dt = k_{act}\,(s - x)$, $s = \mathrm{LPS}/(\mathrm{LPS} + EC_{50})$.
- **IL-1RI occupancy.** Secreted IL-1β (total concentration in the well, converted to nM
  with 17.3 kDa) binds IL-1RI on the cells and anakinra competes, through the binding
  model of `vtrial.models.binding` with exact depletion; occupancy $\rho = RL/R_{tot}$
  signals through the operational model, $E = \tau\rho/(1 + \tau\rho)$.
- **Cytokines.** For each of IL-1β, IL-6 and TNF-α,
  $dC/dt = k_{basal} + p_C\,x\,(1 + a_C E) - k_{deg,C}\,C$: LPS drives production directly
  and IL-1 signalling amplifies it by up to $1 + a_C$ (IL-1β amplifies itself).

Assumptions: the numbers are chosen to reproduce the card's qualitative behaviour
(Launay 2013, PLoS One 8:e59327), not fitted to data: almost nothing is released without
LPS (basal only); with LPS 100 pg/mL all three cytokines rise; IL-1β and TNF-α depend
strongly on IL-1 feedback ($a$ = 1.5 and 2) and IL-6 weakly and variably between donors
($a_{IL6}$ = 0.2 with a 100% donor CV), so anakinra 500 ng/mL (28.9 nM, 17.3 kDa) lowers
IL-1β and TNF-α clearly and IL-6 less consistently, at 6 h and at 16 h. Anakinra's Ki at
the human receptor and the IL-1β KD are those of the MRC-5 config. No receptor turnover,
no LPS tolerance, no cell death over 16 h; each sampling time is its own well
(supernatant), so read-out errors are independent.
"""

from __future__ import annotations

from functools import lru_cache

import jax.numpy as jnp

from vtrial.models.base import Model, Observable, Parameter, State
from vtrial.models.binding import MW_KDA, binding_rates, receptor_nm

CYTOKINES = ("il1b", "il6", "tnfa")
_INF = float("inf")
_PG_PER_ML_TO_NM = 1e-3 / MW_KDA["il1b"]


def _vector_field(t, y, p, rate):
    rl, ri, x = y[0], y[1], y[2]
    il1b = y[3]
    d_rl, d_ri = binding_rates(rl, ri, p["r_tot"], il1b * _PG_PER_ML_TO_NM, p["i_tot"] - ri, p["kon_l"], p["kd_l"], p["kon_i"], p["ki"])
    stim = p["lps"] / (p["lps"] + p["lps_ec50"])
    d_x = p["k_act"] * (stim - x)
    occ = p["tau"] * rl / p["r_tot"]
    e = occ / (1.0 + occ)
    d_c = [p["basal"] + p[f"p_{c}"] * x * (1.0 + p[f"a_{c}"] * e) - p[f"d_{c}"] * y[3 + i] for i, c in enumerate(CYTOKINES)]
    return jnp.stack([d_rl, d_ri, d_x, *d_c]) + rate


@lru_cache(maxsize=1)
def pbmc_model() -> Model:
    """The PBMC + LPS model of one well (see the module docstring). Defaults are the
    shipped config's typical values."""
    P = Parameter
    params = (
        P("r_tot", receptor_nm(1e6, 200, 1.0), "nM", 1e-15, _INF, "IL-1RI in the well"),
        P("kon_l", 10.0, "1/nM/h", 0.0, _INF, "IL-1β association rate constant"),
        P("kd_l", 0.1, "nM", 1e-12, _INF, "IL-1β dissociation constant"),
        P("i_tot", 0.0, "nM", 0.0, _INF, "anakinra added"),
        P("kon_i", 10.0, "1/nM/h", 0.0, _INF, "anakinra association rate constant"),
        P("ki", 0.01652, "nM", 1e-12, _INF, "anakinra Ki at human IL-1RI"),
        P("tau", 20.0, "1", 0.0, _INF, "operational transducer ratio"),
        P("lps", 0.0, "pg/mL", 0.0, _INF, "LPS concentration"),
        P("lps_ec50", 50.0, "pg/mL", 1e-12, _INF, "LPS half-maximal concentration"),
        P("k_act", 0.5, "1/h", 0.0, _INF, "activation rate constant of the LPS signal"),
        *(P(f"p_{c}", v, "pg/mL/h", 0.0, _INF, f"LPS-driven {c} production") for c, v in zip(CYTOKINES, (100.0, 300.0, 200.0))),
        *(P(f"a_{c}", v, "1", 0.0, _INF, f"IL-1 amplification of {c}") for c, v in zip(CYTOKINES, (1.5, 0.2, 2.0))),
        *(P(f"d_{c}", v, "1/h", 0.0, _INF, f"{c} degradation") for c, v in zip(CYTOKINES, (0.05, 0.02, 0.3))),
        P("basal", 0.1, "pg/mL/h", 0.0, _INF, "basal release of each cytokine"),
    )
    obs = tuple(Observable(f"{c}_pg_per_ml", (lambda i: lambda y, p: y[3 + i])(i), c, "pg/mL") for i, c in enumerate(CYTOKINES))
    obs += (Observable("il1r_occupancy", lambda y, p: y[0] / p["r_tot"], "IL-1β occupancy of IL-1RI", "1"),)
    return Model(
        name="pbmc_lps",
        states=(State("rl", "nM"), State("ri", "nM"), State("lps_signal", "1"),
                *(State(c, "pg/mL") for c in CYTOKINES)),
        parameters=params,
        vector_field=_vector_field,
        observables=obs,
        description="PBMC + LPS: IL-1β, IL-6, TNF-α with IL-1RI feedback and anakinra",
        report_time_unit="h",
    )
