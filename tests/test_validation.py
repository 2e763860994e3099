"""Bad input is a `SpecError` naming the field, raised before anything compiles; a solver
failure is a per-animal status, never an exception and never a dropped animal.

"Before anything compiles" is checked with `compile_log`, on a population size
(`N_BAD`) that no other call in the suite uses: if a check ran only after the animals
were drawn or solved, XLA would have had to compile for that size and the log would
show it. `test_the_compile_detector_works` (last in this file) proves the log would.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import solver_options

import vtrial as vt

MODEL = vt.models.one_compartment(absorption=True)
TIMES = [1.0, 4.0, 12.0]
N_BAD = 29
GOOD = vt.Regimen((vt.Bolus(1.0, route="oral"),))


def _no_bw_model():
    return vt.models.Model(
        name="no_bw",
        states=(vt.models.State("central", "mg"),),
        parameters=(vt.models.Parameter("k", 0.1, "1/h"),),
        vector_field=lambda t, y, p, rate: -p["k"] * y + rate,
        observables=(vt.models.Observable("amount_mg", lambda y, p: y[0]),),
        routes=(vt.models.Route("iv", "central"),),
    )


NO_BW = _no_bw_model()  # built here: building a model evaluates its right-hand side once


def run(regimen=GOOD, population=None, model=MODEL, times_h=TIMES, **kwargs):
    return vt.simulate(model, regimen, population, times_h=times_h, n_animals=N_BAD, seed=0, **kwargs)


CASES = {
    "unknown parameter in typical": (
        lambda: vt.Population.build(MODEL, typical={"kel": 0.1}),
        "population.typical.kel",
    ),
    "unknown parameter in cv_percent": (
        lambda: vt.Population.build(MODEL, cv_percent={"cl": 30.0, "kel": 20.0}),
        "population.iiv.kel",
    ),
    "unknown parameter in an animals table": (
        lambda: run(animals=pd.DataFrame({"arm": ["arm"], "animal": [0], "cl": [0.1], "kel": [0.2]})),
        "animals.kel",
    ),
    "negative dose amount": (
        lambda: run(vt.Regimen((vt.Bolus(1.0, route="oral"), vt.Bolus(-2.0, time_h=4.0, route="oral")))),
        "regimen.doses.1.amount",
    ),
    "infusion with zero duration": (
        lambda: run(vt.Regimen((vt.Infusion(duration_h=0.0, rate=1.0, unit="mg/h"),))),
        "regimen.doses.0.duration_h",
    ),
    "times not increasing": (
        lambda: run(times_h=[1.0, 4.0, 2.0]),
        "times_h",
    ),
    "covariance not positive definite": (
        lambda: vt.Population.build(
            MODEL,
            cv_percent={"cl": 30.0, "v": 30.0, "ka": 30.0},
            correlation={("cl", "v"): 0.9, ("cl", "ka"): 0.9, ("v", "ka"): -0.9},
        ),
        "population.omega",
    ),
    "unknown route": (
        lambda: run(vt.Regimen((vt.Bolus(1.0, route="intramuscular"),))),
        "regimen.doses.0.route",
    ),
    "mg/kg dose for a model without bw": (
        lambda: run(vt.Regimen((vt.Bolus(1.0, unit="mg/kg"),)), model=NO_BW),
        "regimen.doses.0.unit",
    ),
    "count > 1 without every_h": (
        lambda: run(vt.Regimen((vt.Bolus(1.0, route="oral", count=3),))),
        "regimen.doses.0.every_h",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_spec_error_naming_the_field_before_compiling(case, compile_log):
    make, field = CASES[case]
    with compile_log() as compiled:
        with pytest.raises(vt.SpecError) as info:
            make()
    assert info.value.field == field
    assert str(info.value).startswith(field + ": ")
    assert compiled == [], f"compiled before rejecting the input: {compiled}"


def test_non_positive_definite_omega_given_directly():
    with pytest.raises(vt.SpecError) as info:
        vt.Population(MODEL, iiv_names=("cl", "v"), omega=np.array([[0.1, 0.2], [0.2, 0.1]]))
    assert info.value.field == "population.omega"


# -- solver failure --------------------------------------------------------------------
# The ODE path (a closed-form linear PK solve cannot fail): 500 steps per segment are
# plenty for ka ~ 1/h and far too few for an explicit solver at ka = 1e5/h.
STIFF = solver_options("ode", max_steps=500)


def _failure_run(ka):
    animals = pd.DataFrame({"arm": "arm", "animal": [0, 1, 2], "ka": ka})
    return vt.simulate(MODEL, GOOD, animals=animals, times_h=TIMES, options=STIFF)


def test_solver_failure_marks_the_animal_and_keeps_it():
    res = _failure_run([1.0, 1e5, 0.5])
    assert list(res.animals["status"]) == ["ok", "max_steps_reached", "ok"]
    conc = res.solution.observables["conc_mg_per_l"]
    assert conc.shape == (3, len(TIMES))
    assert np.all(np.isnan(conc[1]))
    assert np.all(np.isfinite(conc[[0, 2]]))
    frame = res.to_frame()
    assert len(frame) == 3 * len(TIMES)
    assert frame.loc[frame["animal"] == 1, "conc_mg_per_l"].isna().all()
    assert res.solution.n_failed == 1
    # the healthy animals are exactly what they are in a batch with no failure
    healthy = _failure_run([1.0, 1.0, 0.5])
    assert list(healthy.animals["status"]) == ["ok"] * 3
    np.testing.assert_allclose(conc[[0, 2]], healthy.solution.observables["conc_mg_per_l"][[0, 2]], rtol=1e-12)


def test_every_animal_can_fail_without_an_exception():
    res = vt.simulate(MODEL, GOOD, animals=pd.DataFrame({"arm": "arm", "animal": [0, 1, 2], "ka": 1.0}),
                      times_h=TIMES, options=solver_options("ode", max_steps=5))
    assert list(res.animals["status"]) == ["max_steps_reached"] * 3
    assert np.all(np.isnan(res.solution.observables["conc_mg_per_l"]))


def test_the_compile_detector_works(compile_log):
    """The same call as the bad cases, with good input, does compile for N_BAD animals."""
    with compile_log() as compiled:
        res = run()
    assert len(res.animals) == N_BAD and (res.animals["status"] == "ok").all()
    assert compiled, "compile_log saw no compilation: the checks above would prove nothing"
    assert jnp.isfinite(jnp.asarray(res.solution.observables["conc_mg_per_l"])).all()
