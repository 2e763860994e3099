"""Tests for vtrial.estimation.least_squares: recovery, uncertainty against references, failure modes."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats

from vtrial.estimation.least_squares import FitResult, fit_least_squares, fit_negative_log_likelihood


def _decay_residuals(params, data):
    t_h, conc = data
    return conc - params["a"] * jnp.exp(-params["k"] * t_h)


@pytest.fixture(scope="module")
def decay_data():
    rng = np.random.default_rng(0)
    t_h = np.linspace(0.0, 10.0, 25)
    conc = 10.0 * np.exp(-0.3 * t_h) + rng.normal(0.0, 0.2, t_h.size)
    return t_h, conc


@pytest.fixture(scope="module")
def decay_fit(decay_data):
    return fit_least_squares(_decay_residuals, {"a": 5.0, "k": 1.0}, data=decay_data,
                             transforms={"a": "log", "k": "log"})


def test_least_squares_matches_scipy_curve_fit(decay_data, decay_fit):
    t_h, conc = decay_data
    popt, pcov = optimize.curve_fit(lambda t, a, k: a * np.exp(-k * t), t_h, conc, p0=[5.0, 1.0])
    fit = decay_fit
    assert fit.converged and not fit.warnings
    np.testing.assert_allclose([fit.estimates["a"], fit.estimates["k"]], popt, rtol=1e-6)
    # delta-method SEs from the log scale equal curve_fit's natural-scale Gauss-Newton SEs
    np.testing.assert_allclose([fit.se["a"], fit.se["k"]], np.sqrt(np.diag(pcov)), rtol=1e-3)
    np.testing.assert_allclose(fit.natural_covariance(), pcov, rtol=1e-3)
    assert fit.n_obs == 25 and fit.n_params == 2 and fit.df == 23
    np.testing.assert_allclose(fit.ssr, np.sum((conc - popt[0] * np.exp(-popt[1] * t_h)) ** 2), rtol=1e-9)
    # log parameters: interval = exp(u +- t * se_u), asymmetric and positive
    q = stats.t.ppf(0.975, 23)
    se_u = np.sqrt(fit.covariance[1, 1])
    np.testing.assert_allclose(fit.ci_low["k"], np.exp(fit.unconstrained["k"] - q * se_u), rtol=1e-12)
    np.testing.assert_allclose(fit.ci_high["k"], np.exp(fit.unconstrained["k"] + q * se_u), rtol=1e-12)
    assert fit.ci_high["k"] - fit.estimates["k"] > fit.estimates["k"] - fit.ci_low["k"] > 0


def test_to_frame_columns(decay_fit):
    frame = decay_fit.to_frame({"a": "mg/L", "k": "1/h"})
    assert list(frame.columns) == ["parameter", "estimate", "se", "ci_low", "ci_high", "unit"]
    assert frame["parameter"].tolist() == ["a", "k"]
    assert frame["unit"].tolist() == ["mg/L", "1/h"]


def test_refit_same_shape_does_not_recompile(decay_data, decay_fit, compile_log):
    t_h, conc = decay_data
    with compile_log() as compiled:
        fit = fit_least_squares(_decay_residuals, {"a": 4.0, "k": 0.5}, data=(t_h, conc * 1.1),
                                transforms={"a": "log", "k": "log"})
    assert fit.converged
    assert compiled == []
    np.testing.assert_allclose(fit.estimates["a"], 1.1 * decay_fit.estimates["a"], rtol=1e-6)


def _normal_nll(params, x):
    z = (x - params["mu"]) / params["sigma"]
    return jnp.sum(0.5 * z**2 + jnp.log(params["sigma"]))


def test_nll_normal_matches_closed_form():
    x = np.random.default_rng(1).normal(3.0, 2.0, 200)
    fit = fit_negative_log_likelihood(_normal_nll, {"mu": 0.0, "sigma": 1.0}, data=x,
                                      transforms={"sigma": "log"})
    n, mu, sigma = x.size, x.mean(), x.std()  # MLEs
    assert fit.converged and fit.method == "negative_log_likelihood" and fit.df is None
    np.testing.assert_allclose([fit.estimates["mu"], fit.estimates["sigma"]], [mu, sigma], rtol=1e-8)
    # observed information at the MLE: diag(n / sigma^2, 2n) on (mu, log sigma)
    np.testing.assert_allclose(fit.covariance, np.diag([sigma**2 / n, 1 / (2 * n)]), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fit.se["sigma"], sigma / np.sqrt(2 * n), rtol=1e-6)
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(fit.ci_low["mu"], mu - z * sigma / np.sqrt(n), rtol=1e-6)
    np.testing.assert_allclose(fit.ci_high["sigma"], sigma * np.exp(z / np.sqrt(2 * n)), rtol=1e-6)


def _binomial_nll(params, data):
    k, n = data
    p = params["p"]
    return -(k * jnp.log(p) + (n - k) * jnp.log1p(-p))


def test_nll_logit_binomial():
    fit = fit_negative_log_likelihood(_binomial_nll, {"p": 0.5}, data=(17.0, 20.0),
                                      transforms={"p": "logit"})
    p = 17 / 20
    np.testing.assert_allclose(fit.estimates["p"], p, rtol=1e-8)
    np.testing.assert_allclose(fit.se["p"], np.sqrt(p * (1 - p) / 20), rtol=1e-6)
    assert 0 < fit.ci_low["p"] < p < fit.ci_high["p"] < 1  # logit interval stays in (0, 1)


def _product_residuals(params, t_h):
    # only a * b is identifiable
    return 6.0 * t_h - params["a"] * params["b"] * t_h


def test_non_identifiable_gives_nan_se_and_warning():
    fit = fit_least_squares(_product_residuals, {"a": 1.0, "b": 1.0}, data=np.linspace(0.0, 1.0, 8))
    np.testing.assert_allclose(fit.estimates["a"] * fit.estimates["b"], 6.0, rtol=1e-8)
    assert all(np.isnan(fit.se[k]) for k in ("a", "b"))
    assert np.isnan(fit.ci_low["a"]) and np.all(np.isnan(fit.covariance))
    assert any("identifiable" in w for w in fit.warnings)


def test_no_residual_degrees_of_freedom_warns():
    fit = fit_least_squares(lambda p: jnp.array([1.0, 2.0]) - p["m"] * jnp.array([1.0, 1.0]) - p["c"] * jnp.array([0.0, 1.0]),
                            {"m": 0.0, "c": 0.0})
    np.testing.assert_allclose([fit.estimates["m"], fit.estimates["c"]], [1.0, 1.0], atol=1e-8)
    assert fit.df == 0 and np.isnan(fit.se["m"])
    assert any("n_obs > n_params" in w for w in fit.warnings)


@pytest.mark.parametrize(
    ("init", "transforms", "match"),
    [
        ({"a": -1.0}, {"a": "log"}, "'a'.*<= 0"),
        ({"a": 1.5}, {"a": "logit"}, r"'a'.*\(0, 1\)"),
        ({"a": 1.0}, {"a": "exp"}, "not one of"),
        ({"a": 1.0}, {"b": "log"}, "not in init_params"),
        ({}, None, "empty"),
    ],
)
def test_bad_specification_raises(init, transforms, match):
    with pytest.raises(ValueError, match=match):
        fit_least_squares(lambda p: jnp.zeros(3), init, transforms=transforms)


def test_non_finite_start_raises():
    with pytest.raises(ValueError, match="not finite at the initial parameters"):
        fit_least_squares(lambda p: jnp.log(p["a"] - 2.0) * jnp.ones(3), {"a": 1.0})


def test_fit_result_is_frozen(decay_fit):
    assert isinstance(decay_fit, FitResult)
    with pytest.raises(AttributeError):
        decay_fit.ssr = 0.0
