r"""One well of the functional IL-1β neutralisation assays (MRC-5 IL-6, whole-blood IL-8).

The assay (plates, noise, fits, calibration) is `vtrial.assays.functional`.

Both assays stimulate cells with a fixed IL-1β concentration in the presence of anakinra
and read a cytokine after the incubation. They use the binding model of
`vtrial.models.binding` (IL-1β as the agonist $L$, anakinra as the antagonist $I$) plus
two pieces (model card, systems 2 and 3):

- **Whole-blood sink.** A soluble IL-1 receptor binds anakinra ($K_d$ 70 pM, capacity
  `sink_capacity_nm`; Svenson 1993), kinetically and with exact depletion, and plasma
  proteins hold a fixed fraction $1 - f_u$ of the anakinra that is bound to neither
  receptor (fast, linear binding). With $I_{nr} = I_{tot} - RI - SI$ the anakinra
  not bound to a receptor, the free concentration is $I = f_u I_{nr}$ and
  $dSI/dt = k_{on,S} (S_{tot} - SI) I - k_{on,S} K_{d,S} SI$.
  MRC-5 wells have no sink ($S_{tot} = 0$, $f_u = 1$).
- **Operational transduction and accumulation.** Occupancy $\rho = RL/R_{tot}$ drives the
  release rate $E = E_m \tau\rho / (1 + \tau\rho)$ (Black & Leff); the cytokine
  accumulates, $dC/dt = k_{basal} + E$, and is read at the end of the incubation.

States: `rl`, `ri`, `si` (nM), `cytokine` (pg/mL). Assumptions: IL-1β is not bound by
the sink (only anakinra is; the stimulus is the nominal free IL-1β); ligand, antagonist and
cells are added together at $t = 0$; no cytokine degradation or receptor turnover during
the incubation; the read-out is proportional to the accumulated cytokine. Parameters the
literature does not give (transducer ratio $\tau$, the human-receptor Ki, release rates)
are assumptions, and the one named in the config's `[calibration]` table is calibrated
(`vtrial.assays.calibration`) so that the simulated IC50 equals the seed's.
"""

from __future__ import annotations

from functools import lru_cache

import jax.numpy as jnp

from vtrial.models.base import Model, Observable, Parameter, State
from vtrial.models.binding import binding_rates

_INF = float("inf")


def _vector_field(t, y, p, rate):
    rl, ri, si = y[0], y[1], y[2]
    i_free = p["fu"] * (p["i_tot"] - ri - si)
    d_rl, d_ri = binding_rates(rl, ri, p["r_tot"], p["l_tot"], i_free, p["kon_l"], p["kd_l"], p["kon_i"], p["ki"])
    d_si = p["kon_s"] * (p["s_tot"] - si) * i_free - p["kon_s"] * p["kd_s"] * si
    stim = p["tau"] * rl / p["r_tot"]
    d_c = p["basal"] + p["emax"] * stim / (1.0 + stim)
    return jnp.stack([d_rl, d_ri, d_si, d_c]) + rate


@lru_cache(maxsize=1)
def functional_model() -> Model:
    """The functional neutralisation model (one well); see the module docstring.

    Parameters (units): `r_tot`, `l_tot`, `i_tot`, `kd_l`, `ki`, `s_tot`, `kd_s` (nM);
    `kon_l`, `kon_i`, `kon_s` (1/nM/h); `fu` (fraction unbound to plasma proteins);
    `tau` (transducer ratio); `emax`, `basal` (pg/mL/h). Defaults are placeholders: the
    configs set every value.
    """
    P = Parameter
    params = (
        P("r_tot", 4e-4, "nM", 1e-15, _INF, "IL-1RI in the well"),
        P("l_tot", 6e-4, "nM", 0.0, _INF, "IL-1β stimulus"),
        P("i_tot", 0.0, "nM", 0.0, _INF, "anakinra added"),
        P("kon_l", 10.0, "1/nM/h", 0.0, _INF, "IL-1β association rate constant"),
        P("kd_l", 0.1, "nM", 1e-12, _INF, "IL-1β dissociation constant"),
        P("kon_i", 10.0, "1/nM/h", 0.0, _INF, "anakinra association rate constant"),
        P("ki", 0.02, "nM", 1e-12, _INF, "anakinra dissociation constant (human IL-1RI)"),
        P("s_tot", 0.0, "nM", 0.0, _INF, "soluble-receptor sink capacity for anakinra"),
        P("kon_s", 10.0, "1/nM/h", 0.0, _INF, "sink association rate constant"),
        P("kd_s", 0.07, "nM", 1e-12, _INF, "sink dissociation constant (Svenson 1993)"),
        P("fu", 1.0, "1", 1e-6, 1.0, "fraction of non-receptor-bound anakinra not bound to plasma proteins"),
        P("tau", 100.0, "1", 0.0, _INF, "operational transducer ratio"),
        P("emax", 100.0, "pg/mL/h", 0.0, _INF, "maximal cytokine release rate"),
        P("basal", 0.0, "pg/mL/h", 0.0, _INF, "basal cytokine release rate"),
    )
    observables = (
        Observable("cytokine_pg_per_ml", lambda y, p: y[3], "accumulated cytokine", "pg/mL"),
        Observable("receptor_occupancy", lambda y, p: y[0] / p["r_tot"], "IL-1β occupancy RL/R_tot", "1"),
        Observable("free_anakinra_nm", lambda y, p: p["fu"] * (p["i_tot"] - y[1] - y[2]), "free anakinra", "nM"),
    )
    return Model(
        name="il1_functional",
        states=(State("rl", "nM"), State("ri", "nM"), State("si", "nM"), State("cytokine", "pg/mL")),
        parameters=params,
        vector_field=_vector_field,
        observables=observables,
        description="IL-1β functional assay: binding, whole-blood sink, operational transduction, accumulation",
        report_time_unit="h",
    )
