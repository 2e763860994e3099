"""Exposure endpoints (AUC, Cmax, Tmax, peaks) from the solver, whatever the output grid
(`vtrial.engine.exposure`), against analytic solutions and independent scipy solves.

Small models only: a one-compartment oral model on every solve path (closed form in one
solve, split, all-ODE, superposition), an infusion whose maximum is at its end between
two output times, and an IL-1beta-like cascade (crystals -> inflammasome -> IL-1beta) on
three grids. MSU-1's own numbers are checked in `tests/test_msu_peritonitis.py`.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import minimize_scalar

from vtrial.analysis.endpoints import endpoint_values
from vtrial.design.dosing import Bolus, Infusion, Regimen, lower_regimens
from vtrial.engine.exposure import exposure_spec
from vtrial.engine.runner import iter_population_chunks
from vtrial.engine.solve import SolverOptions
from vtrial.models.base import Endpoint, Model, Observable, Parameter, Route, State
from vtrial.models.pk import one_compartment

KA, CL, V, DOSE = 1.5, 0.2, 1.0, 10.0
KE = CL / V
END = [Endpoint("cmax", "conc_mg_per_l", "max"), Endpoint("tmax_h", "conc_mg_per_l", "tmax"),
       Endpoint("auc", "conc_mg_per_l", "auc"), Endpoint("auc_2_10", "conc_mg_per_l", "auc", 2.0, 10.0),
       Endpoint("mean_2_10", "conc_mg_per_l", "mean", 2.0, 10.0), Endpoint("cmin_2_10", "conc_mg_per_l", "min", 2.0, 10.0)]


def solve_endpoints(model, regimens, times, endpoints, options=SolverOptions(), params=None):
    """Exact endpoints per regimen (one animal each), and the grid's for comparison."""
    doses = lower_regimens(model, regimens)
    n = len(regimens)
    p = {k: np.full(n, v) for k, v in {**model.typical_values(), **(params or {})}.items()}
    chunks = iter_population_chunks(model, p, doses, times, options=options, chunk_size=n, order="input", states=False,
                                    exposure=exposure_spec(endpoints))
    (chunk,) = list(chunks)
    assert (chunk.status == 0).all()
    exact = {name.removeprefix("endpoint:"): v for name, v in chunk.extras.items()}
    return endpoint_values(endpoints, times, chunk.observables, exact=exact), endpoint_values(endpoints, times, chunk.observables)


def oral_conc(t, dose_times=(0.0,)):
    t = np.asarray(t, dtype=float)
    c = np.zeros_like(t)
    for td in dose_times:
        tau = np.maximum(t - td, 0.0)
        c = c + np.where(t > td, DOSE * KA / (V * (KA - KE)) * (np.exp(-KE * tau) - np.exp(-KA * tau)), 0.0)
    return c


def oral_integral(a, b, td=0.0):
    """The analytic integral of one oral dose's concentration over [a, b]."""
    def primitive(t):
        tau = max(t - td, 0.0)
        return DOSE * KA / (V * (KA - KE)) * ((1 - math.exp(-KE * tau)) / KE - (1 - math.exp(-KA * tau)) / KA)
    return primitive(b) - primitive(a)


ORAL = one_compartment(absorption=True, cl=CL, v=V, ka=KA)
TIMES = np.arange(0.0, 24.0 + 1e-9, 1.0)  # a coarse grid: the peak (1.55 h) lies between outputs
REGIMENS = [Regimen((Bolus(DOSE, route="oral"),)),
            Regimen((Bolus(DOSE, route="oral"), Bolus(DOSE, time_h=12.0, route="oral")))]


@pytest.mark.parametrize("options", [
    SolverOptions(),  # closed-form PK, one solve per animal (the default path)
    pytest.param(SolverOptions(events="split"), marks=pytest.mark.long),
    pytest.param(SolverOptions(pk="ode"), marks=pytest.mark.long),
    pytest.param(SolverOptions(events="superposition"), marks=pytest.mark.long),
], ids=["closed-form", "split", "ode", "superposition"])
def test_oral_one_compartment_matches_the_analytic_solution_on_every_path(options):
    got, grid = solve_endpoints(ORAL, REGIMENS, TIMES, END, options)
    tmax = math.log(KA / KE) / (KA - KE)
    # One dose: Cmax and Tmax analytic; AUC over the run and over a window.
    np.testing.assert_allclose(got["tmax_h"][0], tmax, atol=1e-6)
    np.testing.assert_allclose(got["cmax"][0], oral_conc(tmax), rtol=1e-7)
    np.testing.assert_allclose(got["auc"][0], oral_integral(0.0, 24.0), rtol=1e-7)
    np.testing.assert_allclose(got["auc_2_10"][0], oral_integral(2.0, 10.0), rtol=1e-7)
    np.testing.assert_allclose(got["mean_2_10"][0], oral_integral(2.0, 10.0) / 8.0, rtol=1e-7)
    np.testing.assert_allclose(got["cmin_2_10"][0], oral_conc(10.0), rtol=1e-7)
    # Two doses: the second peak is the higher (accumulation), again between outputs.
    ref = minimize_scalar(lambda t: -oral_conc(t, (0.0, 12.0)), bounds=(12.0, 16.0), method="bounded", options={"xatol": 1e-10})
    np.testing.assert_allclose(got["tmax_h"][1], ref.x, atol=1e-5)
    np.testing.assert_allclose(got["cmax"][1], -ref.fun, rtol=1e-7)
    np.testing.assert_allclose(got["auc"][1], oral_integral(0.0, 24.0) + oral_integral(0.0, 24.0, 12.0), rtol=1e-7)
    # The grid itself misses both (what the exact endpoints replace).
    assert grid["cmax"][0] < 0.99 * got["cmax"][0] and grid["tmax_h"][0] == 2.0
    # With the analytic tail past 24 h, the AUC over infinity is F dose / CL.
    tail = DOSE * KA / (V * (KA - KE)) * (math.exp(-KE * 24.0) / KE - math.exp(-KA * 24.0) / KA)
    np.testing.assert_allclose(got["auc"][0] + tail, DOSE / CL, rtol=1e-7)


def test_infusion_maximum_at_its_end_between_outputs():
    model = one_compartment(cl=CL, v=V)
    start, duration, rate = 0.3, 1.1, 5.0  # ends at 1.4 h; outputs every 0.5 h
    times = np.arange(0.0, 12.0 + 1e-9, 0.5)
    end = 1.4
    got, grid = solve_endpoints(model, [Regimen((Infusion(rate=rate, start_h=start, duration_h=duration, unit="mg/h"),))], times, END)
    c_end = rate / CL * (1.0 - math.exp(-KE * duration))
    np.testing.assert_allclose(got["cmax"][0], c_end, rtol=1e-8)
    np.testing.assert_allclose(got["tmax_h"][0], end, atol=1e-12)
    during = rate / CL * (duration - (1.0 - math.exp(-KE * duration)) / KE)
    after = c_end * (1.0 - math.exp(-KE * (12.0 - end))) / KE
    np.testing.assert_allclose(got["auc"][0], during + after, rtol=1e-7)
    assert grid["cmax"][0] < got["cmax"][0]


# An IL-1beta-like cascade: crystals X decay, activate the inflammasome M, which releases IL.
def _cascade_rhs(t, y, p, rate):
    x, m, il = y
    return jnp.stack([-p["kx"] * x + rate[0], p["km"] * (x - m), p["ksyn"] * m - p["kil"] * il])


CASCADE = Model(
    name="il1b_cascade_test",
    states=(State("crystals", "-"), State("inflammasome", "-"), State("il1b", "pM")),
    parameters=(Parameter("kx", 0.2, "1/h", 0.0, 10.0), Parameter("km", 1.0, "1/h", 0.0, 10.0),
                Parameter("ksyn", 55.0, "pM/h", 0.0, 1e3), Parameter("kil", 1.0, "1/h", 0.0, 10.0)),
    vector_field=_cascade_rhs,
    observables=(Observable("il1b_pg_ml", lambda y, p: y[2] * 17.3 / 5.0, unit="pg/mL"),),
    routes=(Route("crystals", "crystals"),),
)
PEAK = [Endpoint("il1b_peak", "il1b_pg_ml", "max"), Endpoint("il1b_tmax_h", "il1b_pg_ml", "tmax"),
        Endpoint("il1b_auc", "il1b_pg_ml", "auc")]


def _cascade_reference(end):
    p = {"kx": 0.2, "km": 1.0, "ksyn": 55.0, "kil": 1.0}

    def rhs(t, y):
        x, m, il, _ = y
        return [-p["kx"] * x, p["km"] * (x - m), p["ksyn"] * m - p["kil"] * il, il * 17.3 / 5.0]

    sol = solve_ivp(rhs, (0.0, end), [1.0, 0.0, 0.0, 0.0], method="DOP853", rtol=1e-12, atol=1e-14, dense_output=True)
    ref = minimize_scalar(lambda t: -sol.sol(t)[2] * 17.3 / 5.0, bounds=(1.0, 6.0), method="bounded", options={"xatol": 1e-10})
    return ref.x, -ref.fun, sol.sol(end)[3]


def _check_cascade(times):
    got, grid = solve_endpoints(CASCADE, [Regimen((Bolus(1.0, route="crystals"),))], times, PEAK)
    tmax, peak, auc = _cascade_reference(float(times[-1]))
    np.testing.assert_allclose(got["il1b_tmax_h"][0], tmax, atol=1e-5)
    np.testing.assert_allclose(got["il1b_peak"][0], peak, rtol=1e-8)
    np.testing.assert_allclose(got["il1b_auc"][0], auc, rtol=1e-7)
    return got, grid


def test_il1b_like_peak_is_independent_of_the_grid():
    # Two grids of the same length (one compiled solve): every 0.25 h to 24 h, every 0.1 h to 9.6 h.
    coarse, coarse_grid = _check_cascade(np.round(np.arange(97) * 0.25, 10))
    fine, _ = _check_cascade(np.round(np.arange(97) * 0.1, 10))
    assert abs(coarse["il1b_tmax_h"][0] - fine["il1b_tmax_h"][0]) < 1e-6
    assert coarse_grid["il1b_tmax_h"][0] == 3.25  # the grid's answer, as issue 23 found it for MSU-1


@pytest.mark.long
def test_il1b_like_peak_on_an_hourly_grid():
    _check_cascade(np.arange(25.0))


def test_no_exposure_endpoints_means_no_exposure_solve():
    assert exposure_spec([Endpoint("c6", "conc_mg_per_l", "value", 6.0)]) is None


@pytest.mark.long
def test_exact_endpoints_are_differentiable():
    """Reverse-mode derivatives (the gradient dose search takes them) match finite
    differences: Cmax and AUC scale with the dose, Tmax does not move."""
    import jax

    from vtrial.engine.exposure import exposure_solver

    solve = exposure_solver(ORAL, exposure_spec(END[:3]))
    records = lower_regimens(ORAL, [REGIMENS[1]]).take(0)
    p = {k: jnp.asarray(v) for k, v in ORAL.typical_values().items()}

    def endpoints(u, ka):
        _, got = solve(p | {"ka": ka}, records._replace(amount=records.amount * jnp.exp(u)), jnp.asarray(TIMES), 0.0,
                       SolverOptions(events="split"))
        return jnp.stack([got["cmax"], got["auc"], got["tmax_h"]])

    value = endpoints(0.0, KA)
    by_dose, by_ka = jax.jacrev(endpoints, argnums=(0, 1))(0.0, KA)
    np.testing.assert_allclose(by_dose, [value[0], value[1], 0.0], rtol=1e-8, atol=1e-9)
    h = 1e-6
    np.testing.assert_allclose(by_ka, (endpoints(0.0, KA + h) - endpoints(0.0, KA - h)) / (2 * h), rtol=1e-5, atol=1e-6)
