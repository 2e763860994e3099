"""Population estimation (FOCE-I, FOCE, Laplace, FO) against NONMEM's published fit of
Bolus_2CPT, exact gradients against central differences, and recovery of a simulated truth.

The reference numbers are NONMEM 7's, from the Bolus_2CPT reference set (Schoemaker et al. 2019;
kept outside the repository: the tests that need it skip without it, see conftest.shared_data).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vtrial
from vtrial.design.dosing import Bolus, Regimen, lower_regimens
from vtrial.design.population import CovariateDistribution, CovariateEffect, Population, ResidualError
from vtrial.engine.events import DoseRecords
from vtrial.engine.runner import simulate_population
from vtrial.estimation import EstimationSpec, PopulationData, fit_population, population_objective
from vtrial.estimation.focei import FOCEI_WITHOUT_VARIANCE_TERM
from vtrial.io.nonmem import read_nonmem
from vtrial.models import get_model, one_compartment, two_compartment

from conftest import REPO_ROOT, shared_data

BOLUS_CSV = "data/bolus_2cpt/bolus_2cpt_nonmem.csv"

# NONMEM 7 FOCE-I (README): log typical values, omega^2, proportional SD, and their SEs.
NONMEM_THETA = {"cl": 1.37034, "v1": 4.19815, "q": 1.38003, "v2": 3.87657}
NONMEM_OMEGA2 = {"cl": 0.101251, "v1": 0.0993872, "q": 0.101303, "v2": 0.0730498}
NONMEM_PROP = 0.196446
NONMEM_SE = {
    "log_cl": 0.0298, "log_v1": 0.0295, "log_q": 0.0547, "log_v2": 0.0348,
    "conc_mg_per_l.proportional": 0.00315,
    "omega2_cl": 0.0130, "omega2_v1": 0.0123, "omega2_q": 0.0310, "omega2_v2": 0.0226,
}  # fmt: skip
NONMEM_OFV = 20167.641
NONMEM_ETA_SHRINKAGE = {"cl": 1.94, "v1": 2.46, "q": 40.5, "v2": 28.4}
NONMEM_EPS_SHRINKAGE = 6.99


#: How Bolus_2CPT's columns map to `two_compartment` (as configs/bolus_2cpt_fit.toml says).
BOLUS_MAPPING = {"amt_unit": "ug", "routes": {"iv": [1]}, "observables": {"conc_mg_per_l": {"unit": "ug/L"}}}


def bolus_data(n_subjects: int | None = None) -> PopulationData:
    """Bolus_2CPT read by the NONMEM reader (AMT ug -> mg, DV ug/L against the model's
    mg/L: dv_scale 1000), its first `n_subjects` subjects."""
    data = read_nonmem(shared_data(BOLUS_CSV), get_model("two_compartment"), BOLUS_MAPPING)
    return data if n_subjects is None else data.take(slice(0, n_subjects))


def bolus_spec(theta, omega2, prop, **kw) -> EstimationSpec:
    return EstimationSpec(
        typical={k: math.exp(v) for k, v in theta.items()},
        omega2=dict(omega2),
        residual={"conc_mg_per_l": ResidualError(proportional=prop)},
        **kw,
    )


@pytest.fixture(scope="module")
def model():
    return two_compartment()


@pytest.fixture(scope="module")
def full_data():
    return bolus_data()


@pytest.fixture(scope="module")
def few_data():
    return bolus_data(5)


@pytest.fixture(scope="module")
def at_nonmem(model, full_data):
    return population_objective(model, full_data, bolus_spec(NONMEM_THETA, NONMEM_OMEGA2, NONMEM_PROP))


def central_differences(model, data, spec, method, x, eta, h=1e-5, solver=vtrial.SolverOptions()):
    out = []
    for i in range(x.size):
        values = []
        for sign in (1, -1):
            xi = x.copy()
            xi[i] += sign * h
            values.append(population_objective(model, data, spec, method=method, x=xi, eta=eta, gradient=False, solver=solver).ofv)
        out.append((values[0] - values[1]) / (2 * h))
    return np.asarray(out)


# -- the objective at NONMEM's estimates ---------------------------------------------------


def test_focei_ofv_at_nonmem_estimates(at_nonmem, full_data):
    assert at_nonmem.ofv == pytest.approx(NONMEM_OFV, abs=0.05)
    n_log_2pi = full_data.n_observations * math.log(2 * math.pi)
    assert full_data.n_observations == 2280
    assert at_nonmem.ofv_with_constant - at_nonmem.ofv == pytest.approx(n_log_2pi)
    assert at_nonmem.ofv_with_constant == pytest.approx(24358.001, abs=0.05)


@pytest.mark.long
def test_interaction_term_is_in_the_hessian(model, full_data):
    """Without the variance-gradient term of NONMEM's FOCE-I Hessian the OFV drops to the
    README's 20143.07: the term is there, and it matters with a proportional error."""
    spec = bolus_spec(NONMEM_THETA, NONMEM_OMEGA2, NONMEM_PROP)
    r = population_objective(model, full_data, spec, method=FOCEI_WITHOUT_VARIANCE_TERM, gradient=False)
    assert r.ofv == pytest.approx(20143.07, abs=0.05)


@pytest.mark.long
def test_full_gradient_matches_central_differences(model, full_data, at_nonmem):
    """(Quick: the same on 5 subjects, every method, below.)"""
    spec = bolus_spec(NONMEM_THETA, NONMEM_OMEGA2, NONMEM_PROP)
    fd = central_differences(model, full_data, spec, "focei", at_nonmem.x, at_nonmem.eta, h=1e-5)
    np.testing.assert_allclose(at_nonmem.gradient, fd, rtol=1e-4, atol=2e-3)
    # Per-subject gradients (NONMEM's S matrix) add up to the gradient.
    np.testing.assert_allclose(at_nonmem.subject_gradients.sum(axis=0), at_nonmem.gradient, rtol=1e-10, atol=1e-8)


# FOCE-I (the default method) by default; the other methods' gradients are long validations.
@pytest.mark.parametrize("method", ["focei", *(pytest.param(m, marks=pytest.mark.long) for m in ("laplace", "foce", "fo"))])
def test_gradient_matches_central_differences_few_subjects(model, few_data, method):
    """Away from the optimum, with a correlated block: the implicit derivative of the EBEs
    is in the gradient (FOCE-I's Hessian depends on them)."""
    theta = {k: v * f for (k, v), f in zip(NONMEM_THETA.items(), (1.1, 0.95, 1.0, 1.05))}
    spec = bolus_spec(theta, NONMEM_OMEGA2, 0.25, blocks=(("cl", "v1"),), correlation={("cl", "v1"): 0.3})
    r = population_objective(model, few_data, spec, method=method)
    fd = central_differences(model, few_data, spec, method, r.x, r.eta)
    np.testing.assert_allclose(r.gradient, fd, rtol=1e-4, atol=1e-6)
    # Per-subject gradients (NONMEM's S matrix) add up to the gradient.
    np.testing.assert_allclose(r.subject_gradients.sum(axis=0), r.gradient, rtol=1e-10, atol=1e-8)


@pytest.mark.long  # the all-ODE path of the FOCE-I objective against the closed form, with gradients: a validation (the closed form's gradient is checked by default)
def test_ode_path_agrees_and_differentiates(model):
    """SolverOptions(pk="ode") (diffrax, forward-mode adjoint): same objective as the
    closed form to the solver's tolerance, gradient equal to central differences."""
    data = bolus_data(3)
    spec = bolus_spec({k: v * 1.05 for k, v in NONMEM_THETA.items()}, NONMEM_OMEGA2, 0.2)
    ode = vtrial.SolverOptions(pk="ode")
    r = population_objective(model, data, spec, solver=ode)
    closed = population_objective(model, data, spec, gradient=False)
    assert r.ofv == pytest.approx(closed.ofv, rel=1e-7)
    # Along one generic direction (2 ODE objectives, not 2 per parameter; every parameter
    # is checked on the closed form above).
    v = np.random.default_rng(0).normal(size=r.x.size)
    h = 1e-4
    ofv = [population_objective(model, data, spec, x=r.x + s * h * v, eta=r.eta, gradient=False, solver=ode).ofv for s in (1, -1)]
    np.testing.assert_allclose(r.gradient @ v, (ofv[0] - ofv[1]) / (2 * h), rtol=1e-4, atol=1e-4)


def test_subjects_are_independent_of_the_batch(few_data, full_data, model, at_nonmem):
    """A subject's EBE and objective do not depend on which others are in the batch."""
    few = population_objective(model, few_data, bolus_spec(NONMEM_THETA, NONMEM_OMEGA2, NONMEM_PROP), gradient=False)
    np.testing.assert_allclose(few.subject_ofv, at_nonmem.subject_ofv[:5], rtol=1e-10)
    np.testing.assert_allclose(few.eta, at_nonmem.eta[:5], atol=1e-8)


# -- the whole fit --------------------------------------------------------------------


#: NONMEM's initial values (README: theta (1.6, 4.5, 1.6, 4.0, 0.3), omega^2 0.15).
INITIAL = ({"cl": 1.6, "v1": 4.5, "q": 1.6, "v2": 4.0}, {k: 0.15 for k in NONMEM_OMEGA2}, 0.3)


@pytest.fixture(scope="module")
def bolus_fit(model, full_data):
    """The whole dataset from NONMEM's initial values (the long validation against NONMEM)."""
    seen = []
    fit = fit_population(model, full_data, bolus_spec(*INITIAL), on_iteration=lambda i, ofv: seen.append((i, ofv)))
    return fit, seen


@pytest.fixture(scope="module")
def quick_fit(model):
    """The first 16 subjects from NONMEM's initial values: what a fit writes and reports,
    quickly (converges, covariance step ok)."""
    seen = []
    fit = fit_population(model, bolus_data(16), bolus_spec(*INITIAL), on_iteration=lambda i, ofv: seen.append((i, ofv)))
    return fit, seen


@pytest.mark.long
def test_fit_matches_nonmem(bolus_fit):
    fit, seen = bolus_fit
    assert fit.converged and fit.covariance_step == "ok", fit.warnings
    assert fit.ofv == pytest.approx(NONMEM_OFV, abs=0.5)
    assert fit.method == "focei" and fit.n_subjects == 120 and fit.n_observations == 2280
    est = fit.estimates
    for name, theta in NONMEM_THETA.items():
        assert est[name] == pytest.approx(math.exp(theta), rel=0.02), name
        assert est[f"omega2_{name}"] == pytest.approx(NONMEM_OMEGA2[name], rel=0.05), name
    assert est["conc_mg_per_l.proportional"] == pytest.approx(NONMEM_PROP, rel=0.02)
    for name, se in NONMEM_SE.items():
        assert fit.se[name] == pytest.approx(se, rel=0.10), name
    # The progress callback saw every iteration, and the OFV went down from the start.
    assert [i for i, _ in seen] == list(range(1, fit.iterations + 1))
    assert seen[0][1] > seen[-1][1] + 100
    assert fit.ofv_with_constant - fit.ofv == pytest.approx(2280 * math.log(2 * math.pi))
    assert fit.aic == pytest.approx(fit.ofv_with_constant + 2 * 9)
    assert fit.bic == pytest.approx(fit.ofv_with_constant + 9 * math.log(2280))


@pytest.mark.long
def test_shrinkage_and_diagnostics_match_nonmem(bolus_fit):
    fit, _ = bolus_fit
    for name, pct in NONMEM_ETA_SHRINKAGE.items():
        assert fit.eta_shrinkage_pct[name] == pytest.approx(pct, abs=0.5), name
    assert fit.epsilon_shrinkage_pct["conc_mg_per_l"] == pytest.approx(NONMEM_EPS_SHRINKAGE, abs=0.3)
    pred = fit.predictions_frame()
    assert len(pred) == 2280
    # CWRES of a well-specified model: mean ~0, SD ~1.
    assert abs(pred.CWRES.mean()) < 0.1 and pred.CWRES.std() == pytest.approx(1.0, abs=0.1)


def test_fit_reports_its_iterations_predictions_and_individuals(quick_fit):
    fit, seen = quick_fit
    assert fit.converged and fit.covariance_step == "ok", fit.warnings
    assert fit.n_subjects == 16 and fit.n_observations == 16 * 19
    # The progress callback saw every iteration, and the OFV went down from the start.
    assert [i for i, _ in seen] == list(range(1, fit.iterations + 1))
    assert seen[0][1] > seen[-1][1]
    pred = fit.predictions_frame()
    assert list(pred.columns[:10]) == ["ID", "TIME", "observable", "DV", "PRED", "IPRED", "RES", "IRES", "IWRES", "CWRES"]
    assert len(pred) == fit.n_observations and pred.row.is_monotonic_increasing
    np.testing.assert_allclose(pred.RES, pred.DV - pred.PRED)
    assert np.isfinite(pred[["PRED", "IPRED", "IWRES", "CWRES"]].to_numpy()).all()
    ind = fit.individual_frame()
    assert len(ind) == 16 and {"eta_cl", "cl", "shrinkage_pct_q", "ofv"} <= set(ind.columns)
    np.testing.assert_allclose(ind.cl, fit.estimates["cl"] * np.exp(ind.eta_cl))
    assert ind.ofv.sum() == pytest.approx(fit.ofv)
    assert set(fit.eta_shrinkage_pct) == set(NONMEM_ETA_SHRINKAGE)


def test_parameter_table(quick_fit):
    fit, _ = quick_fit
    table = fit.to_frame()
    assert list(table.columns) == ["name", "estimate", "se", "rse_pct", "ci_low", "ci_high", "unit", "fixed", "scale"]
    names = list(table.name)
    assert names[:4] == ["cl", "v1", "q", "v2"]
    assert {"omega2_cl", "cv_pct_cl", "omega2_v2", "conc_mg_per_l.proportional"} <= set(names)
    cl = table.set_index("name").loc["cl"]
    assert cl.unit == "L/h" and not cl.fixed
    assert cl.ci_low < cl.estimate < cl.ci_high
    assert cl.rse_pct == pytest.approx(100 * fit.se["log_cl"])
    assert cl.scale == "log"  # bounds (0, inf): NONMEM's mu-referenced exp(THETA)
    assert cl.ci_low == pytest.approx(cl.estimate * math.exp(-1.959963984540054 * fit.se["log_cl"]))
    cv = table.set_index("name").loc["cv_pct_cl"]
    assert cv.estimate == pytest.approx(100 * math.sqrt(math.expm1(fit.estimates["omega2_cl"])))
    corr = fit.correlation_frame()
    np.testing.assert_allclose(np.diag(corr), 1.0)


def test_fit_that_cannot_converge_says_so(model, quick_fit, compile_log):
    # After quick_fit: the same structure and shapes (another dataset of the same size
    # bucket would do), so nothing at all compiles again: not the objective's pieces, the
    # optimiser (host numpy) or the tables' small computations.
    spec = bolus_spec({"cl": 0.5, "v1": 2.0, "q": 3.0, "v2": 6.0}, {k: 0.5 for k in NONMEM_OMEGA2}, 0.6)
    with compile_log() as compiled:
        fit = fit_population(model, bolus_data(16), spec, max_iterations=3)
    assert compiled == []
    assert not fit.converged
    assert fit.covariance_step.startswith("failed")
    assert any("not converged" in w for w in fit.warnings)
    assert all(math.isnan(v) for v in fit.se.values())
    assert fit.to_frame().se.isna().all()


def test_fixed_parameters_stay_fixed(model):
    from vtrial.estimation.population_spec import build_layout, reported_names, unpack

    spec = bolus_spec(NONMEM_THETA, NONMEM_OMEGA2, NONMEM_PROP, fixed=("q", "conc_mg_per_l.proportional"))
    layout, constants, x0 = build_layout(model, spec, np.array([1000.0]))
    names = reported_names(layout, model.observable_names)
    assert names == ("log_cl", "log_v1", "log_v2", "omega2_cl", "omega2_v1", "omega2_q", "omega2_v2")
    u = unpack(layout, constants, jnp.asarray(x0) + 0.1)  # whatever the optimiser tries
    assert float(u.typical["q"]) == pytest.approx(math.exp(NONMEM_THETA["q"]))
    assert float(u.residual_sd[0, 1]) == pytest.approx(NONMEM_PROP)
    assert float(u.typical["cl"]) == pytest.approx(math.exp(NONMEM_THETA["cl"] + 0.1))


def test_bad_specs_are_named(model, few_data):
    with pytest.raises(vtrial.SpecError, match="parameters.cx"):
        population_objective(model, few_data, EstimationSpec(typical={"cx": 1.0}))
    with pytest.raises(vtrial.SpecError, match="residual.conc_mg_per_l"):
        population_objective(model, few_data, EstimationSpec(typical={"cl": 1.0}, omega2={"cl": 0.1}))
    with pytest.raises(vtrial.SpecError, match="estimation.method"):
        population_objective(model, few_data, bolus_spec(NONMEM_THETA, NONMEM_OMEGA2, 0.2), method="saem")
    bad = few_data._replace(dv=np.where(np.arange(few_data.dv.shape[1]) == 3, np.nan, few_data.dv))
    with pytest.raises(vtrial.DataError, match=r"row 5 \(ID 1\), column DV"):
        population_objective(model, bad, bolus_spec(NONMEM_THETA, NONMEM_OMEGA2, 0.2))


# -- a one-compartment oral model on data simulated by vtrial --------------------------


def oral_population_data(n: int, times, seed: int = 7):
    """`n` rats, oral 10 mg/kg, allometric clearance, combined error, sampled at `times`;
    simulated with vtrial's population draws and solver: (model, truth, effects,
    residual, params, data)."""
    model = one_compartment(absorption=True)
    truth = {"ka": 1.2, "cl": 0.3, "v": 2.0}
    effects = (CovariateEffect("cl", "bw", 0.25, 0.75),)
    residual = {"conc_mg_per_l": ResidualError(additive=0.02, proportional=0.1)}
    pop = Population.build(
        model,
        typical=truth,
        omega2={"ka": 0.09, "cl": 0.09, "v": 0.04},
        covariates=(CovariateDistribution("bw", 0.25, cv=0.2),),
        covariate_effects=effects,
        residual=residual,
    )
    times = np.asarray(times, float)
    params = pop.sample(jax.random.PRNGKey(seed), n)
    doses = lower_regimens(model, [Regimen((Bolus(10.0, unit="mg/kg", route="oral"),))] * n)
    sol = simulate_population(model, params, doses, times, states=False)
    conc = sol.observables["conc_mg_per_l"]
    noise_key = jax.random.PRNGKey(seed + 1)
    dv = np.asarray(residual["conc_mg_per_l"].sample(noise_key, jnp.asarray(conc)))
    data = PopulationData(
        ids=np.arange(1, n + 1),
        doses=doses,
        obs_time_h=np.broadcast_to(times, (n, times.size)).copy(),
        obs_observable=np.zeros((n, times.size), int),
        dv=dv,
        obs_mask=np.ones((n, times.size), bool),
        covariates={"bw": params["bw"]},
        dv_scale=np.array([1.0]),
        obs_row=np.arange(n * times.size).reshape(n, times.size) + 2,
    )
    return model, truth, effects, residual, params, data


@pytest.fixture(scope="module")
def oral_study():
    """60 rats sampled 9 times over 24 h (`oral_population_data`)."""
    return oral_population_data(60, [0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 24.0])


@pytest.mark.long
def test_one_compartment_oral_recovers_the_truth(oral_study):
    """The oral study fitted (FOCE-I) from a start 20-30% away."""
    model, truth, effects, residual, params, data = oral_study
    spec = EstimationSpec(
        typical={"ka": 1.5, "cl": 0.22, "v": 2.5, "f": 1.0, "alag": 0.0},
        fixed=("f", "alag"),
        omega2={"ka": 0.2, "cl": 0.2, "v": 0.2},
        covariate_effects=effects,
        residual={"conc_mg_per_l": ResidualError(additive=0.05, proportional=0.2)},
    )
    fit = fit_population(model, data, spec)
    assert fit.converged and fit.covariance_step == "ok", fit.warnings
    for name, value in truth.items():
        assert fit.estimates[name] == pytest.approx(value, rel=0.05), name
    assert fit.estimates["conc_mg_per_l.proportional"] == pytest.approx(0.1, rel=0.1)
    table = fit.to_frame().set_index("name")
    assert table.loc["f"].fixed and table.loc["f"].estimate == 1.0
    # Variances are known to within their sampling error (60 animals, 9 samples each:
    # SE 20-30%): each is within 3 SEs of the variance of the random effects drawn.
    typical = {"ka": 1.2, "v": 2.0, "cl": 0.3 * (params["bw"] / 0.25) ** 0.75}
    for name, t in typical.items():
        drawn = np.var(np.log(params[name] / t), ddof=1)
        row = table.loc[f"omega2_{name}"]
        assert abs(row.estimate - drawn) < 3 * row.se, (name, row.estimate, drawn, row.se)
    # The objective at the truth is worse than at the estimate.
    at_truth = population_objective(
        model,
        data,
        EstimationSpec(
            typical={**truth, "f": 1.0, "alag": 0.0}, fixed=("f", "alag"), omega2={"ka": 0.09, "cl": 0.09, "v": 0.04},
            covariate_effects=effects, residual=residual,
        ),
        gradient=False,
    )  # fmt: skip
    assert at_truth.ofv > fit.ofv


@pytest.mark.parametrize("absorption", [False, True])
def test_superposition_equals_the_split_solve(absorption):
    """`SolverOptions(events="superposition")` (what estimation uses for linear-PK-only
    models) equals the split solve: boluses, an infusion, a lag, outputs at event times
    (the value just before the event) and at t0."""
    from vtrial.engine.solve import SolverOptions, solve_animal

    if absorption:
        model = one_compartment(absorption=True, ka=1.3, cl=0.3, v=2.0, alag=0.4)
    else:
        model = two_compartment(cl=4.0, v1=70.0, q=4.0, v2=40.0)
    p = {k: jnp.asarray(v) for k, v in model.typical_values().items()}
    doses = DoseRecords(
        jnp.array([0.0, 5.0, 12.0, 12.0]), jnp.array([10.0, 3.0, 5.0, 0.0]), jnp.zeros(4), jnp.array([0.0, 2.0, 0.0, 0.0]), jnp.zeros(4, int)
    )
    t = jnp.array([0.0, 0.5, 1.0, 5.0, 6.0, 7.0, 12.0, 12.5, 24.0, 24.0])
    a = solve_animal(model, p, doses, t, options=SolverOptions(events="superposition")).states
    b = solve_animal(model, p, doses, t, options=SolverOptions(events="split")).states
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(vtrial.SpecError, match="superposition"):
        SolverOptions(events="superposition", pk="ode")


def test_fit_seeds_a_population(quick_fit, model):
    """The estimates as a vtrial Population (for a VPC or a trial config): typical values,
    Omega and the residual error in the model's own unit."""
    fit, _ = quick_fit
    pop = fit.population(model)
    assert pop.typical["cl"] == pytest.approx(fit.estimates["cl"])
    assert pop.iiv_names == ("cl", "v1", "q", "v2")
    assert pop.omega[2, 2] == pytest.approx(fit.estimates["omega2_q"])
    assert pop.residual["conc_mg_per_l"].proportional == pytest.approx(fit.estimates["conc_mg_per_l.proportional"])
    with pytest.raises(vtrial.SpecError, match="model"):
        fit.population(one_compartment())


def test_individual_fits(quick_fit, model):
    """Each subject alone (proportional error fixed at the population's): converged, the
    same optimum from two starts, and mostly near the EBE-based individual values (not
    all: 19 samples alone can prefer another split of CL and Q, which the population
    fit's prior pulls back)."""
    from vtrial.estimation import fit_individuals

    fit, _ = quick_fit
    data = bolus_data(8)
    prop = fit.estimates["conc_mg_per_l.proportional"]
    spec = bolus_spec(NONMEM_THETA, {}, prop, fixed=("conc_mg_per_l.proportional",))
    ind = fit_individuals(model, data, spec)
    assert list(ind.columns) == ["ID", "cl", "v1", "q", "v2", "ofv", "n_observations", "iterations", "converged"]
    assert ind.converged.all() and (ind.n_observations == 19).all()
    moved = bolus_spec({k: v + 0.3 for k, v in NONMEM_THETA.items()}, {}, prop, fixed=("conc_mg_per_l.proportional",))
    again = fit_individuals(model, data, moved)
    np.testing.assert_allclose(again.ofv, ind.ofv, rtol=1e-8)
    np.testing.assert_allclose(again.cl, ind.cl, rtol=1e-3)
    ebe = fit.individual_frame().iloc[:8]
    assert np.median(np.abs(ind.cl / ebe.cl - 1)) < 0.1
    assert np.median(np.abs(ind.v1 / ebe.v1 - 1)) < 0.1


# -- devices ----------------------------------------------------------------------------

_TWO_DEVICE_FIT = """
import json
from test_population_fit import bolus_data, bolus_spec
from vtrial.estimation import fit_population
from vtrial.models import two_compartment
spec = bolus_spec({"cl": 1.6, "v1": 4.5, "q": 1.6, "v2": 4.0}, {k: 0.15 for k in ("cl", "v1", "q", "v2")}, 0.3)
fit = fit_population(two_compartment(), bolus_data(12), spec, max_iterations=6)
print(json.dumps({"ofv": fit.ofv, "values": fit.estimation_values.tolist(), "eta": fit.individual_frame().filter(like="eta_").to_numpy().tolist(), "se": list(fit.se.values())}))
"""

# 16 rats of 64 observations: each device's 8 CWRES factorisations of 64 x 64 are more
# work than jaxlib 0.10's LAPACK kernels do on the calling thread (see
# vtrial.engine.lapack.LAPACK_PARALLEL_WORK): batched, both devices' kernels waited for
# each other's thread forever.
_TWO_DEVICE_DENSE_SAMPLING = """
import json
import numpy as np
from test_population_fit import oral_population_data
from vtrial.design.population import ResidualError
from vtrial.estimation import EstimationSpec, fit_population
model, truth, effects, residual, params, data = oral_population_data(16, np.linspace(0.25, 24.0, 64))
spec = EstimationSpec(typical=truth, omega2={"ka": 0.09, "cl": 0.09, "v": 0.04}, covariate_effects=effects,
                      residual={"conc_mg_per_l": ResidualError(additive=0.02, proportional=0.1)})
for method in ("focei", "fo"):
    fit = fit_population(model, data, spec, method=method, max_iterations=1, covariance=None)
    assert np.isfinite(fit.predictions_frame()["CWRES"]).all()
print(json.dumps({"ok": True}))
"""


def _on_two_devices(code: str) -> dict:
    """Run `code` (which prints one JSON line last) in a process with two CPU devices."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_COMPILATION_CACHE_DIR=str(REPO_ROOT / ".jax_cache"),
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "tests"), env.get("PYTHONPATH", "")]))
    prelude = "import jax\nassert jax.device_count() == 2, jax.devices()\n"
    try:
        done = subprocess.run([sys.executable, "-c", prelude + code], env=env, capture_output=True, text=True, timeout=600,
                              cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail("the two-device fit hung (10 min)")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.long
def test_a_fit_split_over_two_devices_equals_one_device(model):
    """Subjects split over two CPU devices (as `vtrial fit` does on a 2-core machine, and
    over GPUs): the same fit to rounding as on one device, the optimiser's host callback
    running the two-device objective without deadlock."""
    spec = bolus_spec({"cl": 1.6, "v1": 4.5, "q": 1.6, "v2": 4.0}, {k: 0.15 for k in NONMEM_OMEGA2}, 0.3)
    one = fit_population(model, bolus_data(12), spec, max_iterations=6)
    two = _on_two_devices(_TWO_DEVICE_FIT)
    assert two["ofv"] == pytest.approx(one.ofv, rel=1e-10)
    np.testing.assert_allclose(two["values"], one.estimation_values, rtol=1e-7)
    np.testing.assert_allclose(two["eta"], one.individual_frame().filter(like="eta_").to_numpy(), atol=1e-7)
    np.testing.assert_allclose(two["se"], list(one.se.values()), rtol=1e-5)


@pytest.mark.long
def test_dense_sampling_on_two_devices_does_not_hang():
    """FOCE-I and FO with 64 observations per subject on two devices: the per-subject
    factorisations (CWRES; FO's objective) stay under jaxlib's parallel LAPACK path."""
    assert _on_two_devices(_TWO_DEVICE_DENSE_SAMPLING) == {"ok": True}


@pytest.mark.long  # a full FOCE-I fit with an estimated allometric exponent; the estimation machinery it uses is checked by default on smaller fits
def test_estimated_exponent_and_fixed_variance(oral_study):
    """The allometric exponent estimated (from 1.0; truth 0.75) with omega2_v fixed at
    its truth: exact gradient with that layout, the exponent within 3 SEs of the truth,
    the fixed variance reported as fixed, and the estimate carried into the population
    the fit seeds."""
    model, truth, effects, residual, params, data = oral_study
    spec = EstimationSpec(
        typical={"ka": 1.5, "cl": 0.22, "v": 2.5},
        omega2={"ka": 0.2, "cl": 0.2, "v": 0.04},
        fixed=("omega2_v",),
        covariate_effects=(CovariateEffect("cl", "bw", 0.25, 1.0),),
        estimate_exponents=(("cl", "bw"),),
        residual={"conc_mg_per_l": ResidualError(additive=0.05, proportional=0.2)},
    )
    few = data.take(slice(0, 6))
    r = population_objective(model, few, spec)
    assert r.x_names == ("log_ka", "log_cl", "log_v", "exponent_cl_bw", "omega2_ka", "omega2_cl",
                         "conc_mg_per_l.additive", "conc_mg_per_l.proportional")  # fmt: skip
    np.testing.assert_allclose(r.gradient, central_differences(model, few, spec, "focei", r.x, r.eta), rtol=1e-5, atol=1e-5)

    fit = fit_population(model, data, spec)
    assert fit.converged and fit.covariance_step == "ok", fit.warnings
    table = fit.to_frame().set_index("name")
    row = table.loc["exponent_cl_bw"]
    assert not row.fixed and abs(row.estimate - 0.75) < 3 * row.se, row
    assert table.loc["omega2_v"].fixed and table.loc["omega2_v"].estimate == pytest.approx(0.04)
    assert math.isnan(table.loc["omega2_v"].se) and table.loc["cv_pct_v"].fixed
    assert fit.population(model).covariate_effects[0].exponent == pytest.approx(row.estimate)
    text = vtrial.trial_config_from_fit(fit, model, covariate_effects=spec.covariate_effects)
    import tomllib

    assert tomllib.loads(text)["covariate_effects"][0]["exponent"] == pytest.approx(row.estimate, rel=1e-6)
    # A block cannot be fixed in part.
    block = EstimationSpec(typical=spec.typical, omega2=spec.omega2, blocks=(("ka", "cl"),), fixed=("omega2_ka",),
                           residual=spec.residual)  # fmt: skip
    with pytest.raises(vtrial.SpecError, match="fixed.omega2_ka"):
        population_objective(model, few, block, gradient=False)


def test_lapack_safe_chunks_split_large_batches_and_change_nothing():
    """`in_lapack_safe_chunks`: more subjects than the LAPACK work bound allows are taken
    in equal chunks whose batched factorisations stay under it; results are the
    unchunked ones, per subject."""
    from vtrial.engine.lapack import LAPACK_PARALLEL_WORK
    from vtrial.estimation.subjects import in_lapack_safe_chunks

    n, m = 24, 40
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, m, m))
    from collections import namedtuple

    data = namedtuple("Data", "times")(jnp.zeros((n, m)))
    spd = jnp.asarray(a @ np.swapaxes(a, 1, 2) + m * np.eye(m))
    seen = []

    def fn(x, constants, data, mats):
        seen.append(mats.shape[0])
        return jnp.linalg.cholesky(mats) * x, jnp.sum(mats, axis=(1, 2)) + constants

    flops = lambda data: m**3  # noqa: E731
    chunked = in_lapack_safe_chunks(fn, flops)
    chol, total = jax.jit(lambda x, c, d, mats: chunked(x, c, d, mats))(2.0, 1.0, data, spd)
    assert max(seen) * m**3 < LAPACK_PARALLEL_WORK
    np.testing.assert_allclose(chol, 2.0 * np.linalg.cholesky(np.asarray(spd)), rtol=1e-12)
    np.testing.assert_allclose(total, np.asarray(spd).sum(axis=(1, 2)) + 1.0, rtol=1e-12)
    seen.clear()
    in_lapack_safe_chunks(fn, lambda data: 1)(2.0, 1.0, data, spd)
    assert seen == [n]  # small work: one batch, no map
