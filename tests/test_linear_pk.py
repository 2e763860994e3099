"""Closed-form linear PK (vtrial.engine.linear_pk) against matrix exponentials and the ODE path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sla

import vtrial as vt
from vtrial.engine.linear_pk import modes, propagate, rate_matrix
from vtrial.models.linear_pk import MammillaryConstants

CASES = {
    "1cmt iv": (np.zeros(0), 0.1, 1.0, np.zeros(0), np.zeros(0)),
    "1cmt oral": (np.array([1.3]), 0.1, 1.0, np.zeros(0), np.zeros(0)),
    "2cmt 2 depots (CIA-1)": (np.array([0.35, 0.15]), 0.095, 0.012, np.array([0.02]), np.array([0.016])),
    "3cmt 1 depot": (np.array([1.2]), 0.5, 2.0, np.array([0.3, 0.1]), np.array([3.0, 10.0])),
    "coincident ka1 = ka2": (np.array([0.2, 0.2]), 0.095, 0.012, np.array([0.02]), np.array([0.016])),
    "ka equals elimination": (np.array([0.1]), 0.1, 1.0, np.zeros(0), np.zeros(0)),
}


def _constants(case):
    ka, cl, v1, q, v = CASES[case]
    return MammillaryConstants(jnp.asarray(ka), jnp.asarray(cl), jnp.asarray(v1), jnp.asarray(q), jnp.asarray(v))


def _expm_reference(k, a0, r, tau):
    n = k.shape[0]
    aug = np.zeros((n + 1, n + 1))
    aug[:n, :n], aug[:n, n] = k, r
    return (sla.expm(aug * tau) @ np.r_[a0, 1.0])[:n]


@pytest.mark.parametrize("case", list(CASES))
def test_propagate_matches_matrix_exponential(case):
    c = _constants(case)
    k = np.asarray(rate_matrix(c))
    m = modes(c)
    n = k.shape[0]
    rng = np.random.default_rng(0)
    a0, r = rng.uniform(0, 1, n), rng.uniform(0, 0.5, n)
    # Coinciding rate constants are separated by a relative 2e-8 (documented), so allow 1e-7 there.
    rtol = 1e-7 if "coincident" in case or "equals" in case else 1e-12
    for tau in (0.0, 0.05, 1.0, 10.0, 200.0):
        ref = _expm_reference(k, a0, r, tau)
        got = np.asarray(propagate(m, jnp.asarray(a0), jnp.asarray(r), tau))
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=1e-14 * np.abs(ref).max())


@pytest.mark.parametrize("name", ["cia_rat", "one_compartment_absorption", "two_compartment", "two_compartment_absorption"])
def test_model_vector_field_agrees_with_declared_linear_pk(name):
    """The closed form replaces the model's own PK equations, so they must be the same system."""
    model = vt.models.get_model(name)
    spec = model.linear_pk
    p = {k: jnp.asarray(v) for k, v in model.typical_values().items()}
    p["bw"] = jnp.asarray(0.23)
    idx = np.array([model.state_index(s) for s in spec.states])
    k = np.asarray(rate_matrix(spec.constants(p)))
    rng = np.random.default_rng(1)
    y = jnp.asarray(rng.uniform(0.1, 1.0, model.n_states))
    rate = jnp.asarray(rng.uniform(0.0, 1.0, model.n_states))
    dy = np.asarray(model.vector_field(0.0, y, p, rate))[idx]
    np.testing.assert_allclose(dy, k @ np.asarray(y)[idx] + np.asarray(rate)[idx], rtol=1e-12)


@pytest.fixture(scope="module")
def cia_population():
    model = vt.models.get_model("cia_rat")
    pop = vt.Population.build(
        model,
        cv_percent={"cl_ref": 25, "v1_ref": 30, "ka1": 30, "t_onset": 10, "k_grow": 20, "s_dis": 30, "paw0": 10, "ic50": 50},
        covariates=[vt.CovariateDistribution("bw", 0.2, 0.1)],
    )
    pump = vt.Regimen((vt.Infusion(duration_h=188.0, start_h=504.0, rate=100.0, unit="mg/kg/day", route="sc"),))
    bolus = vt.Regimen((vt.Bolus(5.0, time_h=520.0, unit="mg/kg", route="sc", every_h=24.0, count=3),))
    arms = [vt.Arm("pump", pump, 6), vt.Arm("bolus", bolus, 6)]
    return model, pop, arms


@pytest.mark.long  # CIA-1 animals on the closed form against the all-ODE path: a validation (tests/test_pk_analytic.py checks the closed form by default)
def test_closed_form_matches_ode_path_on_variable_animals(cia_population):
    model, pop, arms = cia_population
    times = np.linspace(0.0, 840.0, 71)
    exact = vt.simulate(model, arms, pop, times_h=times, seed=5)
    ode = vt.simulate(model, arms, pop, times_h=times, seed=5, options=vt.SolverOptions(pk="ode", rtol=1e-10, atol=1e-12))
    for name in ("paw_volume_ml", "conc_mg_per_l"):
        a, b = exact.solution.observables[name], ode.solution.observables[name]
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8 * np.abs(b).max())
    assert exact.solution.n_steps.mean() < 0.5 * ode.solution.n_steps.mean()


@pytest.mark.long
def test_closed_form_gradient_matches_finite_differences():
    model = vt.models.get_model("cia_rat")
    p0 = {k: jnp.asarray(v) for k, v in model.typical_values().items()}
    doses = tuple(jnp.asarray(a[0]) for a in vt.design.dosing.lower_regimens(
        model, [vt.Regimen((vt.Infusion(duration_h=100.0, start_h=400.0, rate=50.0, unit="mg/kg/day", route="sc"),))]
    )[:5])
    times = jnp.array([450.0, 520.0])

    def paw_at_end(ka1):
        p = dict(p0, ka1=ka1)
        sol = vt.engine.solve.solve_animal(model, p, doses, times)
        return sol.states[-1, model.state_index("paw")] + sol.states[0, model.state_index("central")]

    g = jax.grad(paw_at_end)(jnp.asarray(0.35))
    h = 1e-5
    fd = (paw_at_end(jnp.asarray(0.35 + h)) - paw_at_end(jnp.asarray(0.35 - h))) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5)
