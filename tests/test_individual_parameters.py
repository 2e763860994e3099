"""Individual parameters as NONMEM's $PK (a model's `individual` function of its
parameters and covariates), categorical and signed covariates, typical values on the
scale their bounds imply, and additive random effects."""

from __future__ import annotations

import copy
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vtrial as vt
from vtrial.design.population import Population, individual_parameters
from vtrial.engine.events import DoseRecords
from vtrial.engine.runner import simulate_population
from vtrial.engine.solve import solve_animal
from vtrial.errors import SpecError
from vtrial.estimation import EstimationSpec
from vtrial.estimation.population_spec import (
    build_layout,
    from_estimation_scale,
    scale_label,
    theta_scale,
    to_estimation_scale,
)
from vtrial.models import Covariate, Model, Observable, Parameter, Route, State
from vtrial.models.linear_pk import LinearPK, MammillaryConstants

INF = math.inf


def _individual(p):
    """$PK: allometric CL and V, a fractional effect of sex on CL (may be negative), an
    exponential effect of a centred age, lag and F derived, a derived initial amount."""
    cl = p["tvcl"] * (p["wt"] / 70.0) ** 0.75 * jnp.where(p["sex"] == 1, 1.0 + p["sex_cl"], 1.0) * jnp.exp(p["age_cl"] * p["age_c"])
    return {"cl": cl, "v": p["tvv"] * p["wt"] / 70.0, "lag": p["tlag"], "bio": p["fbio"], "a0": 0.0 * p["tvv"]}


def _constants(p):
    empty = jnp.zeros((0,), jnp.result_type(p["cl"]))
    return MammillaryConstants(jnp.stack([p["ka"]]), p["cl"], p["v"], empty, empty)


def oral_model(individual=_individual, **changes) -> Model:
    fields = dict(
        name="oral_with_pk_block",
        states=(State("depot", "mg"), State("central", "mg", initial="a0")),
        parameters=(
            Parameter("tvcl", 5.0, "L/h"),
            Parameter("tvv", 50.0, "L"),
            Parameter("ka", 1.2, "1/h"),
            Parameter("tlag", 0.5, "h"),
            Parameter("fbio", 0.7, "-", 0.0, 1.0),
            Parameter("sex_cl", -0.3, "-", -1.0, INF),
            Parameter("age_cl", 0.01, "1/year", -INF, INF),
        ),
        covariates=(
            Covariate("wt", "kg", 70.0),
            Covariate("sex", "-", 0, levels=(0, 1)),
            Covariate("age_c", "year", 0.0, "age minus 40 years", positive=False),
        ),
        individual=individual,
        vector_field=lambda t, y, p, rate: jnp.stack(
            [-p["ka"] * y[0] + rate[0], p["ka"] * y[0] - p["cl"] / p["v"] * y[1] + rate[1]]
        ),
        observables=(Observable("conc_mg_per_l", lambda y, p: y[1] / p["v"], "", "mg/L"),),
        routes=(Route("oral", "depot", "bio", "lag"),),
        linear_pk=LinearPK(("depot",), "central", (), _constants),
    )
    fields.update(changes)
    return Model(**fields)


@pytest.fixture(scope="module")
def model():
    return oral_model()


def one_dose(n=1):
    return DoseRecords(*(np.tile(np.asarray([v], float if i < 4 else int), (n, 1)) for i, v in enumerate((0.0, 100.0, 0.0, 0.0, 0))))


def test_derived_quantities_are_names_the_model_may_use(model):
    assert model.derived_names == ("cl", "v", "lag", "bio", "a0")
    p = model.derive(model.typical_values())
    assert float(p["cl"]) == pytest.approx(5.0) and float(p["bio"]) == pytest.approx(0.7)
    with pytest.raises(SpecError, match="unknown parameter 'nope'"):
        oral_model(routes=(Route("oral", "depot", "bio", "nope"),))
    with pytest.raises(SpecError, match="already a parameter"):
        oral_model(individual=lambda p: {**_individual(p), "ka": p["ka"]})
    with pytest.raises(SpecError, match="typical values"):
        oral_model(individual=lambda p: {**_individual(p), "bad": jnp.log(p["age_c"])})
    with pytest.raises(SpecError, match="KeyError"):
        oral_model(individual=lambda p: {"cl": p["CL"]})
    with pytest.raises(SpecError, match="linear_pk"):
        oral_model(individual=lambda p: {k: v for k, v in _individual(p).items() if k != "cl"},
                   vector_field=lambda t, y, p, rate: rate)


def test_covariates_may_be_codes_zero_or_negative(model):
    model.validate_values({"sex": np.array([0.0, 1.0]), "age_c": np.array([-12.5, 0.0]), "wt": 3.0}, "animals")
    with pytest.raises(SpecError, match=r"animals.sex.*row 2.*one of the codes 0, 1"):
        model.validate_values({"sex": np.array([1.0, 2.0])}, "animals")
    with pytest.raises(SpecError, match="> 0"):
        model.validate_values({"wt": 0.0}, "animals")
    with pytest.raises(SpecError, match="reference"):
        Covariate("sex", "-", 2, levels=(0, 1))


@pytest.mark.parametrize("pk", ["auto", "ode"])
def test_trial_path_closed_form_and_ode_use_the_derived_parameters(model, pk):
    """The batched runner (what trials run): lag and F from $PK delay and scale the dose,
    the categorical effect changes CL; the closed form and the ODE agree."""
    params = {k: np.full(3, v, float) for k, v in model.typical_values().items()}
    params["sex"] = np.array([0.0, 1.0, 1.0])
    params["age_c"] = np.array([0.0, 0.0, -20.0])
    times = np.array([0.25, 1.0, 4.0, 12.0])
    sol = simulate_population(model, params, one_dose(3), times, options=vt.SolverOptions(pk=pk), order="input")
    conc = np.asarray(sol.observables["conc_mg_per_l"])
    assert np.all(conc[:, 0] == 0.0)  # before the lag
    ka, f, lag, v = 1.2, 0.7, 0.5, 50.0
    for i, (sex, age) in enumerate(zip(params["sex"], params["age_c"])):
        cl = 5.0 * (0.7 if sex == 1 else 1.0) * math.exp(0.01 * age)
        k = cl / v
        t = times[1:] - lag
        expected = f * 100.0 * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))
        np.testing.assert_allclose(conc[i, 1:], expected, rtol=1e-6 if pk == "ode" else 1e-10)


@pytest.mark.long  # jit/vmap/grad agreement on both PK paths: a validation
def test_jit_vmap_and_grad_through_the_pk_block(model):
    times = jnp.array([2.0, 6.0])
    dose = one_dose().map(lambda a: jnp.asarray(a[0]))

    def conc(sex_cl, sex):
        p = {k: jnp.asarray(v, float) for k, v in model.typical_values().items()}
        p["sex_cl"], p["sex"] = sex_cl, sex
        sol = solve_animal(model, p, dose, times)
        return model.observe(sol.states[1], p)["conc_mg_per_l"]

    batched = jax.jit(jax.vmap(conc, in_axes=(None, 0)))
    c = batched(-0.3, jnp.array([0.0, 1.0]))
    assert c[1] > c[0]  # lower clearance
    g = jax.grad(conc)(-0.3, 1.0)
    h = 1e-6
    assert float(g) == pytest.approx((float(conc(-0.3 + h, 1.0)) - float(conc(-0.3 - h, 1.0))) / (2 * h), rel=1e-6)
    assert float(jax.grad(conc)(-0.3, 0.0)) == 0.0


@pytest.mark.parametrize("bounds,kind,label", [
    ((0.0, INF), "log", "log"),
    ((-0.99, INF), "log_lower", "log(x + 0.99)"),
    ((2.0, INF), "log_lower", "log(x - 2)"),
    ((-INF, 5.0), "log_upper", "log(5 - x)"),
    ((0.0, 1.0), "logit", "logit"),
    ((1.0, 3.0), "logit", "logit((x - 1)/(3 - 1))"),
    ((-INF, INF), "identity", "identity"),
])
def test_theta_scales_follow_the_bounds(bounds, kind, label):
    assert theta_scale(*bounds) == kind and scale_label(*bounds) == label
    lo, hi = bounds
    value = 0.5 * (lo + hi) if math.isfinite(lo) and math.isfinite(hi) else (lo + 1.5 if math.isfinite(lo) else (hi - 1.5 if math.isfinite(hi) else -3.0))
    x = to_estimation_scale(value, lo, hi)
    assert float(from_estimation_scale(jnp.asarray(x), lo, hi)) == pytest.approx(value, rel=1e-12)


def test_a_tiny_positive_lower_bound_reads_as_log():
    """A volume's 1e-12 lower bound is a positivity guard: labelled `log` next to its
    estimate (the estimation still uses log(x - 1e-12)); a bound near the estimate is not."""
    assert theta_scale(1e-12, INF) == "log_lower"
    assert scale_label(1e-12, INF, 20.0) == "log" and scale_label(1e-12, INF) == "log(x - 1e-12)"
    assert scale_label(1e-5, INF, 2.0) == "log(x - 1e-05)"  # 5e-6 of the estimate: shown
    assert scale_label(-1e-12, INF, 20.0) == "log(x + 1e-12)"  # a negative bound is never a guard


def test_bounds_and_additive_effects_reach_the_layout(model):
    residual = {"conc_mg_per_l": vt.ResidualError(proportional=0.1)}
    spec = EstimationSpec(typical={"tvcl": 5.0, "fbio": 0.7, "sex_cl": -0.3, "age_cl": 0.01}, bounds={"tvcl": (1.0, 20.0)},
                          omega2={"tvcl": 0.1, "sex_cl": 0.04}, additive=("sex_cl",), residual=residual)
    layout, _, x0 = build_layout(model, spec, np.ones(1))
    assert layout.theta_bounds == ((1.0, 20.0), (0.0, 1.0), (-1.0, INF), (-INF, INF))
    assert layout.additive == ("sex_cl",)
    assert x0[:4] == pytest.approx([math.log(4.0 / 15.0), math.log(0.7 / 0.3), math.log(0.7), 0.01])
    for bad, match in [
        (dict(typical={"fbio": 1.0}), "strictly inside"),
        (dict(typical={"tvcl": 5.0}, bounds={"tvcl": (-1.0, 10.0)}), "outside the model's range"),
        (dict(typical={"tvcl": 5.0}, bounds={"tvv": (1.0, 10.0)}), "bounds.tvv"),
        (dict(typical={"tvcl": 5.0}, additive=("tvcl",)), "variability.kind.tvcl"),
    ]:
        with pytest.raises(SpecError, match=match):
            build_layout(model, EstimationSpec(residual=residual, **bad), np.ones(1))


def test_additive_random_effects_in_populations(model):
    assert individual_parameters({"a": 2.0, "b": 2.0}, (), None, None, ("a", "b"), jnp.array([0.5, 0.5]), ("a",)) == {
        "a": 2.5, "b": pytest.approx(2.0 * math.exp(0.5))}
    pop = Population.build(model, omega2={"sex_cl": 0.01, "tvcl": 0.09}, additive=("sex_cl",))
    draws = pop.sample(jax.random.PRNGKey(0), 4000)
    assert np.mean(draws["sex_cl"]) == pytest.approx(-0.3, abs=0.01)
    assert np.var(draws["sex_cl"]) == pytest.approx(0.01, rel=0.1)
    assert np.any(draws["sex_cl"] < -0.3) and np.all(draws["tvcl"] > 0)
    with pytest.raises(SpecError, match="no CV%"):
        Population.build(model, cv_percent={"sex_cl": 10.0}, additive=("sex_cl",))


FIT = {
    "model": "one_compartment",
    "parameters": {"cl": 0.2, "v": 2.0},
    "variability": {"omega": {"cl": 0.1, "v": 0.3}, "kind": {"v": "additive"}},
    "bounds": {"cl": [0.01, 10.0]},
    "residual": {"conc_mg_per_l": {"proportional": 0.1}},
}


def test_fit_config_bounds_and_kinds_reach_the_spec():
    from vtrial.io.config import validate
    from vtrial.io.fit_config import BuiltFit, FitConfig

    spec = BuiltFit(validate(FitConfig, copy.deepcopy(FIT))).estimation_spec()
    assert spec.bounds == {"cl": (0.01, 10.0)} and spec.additive == ("v",)
    for change, key in [
        (lambda t: t["bounds"].update(v=[0.0, 10.0]), "bounds.v"),  # v's lower bound in the model is 1e-12
        (lambda t: t["bounds"].update(ka=[0.1, 10.0]), "bounds.ka"),  # not estimated
        (lambda t: t["variability"]["kind"].update(cl="proportional"), "variability.kind.cl"),
        (lambda t: t["variability"]["kind"].update(ka="additive"), "variability.kind.ka"),
    ]:
        table = copy.deepcopy(FIT)
        change(table)
        with pytest.raises(SpecError) as info:
            BuiltFit(validate(FitConfig, table))
        assert key in str(info.value), str(info.value)


def test_trial_config_kind_reaches_the_population(model):
    from vtrial.io.trial_config import PopulationSpec, build_population
    from vtrial.io.config import validate

    cfg = validate(PopulationSpec, {"variability": {"omega2": {"cl": 0.02, "v": 0.5}, "kind": {"v": "additive"}}})
    pop = build_population(vt.models.one_compartment(), cfg)
    assert pop.additive == ("v",) and pop.omega[1, 1] == pytest.approx(0.5)
