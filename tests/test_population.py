"""Virtual populations: variability, covariates, individual-parameter tables, residual error.

Statistical checks use n = 20000 animals and a tolerance of a few standard errors
(the draws are seeded, so the tests are deterministic; the margin only guards against
an unlucky seed choice, not against flakiness).
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pandas as pd
import pytest

import vtrial as vt

N = 20_000
Z = 4.5  # standard errors allowed
MODEL = vt.models.one_compartment(absorption=True, cl=0.4, v=1.5, ka=1.2)
TYPICAL = MODEL.typical_values()


def log_eta(draws, name):
    return np.log(draws[name] / TYPICAL[name])


def test_omega_from_cv_percent():
    pop = vt.Population.build(MODEL, cv_percent={"cl": 30.0, "v": 20.0})
    assert pop.iiv_names == ("cl", "v")
    np.testing.assert_allclose(np.diag(pop.omega), [math.log(1 + 0.3**2), math.log(1 + 0.2**2)], rtol=1e-14)
    assert pop.omega[0, 1] == 0.0


@pytest.fixture(scope="module")
def diagonal_draws():
    pop = vt.Population.build(MODEL, cv_percent={"cl": 30.0, "v": 20.0}, omega2={"ka": 0.25})
    return pop, pop.sample(jax.random.PRNGKey(0), N)


@pytest.mark.parametrize("name,omega2", [("cl", math.log(1.09)), ("v", math.log(1.04)), ("ka", 0.25)], ids=["cl", "v", "ka"])
def test_log_parameters_have_mean_zero_and_sd_omega(diagonal_draws, name, omega2):
    _, draws = diagonal_draws
    eta = log_eta(draws, name)
    omega = math.sqrt(omega2)
    assert abs(eta.mean()) < Z * omega / math.sqrt(N)
    assert abs(eta.std(ddof=1) - omega) < Z * omega / math.sqrt(2 * N)
    # the arithmetic CV of a log-normal parameter is the CV% it was built from
    if name != "ka":
        cv = draws[name].std(ddof=1) / draws[name].mean()
        assert cv == pytest.approx(math.sqrt(math.exp(omega2) - 1), rel=0.03)


def test_parameters_without_variability_stay_typical(diagonal_draws):
    _, draws = diagonal_draws
    for name in ("f", "alag", "bw"):
        assert np.all(draws[name] == TYPICAL[name])


def test_full_covariance_with_correlations_is_reproduced(getkey):
    corr = {("cl", "v"): 0.6, ("v", "ka"): -0.3}
    pop = vt.Population.build(MODEL, cv_percent={"cl": 30.0, "v": 20.0, "ka": 40.0}, correlation=corr)
    sd = np.sqrt(np.log1p(np.array([0.3, 0.2, 0.4]) ** 2))
    r = np.array([[1.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 1.0]])
    expected = r * np.outer(sd, sd)
    np.testing.assert_allclose(pop.omega, expected, rtol=1e-14)

    draws = pop.sample(getkey(), N)
    eta = np.stack([log_eta(draws, n) for n in pop.iiv_names])
    cov = np.cov(eta)
    se = np.sqrt((np.outer(np.diag(expected), np.diag(expected)) + expected**2) / N)
    assert np.all(np.abs(cov - expected) < Z * se), (cov, expected)
    corr_hat = np.corrcoef(eta)
    assert corr_hat[0, 1] == pytest.approx(0.6, abs=Z * (1 - 0.36) / math.sqrt(N))
    assert corr_hat[1, 2] == pytest.approx(-0.3, abs=Z * (1 - 0.09) / math.sqrt(N))


def test_covariates_are_log_normal_with_median_and_cv(getkey):
    pop = vt.Population.build(MODEL, covariates=[vt.CovariateDistribution("bw", median=0.25, cv=0.2, unit="kg")])
    bw = pop.sample(getkey(), N)["bw"]
    sigma = math.sqrt(math.log1p(0.2**2))
    log_bw = np.log(bw / 0.25)
    assert abs(np.median(log_bw)) < Z * 1.2533 * sigma / math.sqrt(N)
    assert abs(log_bw.mean()) < Z * sigma / math.sqrt(N)
    assert abs(log_bw.std(ddof=1) - sigma) < Z * sigma / math.sqrt(2 * N)
    assert bw.std(ddof=1) / bw.mean() == pytest.approx(0.2, rel=0.03)


def test_covariate_power_effect(getkey):
    effect = vt.CovariateEffect("cl", "bw", reference=0.25, exponent=0.75)
    cov = vt.CovariateDistribution("bw", median=0.3, cv=0.25)
    # without variability on cl the relation is exact
    exact = vt.Population.build(MODEL, cv_percent={"v": 20.0}, covariates=[cov], covariate_effects=[effect])
    d = exact.sample(getkey(), 1000)
    np.testing.assert_allclose(d["cl"], TYPICAL["cl"] * (d["bw"] / 0.25) ** 0.75, rtol=1e-13)
    assert np.unique(d["bw"]).size == 1000
    # with variability, the effect is the slope of log cl on log bw and eta stays N(0, omega)
    noisy = vt.Population.build(MODEL, cv_percent={"cl": 30.0}, covariates=[cov], covariate_effects=[effect])
    d = noisy.sample(getkey(), N)
    x, y = np.log(d["bw"] / 0.25), np.log(d["cl"] / TYPICAL["cl"])
    slope = np.polyfit(x, y, 1)[0]
    omega = math.sqrt(math.log(1.09))
    assert slope == pytest.approx(0.75, abs=Z * omega / (x.std() * math.sqrt(N)))
    eta = y - 0.75 * x
    assert abs(eta.std(ddof=1) - omega) < Z * omega / math.sqrt(2 * N)


def test_table_of_individual_parameters_simulates_exactly_those_animals():
    model = vt.models.one_compartment()  # i.v.: C = D/V exp(-CL/V t)
    table = pd.DataFrame(
        {
            "arm": ["high", "low", "low", "high", "low"],
            "animal": [7, 2, 0, 3, 1],
            "cl": [0.1, 0.2, 0.3, 0.4, 0.5],
            "v": [1.0, 2.0, 0.5, 1.5, 3.0],
            # bw left out: takes the typical value
        }
    )
    arms = [vt.Arm("low", vt.Regimen((vt.Bolus(1.0),)), n_animals=50), vt.Arm("high", vt.Regimen((vt.Bolus(5.0),)), n_animals=50)]
    times = np.array([0.5, 2.0, 8.0])
    res = vt.simulate(model, arms, animals=table, times_h=times, options=vt.SolverOptions(rtol=1e-10, atol=1e-12))
    a = res.animals
    assert len(a) == 5  # the table, not the arms' n_animals
    assert list(zip(a["arm"], a["animal"])) == [("low", 0), ("low", 1), ("low", 2), ("high", 3), ("high", 7)]
    merged = a.merge(table, on=["arm", "animal"], suffixes=("", "_given"))
    np.testing.assert_array_equal(merged["cl"], merged["cl_given"])
    np.testing.assert_array_equal(merged["v"], merged["v_given"])
    assert np.all(a["bw"] == model.typical_values()["bw"])
    dose = np.where(a["arm"] == "high", 5.0, 1.0)
    cl, v = a["cl"].to_numpy(), a["v"].to_numpy()
    expected = dose[:, None] / v[:, None] * np.exp(-(cl / v)[:, None] * times[None, :])
    np.testing.assert_allclose(res.solution.observables["conc_mg_per_l"], expected, rtol=1e-6)
    frame = res.to_frame()
    assert len(frame) == 5 * times.size


@pytest.fixture(scope="module")
def residual_run():
    a, b = 0.05, 0.2  # additive mg/L, proportional 20%: equal at f = 0.25 mg/L
    model = vt.models.one_compartment()
    pop = vt.Population.build(model, cv_percent={"cl": 40.0, "v": 40.0}, residual={"conc_mg_per_l": vt.ResidualError(a, b)})
    res = vt.simulate(model, vt.Regimen((vt.Bolus(1.0),)), pop, times_h=[0.5, 2.0, 6.0, 12.0, 24.0, 48.0], n_animals=4000, seed=5)
    return a, b, res


def test_residual_error_sd_is_combined(residual_run):
    a, b, res = residual_run
    pred = res.to_frame()["conc_mg_per_l"].to_numpy()
    obs = res.observations()["conc_mg_per_l"].to_numpy()
    assert np.all(np.isfinite(obs)) and obs.shape == pred.shape
    z = (obs - pred) / np.sqrt(a**2 + (b * pred) ** 2)
    ratio = b * pred / a  # < 1: additive part dominates; > 1: proportional part does
    for lo, hi in [(0, 0.3), (0.3, 3.0), (3.0, np.inf)]:
        zi = z[(ratio >= lo) & (ratio < hi)]
        assert zi.size > 2000, (lo, hi, zi.size)
        assert abs(zi.mean()) < Z / math.sqrt(zi.size)
        assert abs(zi.std(ddof=1) - 1.0) < Z / math.sqrt(2 * zi.size), (lo, hi, zi.std())


def test_residual_error_is_reproducible_and_keyed_per_animal(residual_run):
    _, _, res = residual_run
    first, again = res.observations(), res.observations()
    pd.testing.assert_frame_equal(first, again)
    noise = (first["conc_mg_per_l"] - res.to_frame()["conc_mg_per_l"]).to_numpy().reshape(len(res.animals), -1)
    assert np.unique(noise[:, 0]).size == len(res.animals)  # no two animals share their noise
