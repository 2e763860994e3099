r"""IL-1RI binding: one receptor, one agonist or labelled ligand, one competitive antagonist.

The model card (`receptor_and_in_vitro.md`) uses one binding model for every in vitro and
in vivo system. For one well, with concentrations in nM and time in h, the receptor $R$,
the ligand $L$ (IL-1α, IL-1β or a labelled tracer) and the antagonist $I$ (anakinra):

$$\frac{dRL}{dt} = k_{on,L} R L - k_{off,L} RL, \qquad
  \frac{dRI}{dt} = k_{on,I} R I - k_{off,I} RI,$$

$$R = R_{tot} - RL - RI, \quad L = L_{tot} - RL, \quad I = I_{tot} - RI,$$

with $k_{off,L} = K_{D,L} k_{on,L}$ and $k_{off,I} = K_i k_{on,I}$. Depletion of all three
species is kept exact: nothing assumes $L \approx L_{tot}$ or $I \approx I_{tot}$.

Assumptions (stated once, used by every assay built on this module):
- simple 1:1 reversible binding, no cooperativity, no receptor internalisation or
  turnover during the incubation;
- the receptor is free at $t = 0$ and ligand and antagonist are added together
  (co-incubation; `RL(0) = RI(0) = 0`);
- the well is well mixed, and volume and temperature are constant.

The parameters are `kd_l` and `ki` (with the association rate constants), not the
dissociation rate constants, because the dissociation constants are what the assays
estimate. `equilibrium` solves the exact-depletion equilibrium without integrating.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vtrial.models.base import Model, Observable, Parameter, State

_INF = float("inf")
AVOGADRO = 6.02214076e23

#: Molecular weights (kDa) used to convert mass concentrations.
MW_KDA = {"anakinra": 17.3, "il1b": 17.3, "il1a": 18.0, "il6": 21.0, "tnfa": 17.4}


def receptor_nm(cells_per_well: float, sites_per_cell: float, volume_ml: float) -> float:
    """Receptor concentration (nM) of `cells_per_well` cells with `sites_per_cell` sites
    each in `volume_ml` mL: $R_{tot} = N_{cells} n_{sites} / (N_A V)$.

    For example 1e5 EL4 6.1 cells x 20,000 sites in 1 mL give 3.32e-3 nM (3.3 pM).
    """
    return cells_per_well * sites_per_cell / AVOGADRO / (volume_ml * 1e-3) * 1e9


def ng_per_ml_to_nm(value: float, mw_kda: float) -> float:
    """Mass concentration (ng/mL) to nM for a protein of `mw_kda` kDa (1 ng/mL of
    a 17.3 kDa protein is 0.0578 nM)."""
    return value / mw_kda


def binding_rates(rl, ri, r_tot, l_tot, i_free, kon_l, kd_l, kon_i, ki):
    """Right-hand side of the two binding equations for one well.

    `i_free` is the free antagonist concentration (nM); the plain binding model passes
    `i_tot - ri`, and the whole-blood model passes what its soluble sink leaves free.
    Returns `(d RL/dt, d RI/dt)` in nM/h.
    """
    r = r_tot - rl - ri
    lig = l_tot - rl
    d_rl = kon_l * r * lig - kon_l * kd_l * rl
    d_ri = kon_i * r * i_free - kon_i * ki * ri
    return d_rl, d_ri


def _vector_field(t, y, p, rate):
    rl, ri = y[0], y[1]
    d_rl, d_ri = binding_rates(rl, ri, p["r_tot"], p["l_tot"], p["i_tot"] - ri, p["kon_l"], p["kd_l"], p["kon_i"], p["ki"])
    return jnp.stack([d_rl, d_ri]) + rate


def il1r_binding(
    *,
    r_tot: float = 3.32e-3,
    l_tot: float = 0.1,
    i_tot: float = 0.0,
    kon_l: float = 10.0,
    kd_l: float = 0.26,
    kon_i: float = 10.0,
    ki: float = 0.21,
) -> Model:
    """The IL-1RI binding model with exact depletion (defaults: EL4 6.1 displacement well).

    **States** (nM): `rl` receptor-ligand complex, `ri` receptor-antagonist complex, both
    0 at $t = 0$.

    **Parameters:**
    - `r_tot` (nM): receptor in the well (default 1e5 cells x 20,000 sites in 1 mL; card, A);
    - `l_tot` (nM): ligand added (default 0.1 nM labelled IL-1α; card, A);
    - `i_tot` (nM): antagonist added (anakinra);
    - `kon_l`, `kon_i` (1/nM/h): association rate constants (10 /nM/h; card, A);
    - `kd_l` (nM): ligand dissociation constant (0.26 nM, IL-1α at EL4 IL-1RI; Kilian 1986);
    - `ki` (nM): antagonist dissociation constant (0.21 nM, anakinra at EL4 IL-1RI; seed).

    **Observables:** `bound_ligand_nm`, `bound_antagonist_nm`, `free_receptor_nm`,
    `free_ligand_nm`, `free_antagonist_nm`, `ligand_occupancy` (RL / R_tot).

    The model takes no doses: every concentration is a parameter, so a whole plate is one
    batch of parameter sets (pass `lower_regimens(model, [Regimen()] * n)`).
    """
    params = (
        Parameter("r_tot", r_tot, "nM", 0.0, _INF, "receptor concentration in the well", "A"),
        Parameter("l_tot", l_tot, "nM", 0.0, _INF, "ligand (agonist or labelled) added", "A"),
        Parameter("i_tot", i_tot, "nM", 0.0, _INF, "antagonist (anakinra) added"),
        Parameter("kon_l", kon_l, "1/nM/h", 0.0, _INF, "ligand association rate constant", "A"),
        Parameter("kd_l", kd_l, "nM", 1e-12, _INF, "ligand dissociation constant koff_l/kon_l", "P: Kilian 1986"),
        Parameter("kon_i", kon_i, "1/nM/h", 0.0, _INF, "antagonist association rate constant", "A"),
        Parameter("ki", ki, "nM", 1e-12, _INF, "antagonist dissociation constant koff_i/kon_i", "seed"),
    )
    observables = (
        Observable("bound_ligand_nm", lambda y, p: y[0], "receptor-ligand complex RL", "nM"),
        Observable("bound_antagonist_nm", lambda y, p: y[1], "receptor-antagonist complex RI", "nM"),
        Observable("free_receptor_nm", lambda y, p: p["r_tot"] - y[0] - y[1], "free receptor R", "nM"),
        Observable("free_ligand_nm", lambda y, p: p["l_tot"] - y[0], "free ligand L", "nM"),
        Observable("free_antagonist_nm", lambda y, p: p["i_tot"] - y[1], "free antagonist I", "nM"),
        Observable("ligand_occupancy", lambda y, p: y[0] / jnp.maximum(p["r_tot"], 1e-300), "RL / R_tot", "1"),
    )
    return Model(
        name="il1r_binding",
        states=(State("rl", "nM", 0.0, "receptor-ligand complex"), State("ri", "nM", 0.0, "receptor-antagonist complex")),
        parameters=params,
        vector_field=_vector_field,
        observables=observables,
        description="IL-1RI competitive binding with exact ligand, antagonist and receptor depletion",
        report_time_unit="h",
    )


def equilibrium(r_tot, l_tot, i_tot, kd_l, ki, *, iterations: int = 64):
    r"""Exact-depletion equilibrium `(rl, ri)` (nM) of one well, by bisection on free receptor.

    At equilibrium $L = L_{tot}/(1 + R/K_{D,L})$ and $I = I_{tot}/(1 + R/K_i)$, so the free
    receptor $R$ solves the monotone equation
    $g(R) = R + R L(R)/K_{D,L} + R I(R)/K_i - R_{tot} = 0$ on $[0, R_{tot}]$. Bisection on
    $\log R$ over $[10^{-30} R_{tot}, R_{tot}]$ (`iterations` halvings; 64 leave a relative
    bracket of 1e-18) is branch-free, so it jits and vmaps; arguments broadcast. Differentiable only through the final value (use the ODE model for
    gradients).
    """
    r_tot, l_tot, i_tot, kd_l, ki = jnp.broadcast_arrays(*(jnp.asarray(v, float) for v in (r_tot, l_tot, i_tot, kd_l, ki)))

    def g(r):
        return r + r * l_tot / (kd_l + r) + r * i_tot / (ki + r) - r_tot

    tiny = jnp.maximum(r_tot * 1e-30, 1e-300)

    def body(_, bracket):
        lo, hi = bracket
        mid = jnp.sqrt(lo * hi)
        pos = g(mid) > 0
        return jnp.where(pos, lo, mid), jnp.where(pos, mid, hi)

    lo, hi = jax.lax.fori_loop(0, iterations, body, (tiny, jnp.maximum(r_tot, tiny)))
    r = jnp.where(r_tot > 0, jnp.sqrt(lo * hi), 0.0)
    rl = r * l_tot / (kd_l + r)
    ri = r * i_tot / (ki + r)
    return rl, ri
