"""Model card CIA-1: a simulation-estimation round trip (issue 14, item 4) and the solver
setting that makes the ODE path's forward-mode derivatives usable for estimation.

The round trip simulates the card's reference study (four arms of 10 rats, the card's
sampling) with `vtrial run --dataset`, reads it back with `configs/cia_fit.toml`, fits it
by FOCE-I and compares the estimates with the card's values (the truth of the simulation).
"""

from __future__ import annotations

import math
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vtrial
from vtrial.design.population import ResidualError
from vtrial.engine.events import DoseRecords
from vtrial.engine.solve import SolverOptions, solve_animal
from vtrial.estimation import EstimationSpec, population_objective
from vtrial.io.nonmem import read_nonmem
from vtrial.io.trial_config import SolverSpec
from vtrial.models import get_model

from conftest import REPO_ROOT

FIT_CONFIG = REPO_ROOT / "configs" / "cia_fit.toml"
TRIAL_CONFIG = REPO_ROOT / "configs" / "cia_rat_liu2011.toml"


def _vehicle_paw(paw0_factor, options):
    """Paw volume of an untreated 0.2 kg rat at the card's values, paw0 scaled."""
    model = get_model("cia_rat")
    p = {q.name: jnp.asarray(q.value) for q in model.parameters}
    p["bw"] = jnp.asarray(0.2)
    p["paw0"] = p["paw0"] * paw0_factor
    zero = jnp.zeros(1)
    doses = DoseRecords(zero, zero, zero, zero, jnp.zeros(1, jnp.int32))
    # The card's sampling, as a vehicle rat of the study has it: paw volume daily, plasma
    # anakinra at the treated arms' times after implantation (t = 504 h).
    conc_h = 504.0 + np.array([1, 3, 6, 12, 24, 33, 36, 48, 96, 144, 188, 192, 200, 212])
    times = jnp.asarray(np.sort(np.concatenate([np.arange(0.0, 841.0, 24.0), conc_h])))
    return solve_animal(model, p, doses, times, t0=0.0, options=options).states[:, model.state_index("paw")]


@pytest.mark.long  # derivative validation against central differences
def test_forward_mode_paw_derivative_matches_central_differences_with_a_bounded_step():
    """Before disease onset the paw volume sits exactly at its steady state: the error
    estimate is 0 and, unbounded, the steps leave Tsit5's stability region, so the tangent
    (a perturbation away from the steady state) is amplified by orders of magnitude. With
    `max_step_h` (as configs/cia_fit.toml sets it) the forward-mode derivative is the
    central difference's; without it, it is not (the reason for the setting)."""
    bounded = SolverOptions(rtol=1e-6, atol=1e-8, events="split", adjoint="forward", max_step_h=2.0)
    h = 1e-6
    tangent = jax.jvp(lambda c: _vehicle_paw(c, bounded), (1.0,), (1.0,))[1]
    central = (_vehicle_paw(1.0 + h, bounded) - _vehicle_paw(1.0 - h, bounded)) / (2 * h)
    np.testing.assert_allclose(tangent, central, rtol=1e-5)
    # Linear in the tangent (a derivative): scaling it scales the result.
    np.testing.assert_allclose(jax.jvp(lambda c: _vehicle_paw(c, bounded), (1.0,), (1e-3,))[1], 1e-3 * tangent, rtol=1e-8)
    unbounded = SolverOptions(rtol=1e-6, atol=1e-8, events="split", adjoint="forward")
    wild = jax.jvp(lambda c: _vehicle_paw(c, unbounded), (1.0,), (1.0,))[1]
    assert np.max(np.abs(wild - central)) > 1.0


def test_max_step_h_must_be_positive():
    with pytest.raises(Exception, match="max_step_h"):
        SolverOptions(max_step_h=0.0)
    with pytest.raises(Exception, match="max_step_h"):
        SolverSpec.model_validate({"max_step_h": -1.0})


# The card's values (the simulation's truth) of what configs/cia_fit.toml estimates.
CARD_CV_PCT = {"cl_ref": 25, "ka1": 30, "t_onset": 10, "s_dis": 30, "paw0": 10}
CARD_RESIDUAL = {
    "conc_mg_per_l": ResidualError(additive=0.01, proportional=0.15),
    "paw_volume_ml": ResidualError(additive=0.03, proportional=0.04),
}
#: Fixed effects the study informs well (see configs/cia_fit.toml) and the variances
#: the test holds to 35%. t_onset's variance is estimated but not held: the study was
#: simulated with the card's random effect on k_grow too (CV 20%), which the fit leaves
#: out (configs/cia_fit.toml says why), and the onset's random effect takes up part of
#: that variation in the disease's timing (seen: +55% for a CV of 10%).
WELL_INFORMED = ("cl_ref", "ka1", "t_onset", "k_grow", "s_dis", "paw0")
WELL_INFORMED_VARIANCES = ("cl_ref", "ka1", "s_dis", "paw0")


#: The round trip is a long validation (`-m long`, run by CI as its second step), in two
#: forms: the whole round trip, from the card's values (the config's) with the covariance
#: step (about 5 min on 2 cores), and one that starts near the optimum a long run found
#: (its estimates, rounded) without the covariance step (a few minutes): the criteria are
#: the same and the fit must still move.
NEAR_OPTIMUM = {
    "parameters": {"cl_ref": 0.1, "ka1": 0.35, "t_onset": 330.0, "k_grow": 0.055, "s_dis": 1.3, "paw0": 1.4},
    "variability": {"cv_percent": {"cl_ref": 24, "ka1": 34, "t_onset": 12, "s_dis": 25, "paw0": 11}},
    "residual": {"conc_mg_per_l": {"proportional": 0.14, "additive": 0.0095},
                 "paw_volume_ml": {"proportional": 0.046, "additive": 0.012}},
}


def _spec(table) -> EstimationSpec:
    """The starting point of a fit config's table, as an `EstimationSpec`."""
    return EstimationSpec(
        typical=dict(table["parameters"]),
        omega2={name: math.log(1 + (cv / 100) ** 2) for name, cv in table["variability"]["cv_percent"].items()},
        residual={name: ResidualError(**r) for name, r in table["residual"].items()},
    )


@pytest.mark.long
@pytest.mark.parametrize("start", ["near_optimum", "card"])
def test_cia_round_trip_recovers_the_card(tmp_path, start):
    """`vtrial run --dataset` of the card's study (4 arms x 10 rats), read back and fitted
    by FOCE-I: well-informed fixed effects within 15% of the card, their variances within
    35%, the OFV at the truth worse than at the estimate, and the fit moved (its OFV below
    the start's)."""
    study = tmp_path / "cia_study.csv"
    vtrial.run_config(TRIAL_CONFIG, out=tmp_path / "run", animals_per_arm=10, dataset_out=study)
    table = tomllib.loads(FIT_CONFIG.read_text())
    whole = start == "card"
    if not whole:
        table.update(NEAR_OPTIMUM)
        table["estimation"]["covariance"] = "none"
    fit = vtrial.fit(table, study)
    assert fit.converged, fit.warnings
    assert fit.covariance_step == ("ok" if whole else "not requested")
    assert fit.n_subjects == 40
    model = get_model("cia_rat")
    est = fit.estimates
    for name in WELL_INFORMED:
        truth = model.parameter(name).value
        assert abs(est[name] / truth - 1) < 0.15, (name, est[name], truth)
    for name in WELL_INFORMED_VARIANCES:
        truth = math.log(1 + (CARD_CV_PCT[name] / 100) ** 2)
        assert abs(est[f"omega2_{name}"] / truth - 1) < 0.35, (name, est[f"omega2_{name}"], truth)

    data = read_nonmem(study, model, table["data"])
    truth = EstimationSpec(
        typical={name: model.parameter(name).value for name in table["parameters"]},
        omega2={name: math.log(1 + (cv / 100) ** 2) for name, cv in CARD_CV_PCT.items()},
        residual=CARD_RESIDUAL,
    )
    solver = SolverSpec.model_validate(table["solver"]).build()
    at_truth = population_objective(model, data, truth, method="focei", solver=solver, gradient=False)
    assert at_truth.ofv > fit.ofv
    at_start = population_objective(model, data, _spec(table), method="focei", solver=solver, gradient=False)
    assert fit.iterations >= 1 and fit.ofv < at_start.ofv - 0.01, (at_start.ofv, fit.ofv)
