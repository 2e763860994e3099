"""The IL-1RI binding model: exact-depletion equilibrium, analytic kinetics, differentiable read-outs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq

import vtrial  # noqa: F401  (float64)
from vtrial.assays._ode import well_readout
from vtrial.assays.common import simulate_plate
from vtrial.assays.displacement import binding_model
from vtrial.models.binding import equilibrium, il1r_binding, receptor_nm


def _quadratic_rl(r, lig, kd):
    """Exact single-ligand equilibrium with depletion (smaller root of the quadratic)."""
    s = r + lig + kd
    return 0.5 * (s - np.sqrt(s * s - 4.0 * r * lig))


def test_model_declares_states_parameters_and_units():
    m = il1r_binding()
    assert m.state_names == ("rl", "ri")
    assert {s.unit for s in m.states} == {"nM"}
    units = {p.name: p.unit for p in m.parameters}
    assert units == {"r_tot": "nM", "l_tot": "nM", "i_tot": "nM", "kon_l": "1/nM/h", "kd_l": "nM", "kon_i": "1/nM/h", "ki": "nM"}
    assert m.typical_values()["kd_l"] == 0.26 and m.typical_values()["ki"] == 0.21
    # 1e5 cells x 20,000 sites in 1 mL is the card's 3.3 pM; 1e7 cells give 0.33 nM
    np.testing.assert_allclose(receptor_nm(1e5, 2e4, 1.0), 3.32e-3, rtol=2e-3)
    np.testing.assert_allclose(receptor_nm(1e7, 2e4, 1.0), 0.332, rtol=2e-3)


@pytest.mark.parametrize("r_tot", [3.32e-3, 0.332, 5.0])
def test_equilibrium_single_ligand_matches_quadratic(r_tot):
    rl, ri = equilibrium(r_tot, 0.1, 0.0, 0.26, 0.21)
    np.testing.assert_allclose(float(rl), _quadratic_rl(r_tot, 0.1, 0.26), rtol=1e-10)
    assert float(ri) == 0.0


def test_equilibrium_two_ligands_satisfies_mass_action_and_conservation():
    r_tot, l_tot, kd, ki = 0.332, 0.1, 0.26, 0.21
    i_tot = np.logspace(-3, 2.5, 12)
    rl, ri = (np.asarray(v) for v in equilibrium(r_tot, l_tot, i_tot, kd, ki))
    r = r_tot - rl - ri
    np.testing.assert_allclose(r * (l_tot - rl) / rl, kd, rtol=1e-9)
    np.testing.assert_allclose(r * (i_tot - ri) / ri, ki, rtol=1e-9)
    assert np.all((rl > 0) & (ri > 0) & (r > 0) & (ri < i_tot) & (rl < l_tot))


def test_cheng_prusoff_holds_without_depletion():
    """Negligible receptor (1 aM): the IC50 of specific binding is Ki (1 + L/KD)."""
    r_tot, l_tot, kd, ki = 1e-9, 0.1, 0.26, 0.21
    rl0 = float(equilibrium(r_tot, l_tot, 0.0, kd, ki)[0])
    half = lambda i: float(equilibrium(r_tot, l_tot, i, kd, ki)[0]) - 0.5 * rl0  # noqa: E731
    ic50 = brentq(half, 1e-3, 10.0, xtol=1e-14, rtol=1e-12)
    np.testing.assert_allclose(ic50, ki * (1 + l_tot / kd), rtol=1e-6)


@pytest.fixture(scope="module")
def long_plate():
    """Wells from negligible to heavy depletion, integrated to equilibrium (20 h: k_obs >= 2 /h)."""
    conc = np.array([0.0, 0.001, 0.03, 0.3, 3.0, 300.0])
    r = np.array([3.32e-3, 0.332])
    wells = {"r_tot": np.repeat(r, conc.size), "i_tot": np.tile(conc, r.size), "l_tot": 0.1, "kon_l": 10.0,
             "kd_l": 0.26, "kon_i": 10.0, "ki": 0.21}
    return wells, simulate_plate(binding_model(), wells, [0.05, 20.0])


def test_ode_reaches_the_exact_equilibrium(long_plate):
    wells, sol = long_plate
    assert sol.n_failed == 0
    rl, ri = equilibrium(wells["r_tot"], 0.1, wells["i_tot"], 0.26, 0.21)
    np.testing.assert_allclose(sol.states[:, 1, 0], np.asarray(rl), rtol=1e-6, atol=1e-14)
    np.testing.assert_allclose(sol.states[:, 1, 1], np.asarray(ri), rtol=1e-6, atol=1e-14)
    # conservation is built in: free species never go negative
    obs = sol.observables
    for name in ("free_receptor_nm", "free_ligand_nm", "free_antagonist_nm"):
        assert np.all(obs[name] >= -1e-12), name


@pytest.mark.parametrize("r_tot", [3.32e-3, 0.332])
def test_single_ligand_kinetics_match_closed_form(r_tot):
    """dRL/dt = kon (x - a)(x - b) has RL(t) = ab (1 - E)/(a - bE), E = exp(-kon (a - b) t)."""
    kon, kd, lig = 10.0, 0.26, 0.1
    times = np.array([0.01, 0.05, 0.2, 1.0, 3.0])
    wells = {"r_tot": r_tot, "i_tot": np.zeros(1), "l_tot": lig, "kon_l": kon, "kd_l": kd, "kon_i": kon, "ki": 0.21}
    sol = simulate_plate(binding_model(), wells, times)
    s = r_tot + lig + kd
    disc = np.sqrt(s * s - 4 * r_tot * lig)
    a, b = 0.5 * (s + disc), 0.5 * (s - disc)
    e = np.exp(-kon * (a - b) * times)
    np.testing.assert_allclose(sol.states[0, :, 0], a * b * (1 - e) / (a - b * e), rtol=1e-6)


def _rl(y, p):
    return y[0]


@pytest.mark.long  # derivative validation against finite differences
def test_differentiable_readout_matches_plate_and_finite_differences():
    f = well_readout(binding_model(), _rl, "ki")
    conc = np.logspace(-3, 2.5, 12)
    wells = {"r_tot": np.full(12, 0.332), "l_tot": np.full(12, 0.1), "i_tot": conc, "kon_l": np.full(12, 10.0),
             "kd_l": np.full(12, 0.26), "kon_i": np.full(12, 10.0)}
    value = np.asarray(f(0.21, wells, 3.0))
    sol = simulate_plate(binding_model(), {**wells, "ki": 0.21}, [3.0])
    np.testing.assert_allclose(value, sol.states[:, 0, 0], rtol=1e-6)
    # forward and reverse mode, inside jit, agree with central differences
    jac_fwd = np.asarray(jax.jit(jax.jacfwd(lambda k: f(k, wells, 3.0)))(0.21))
    jac_rev = np.asarray(jax.jit(jax.jacrev(lambda k: f(k, wells, 3.0)))(0.21))
    h = 1e-5
    fd = (np.asarray(f(0.21 + h, wells, 3.0)) - np.asarray(f(0.21 - h, wells, 3.0))) / (2 * h)
    np.testing.assert_allclose(jac_fwd, fd, rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(jac_rev, jac_fwd, rtol=1e-12)
    assert np.all(jac_fwd > 0)  # a weaker antagonist (larger Ki) leaves more ligand bound
    # the gradient of a scalar loss through the solve
    g = jax.grad(lambda k: jnp.sum(f(k, wells, 3.0) ** 2))(0.21)
    np.testing.assert_allclose(float(g), float(np.sum(2 * value * jac_fwd)), rtol=1e-10)
