"""Dose optimisation (`vtrial.optimize`, the `optimize` job) against a closed-form optimum.

- **Closed form.** One-compartment i.v. infusion, clearance log-normal (CV 20%), target:
  steady-state concentration >= 1 mg/L in 90% of animals. An animal attains it when its
  rate R >= C* CL_i, so the least daily dose is the 90% quantile of clearance times
  C* 24 / bw: in the population exp(omega z_0.9) CL_typ C* 24 / bw, in the simulated
  animals the same order statistic of their own clearances. Both searches find it within
  2% of the population value; the gradient search finds the sample's order statistic
  itself, and the grid the next grid dose above it.
- The gradient search's slopes equal finite differences of the margins.
- Results do not depend on the chunk size (grid) or the batch of lanes (gradient).
- An unreachable target is reported as infeasible (best attainable PTA, exit status 4).
- CIA-1 (a handful of animals, a coarse grid): the grid and the gradient search agree
  within the grid's resolution.
- Bad input is refused, naming the field, before anything is solved.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

import vtrial as vt
from vtrial.cli import app
from vtrial.design.gradient_search import _lane_margins
from vtrial.design.dosing import lower_regimens
from vtrial.design.regimen_space import interval_hours
from vtrial.io.config import read_toml, validate
from vtrial.io.optimize_config import BuiltOptimization, OptimizeConfig
from vtrial.limits import MAX_ANIMALS

ROOT = Path(__file__).resolve().parents[1]
PK = vt.models.one_compartment()  # cl 0.1 L/h, v 1 L, bw 0.25 kg
CV, TARGET_MG_PER_L, PTA = 0.20, 1.0, 0.9
#: One batch shape (animal-regimens per chunk, and lanes of the gradient search) shared
#: by the closed-form tests, so they compile once.
CHUNK = 256
STEADY = vt.Requirement("css", vt.Endpoint("css", "conc_mg_per_l", "value", 200.0), at_least=TARGET_MG_PER_L, fraction=PTA)


def _pump_space(lo, hi, points, **kw):
    return vt.RegimenSpace((lo, hi), start_h=(0.0,), duration_h=(240.0,), pump_routes=("iv",), grid_points=points, **kw)


def _population():
    return vt.Population.build(PK, cv_percent={"cl": 100 * CV})


def _required_daily_dose(cl, t_h=200.0, v=1.0, bw=0.25):
    """mg/kg/day at which an animal's concentration at t_h reaches the target (exact, with
    the approach to steady state)."""
    return TARGET_MG_PER_L * cl / (1.0 - np.exp(-cl / v * t_h)) * 24.0 / bw


@pytest.fixture(scope="module")
def closed_form():
    space = _pump_space(11.0, 14.0, 31)  # neighbours 0.8% apart
    return space, vt.optimize(PK, space, STEADY, population=_population(), n_animals=5000, seed=5, chunk_size=CHUNK, every_h=50.0)


def test_both_methods_find_the_closed_form_optimum(closed_form):
    space, result = closed_form
    omega = math.sqrt(math.log1p(CV**2))
    population_optimum = TARGET_MG_PER_L * 0.1 * math.exp(omega * stats.norm.ppf(PTA)) * 24.0 / 0.25
    grid = result.chosen["daily_dose_mg_per_kg"]
    gradient = result.gradient["answer"]["daily_dose_mg_per_kg"]
    assert result.chosen["method"] == "grid" and result.feasible
    assert grid == pytest.approx(population_optimum, rel=0.02)
    assert gradient == pytest.approx(population_optimum, rel=0.02)
    # on the simulated animals: the order statistic itself, and the next grid dose above it
    needed = np.sort(_required_daily_dose(result.animals["cl"].to_numpy()))[math.ceil(PTA * len(result.animals)) - 1]
    assert gradient == pytest.approx(needed, rel=1e-4)
    doses = space.daily_doses()
    assert grid == doses[np.searchsorted(doses, needed)]
    assert result.agreement["agree"] and result.agreement["same_shape"]
    assert result.chosen["binding_constraints"] == ["css"]


def test_answer_is_verified_on_fresh_animals(closed_form):
    _, result = closed_form
    check = result.chosen["verification"]
    assert check["n_animals"] == 5000 and abs(check["pta"] - PTA) < 4 * math.sqrt(PTA * (1 - PTA) / 5000)
    assert check["pta_ci_low"] < check["pta"] < check["pta_ci_high"]
    table = result.attainment
    assert len(table) == 31 and table["pta"].is_monotonic_increasing  # same animals: no noise between doses
    assert table.loc[table["meets_all"], "daily_dose_mg_per_kg"].min() == result.chosen["daily_dose_mg_per_kg"]


@pytest.mark.long  # gradient validation against finite differences of whole trials
def test_gradient_slopes_equal_finite_differences():
    """d(margin)/d(log dose) of a trough and an AUC under twice-daily boluses, by reverse
    mode through the solve, against central differences."""
    shape = vt.RegimenShape("iv", 12.0, 0.0, 96.0)
    reqs = (vt.Requirement("trough", vt.Endpoint("t", "conc_mg_per_l", "min", 48.0, 96.0), at_least=0.5),
            vt.Requirement("auc", vt.Endpoint("a", "conc_mg_per_l", "auc", 0.0, 96.0), at_most=200.0))
    times = tuple(np.arange(0.0, 96.1, 4.0))
    fn = _lane_margins(PK, reqs, times, vt.SolverOptions())
    unit = lower_regimens(PK, [shape.regimen(1.0)])
    p = {k: jnp.asarray([v]) for k, v in {**PK.typical_values(), "cl": 0.13}.items()}
    args = (p, unit.map(jnp.asarray), jnp.ones((1, 2)))
    u, h = math.log(3.0), 1e-5
    _, slopes, status = fn(jnp.asarray([u]), *args)
    plus, minus = fn(jnp.asarray([u + h]), *args)[0], fn(jnp.asarray([u - h]), *args)[0]
    assert int(status[0]) == 0
    np.testing.assert_allclose(np.asarray(slopes[0]), np.asarray((plus - minus)[0]) / (2 * h), rtol=1e-6)
    assert np.all(np.abs(np.asarray(slopes)) > 0.05)  # far from zero: the check has teeth


def _small(chunk, lanes):
    return vt.optimize(PK, _pump_space(8.0, 16.0, 6), STEADY, population=_population(), n_animals=CHUNK, seed=2, every_h=50.0,
                       chunk_size=chunk, gradient=vt.GradientSettings(lanes_per_batch=lanes))


def test_results_do_not_depend_on_the_chunk_size():
    a, b = _small(7, 16), _small(CHUNK, CHUNK)
    cols = ["pta", "pta_ci_low", "pta_ci_high", "meets_all", "css_share"]
    pd.testing.assert_frame_equal(a.attainment[cols], b.attainment[cols], check_exact=True)
    np.testing.assert_allclose(a.attainment["css_median"], b.attainment["css_median"], rtol=1e-12)
    assert a.chosen["regimen"] == b.chosen["regimen"] and a.chosen["verification"]["pta"] == b.chosen["verification"]["pta"]
    np.testing.assert_allclose(a.gradient["answer"]["daily_dose_mg_per_kg"], b.gradient["answer"]["daily_dose_mg_per_kg"], rtol=1e-9)


INFEASIBLE = {
    "kind": "optimize", "name": "pk_unreachable", "model": "one_compartment", "seed": 4, "animals": CHUNK, "chunk_size": CHUNK,
    "variability": {"cv_percent": {"cl": 20}}, "output": {"end_h": 240, "every_h": 50},
    "target": {"name": "css", "observable": "conc_mg_per_l", "statistic": "value", "time_h": 200, "at_least": 1.0, "pta": 0.9},
    "space": {"daily_dose_mg_per_kg": [1, 11], "grid_points": 5, "start_day": [0], "duration_days": [10], "pump_routes": ["iv"]},
}


def test_an_unreachable_target_is_reported_as_infeasible(tmp_path):
    record = vt.run_config(INFEASIBLE, out=tmp_path / "run")
    assert record.facts["feasible"] is False and record.facts["regimen"] is None
    summary = json.loads((record.out_dir / "optimal_regimen.json").read_text())
    assert summary["feasible"] is False and summary["chosen"] is None and "no regimen" in summary["message"]
    best = summary["best_attainable"]
    assert best["daily_dose_mg_per_kg"] == pytest.approx(11.0) and best["failing"] == ["css"] and 0.5 < best["pta"] < 0.9
    assert summary["method_agreement"] == {**summary["method_agreement"], "agree": True, "grid_feasible": False, "gradient_feasible": False}
    assert {"attainment.csv", "attainment.png", "chosen_regimen.png", "optimal_regimen.json"} <= set(record.files)


def test_the_command_exits_with_status_4_when_infeasible(tmp_path):
    config = tmp_path / "unreachable.toml"
    lines = [f'{k} = {json.dumps(v)}' for k, v in INFEASIBLE.items() if not isinstance(v, dict)]
    for table in ("variability.cv_percent", "output", "target", "space"):
        value = INFEASIBLE
        for part in table.split("."):
            value = value[part]
        lines += [f"[{table}]"] + [f"{k} = {json.dumps(v)}" for k, v in value.items()]
    config.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["optimize", str(config), "--out", str(tmp_path / "out"), "--animals-per-arm", str(CHUNK // 2)])
    assert result.exit_code == 4, result.output
    assert "best attainable PTA" in result.output and (tmp_path / "out" / "optimal_regimen.json").is_file()
    summary = json.loads((tmp_path / "out" / "optimal_regimen.json").read_text())
    assert summary["animals"]["training"] == CHUNK // 2  # --animals-per-arm overrides the config's animals


def test_bad_input_names_the_field(tmp_path):
    space = vt.RegimenSpace((1.0, 10.0), start_h=(0.0,), duration_h=(30.0,), bolus_routes=("oral",), intervals_h=(12.0,))
    with pytest.raises(vt.SpecError, match=r"space\.shapes\.0.*route"):
        vt.optimize(PK, space, STEADY)
    uneven = vt.RegimenSpace((1.0, 10.0), start_h=(0.0,), duration_h=(30.0,), bolus_routes=("iv",), intervals_h=(12.0,))
    with pytest.raises(vt.SpecError, match="whole number of intervals"):
        vt.optimize(PK, uneven, STEADY)
    with pytest.raises(vt.SpecError, match="methods"):
        vt.optimize(PK, _pump_space(1, 10, 3), STEADY, methods=["bisection"])
    with pytest.raises(vt.SpecError, match=r"requirements\.bad\.observable"):
        vt.optimize(PK, _pump_space(1, 10, 3), vt.Requirement("bad", vt.Endpoint("b", "paw_ml", "max", 0.0, 10.0), at_most=1.0))
    with pytest.raises(vt.SpecError, match="at_least or at_most"):
        vt.Requirement("x", STEADY.endpoint)
    with pytest.raises(vt.SpecError, match="daily_dose"):
        _pump_space(10, 1, 3)
    with pytest.raises(vt.SpecError, match="intervals"):
        interval_hours("twice a day")
    assert [interval_hours(v) for v in ("q.d.", "bid", "q8h", 6)] == [24.0, 12.0, 8.0, 6.0]
    with pytest.raises(vt.SpecError, match="target"):
        vt.run_config({**INFEASIBLE, "target": {**INFEASIBLE["target"], "at_most": 3.0}}, out=tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_candidates_are_ordinary_regimens():
    shape = vt.RegimenShape("iv", 8.0, 24.0, 48.0, loading_dose_days=1.0)
    records = shape.regimen(6.0).records(PK)
    assert [r[0] for r in records] == [24.0, 24.0, 32.0, 40.0, 48.0, 56.0, 64.0]
    assert sum(r[1] for r in records) == pytest.approx(6.0 * shape.drug_days) and shape.drug_days == 3.0


def test_shipped_config_builds():
    data, _ = read_toml(ROOT / "configs" / "cia_dose_optimization.toml")
    assert data.pop("kind") == "optimize"
    built = BuiltOptimization(validate(OptimizeConfig, data))
    built.space.check(built.model)
    assert built.target.relative_to_untreated and built.target.fraction == 0.8
    assert [c.name for c in built.constraints] == ["trough", "cmax_ceiling"]
    assert len(built.space.shapes()) == 5


@pytest.mark.long
def test_cia_grid_and_gradient_agree_within_the_grid_resolution():
    """CIA-1, 24 animals, 8 doses per shape: the gradient's least total drug lies within one
    grid step of the grid's answer, on the same animals."""
    data, _ = read_toml(ROOT / "configs" / "cia_dose_optimization.toml")
    data.pop("kind")
    built = BuiltOptimization(validate(OptimizeConfig, data))
    space = vt.RegimenSpace((3.0, 300.0), start_h=(504.0,), duration_h=(168.0,), pump_routes=("sc",), bolus_routes=("sc",),
                            intervals_h=(24.0,), grid_points=8)
    target = vt.Requirement("reduction", built.target.endpoint, at_least=50.0, fraction=0.75, relative_to_untreated=True)
    result = vt.optimize(built.model, space, target, population=built.population, n_animals=24, verify_animals=8, seed=1,
                         every_h=12.0, options=built.options, chunk_size=64)
    assert result.feasible and result.gradient["answer"] is not None
    agreement = result.agreement
    assert agreement["agree"], agreement
    assert 1 / space.grid_step_ratio <= agreement["total_drug_ratio_gradient_to_grid"] <= 1.0 + 1e-9
    assert result.chosen["binding_constraints"] == ["reduction"]


def test_typical_value_uncertainty_spreads_the_pta():
    """PTA of the answer across draws of the typical clearance: a vanishing uncertainty
    gives back the answer's own PTA on every draw; a real one spreads it."""
    space = _pump_space(8.0, 16.0, 6)

    def run(cv_percent):
        uncertainty = vt.Uncertainty(vt.Population.build(PK, cv_percent={"cl": cv_percent}), draws=4)
        return vt.optimize(PK, space, STEADY, population=_population(), n_animals=CHUNK, seed=2, every_h=50.0,
                           chunk_size=CHUNK, methods=["grid"], uncertainty=uncertainty)

    still, spread = run(1e-9), run(30.0)
    assert still.uncertainty["pta_per_draw"] == [still.chosen["pta"]] * 4
    assert still.uncertainty["parameters"] == ["cl"] and still.uncertainty["draws"] == 4
    assert len(set(spread.uncertainty["pta_per_draw"])) > 1
    assert spread.uncertainty["pta_p05"] <= spread.uncertainty["pta_median"] <= spread.uncertainty["pta_p95"]


def test_uncertainty_from_a_config_builds():
    data = {k: v for k, v in INFEASIBLE.items() if k != "kind"}
    built = BuiltOptimization(validate(OptimizeConfig, {**data, "uncertainty": {"cv_percent": {"cl": 15}, "draws": 10}}))
    assert built.uncertainty.draws == 10 and built.uncertainty.population.iiv_names == ("cl",)
    assert built.uncertainty.population.typical_parameters()["cl"] == pytest.approx(0.1)
    with pytest.raises(vt.SpecError, match=r"uncertainty\.cv_percent\.ka"):
        BuiltOptimization(validate(OptimizeConfig, {**data, "uncertainty": {"cv_percent": {"ka": 15}}}))


def test_check_and_command_line_overrides():
    """`vtrial check` reports the search without solving; `--animals-per-arm` sets the
    training and fresh animals, `--typical` one typical animal, `--animals` is refused."""
    facts = vt.check_config(INFEASIBLE)
    assert facts["methods"] and facts["animals"] == INFEASIBLE.get("animals", 1000)
    assert vt.check_config(INFEASIBLE, animals_per_arm=7)["animals"] == 7
    assert vt.check_config(INFEASIBLE, typical=True)["animals"] == 1
    with pytest.raises(vt.SpecError, match="--animals"):
        vt.check_config(INFEASIBLE, animals=pd.DataFrame({"animal": [1], "arm": ["a"]}))
    with pytest.raises(vt.SpecError, match="animals"):
        vt.check_config({**INFEASIBLE, "animals": MAX_ANIMALS})  # (5 candidates + vehicle) x the most animals


def test_shipped_msu_config_checks():
    facts = vt.check_config(ROOT / "configs" / "msu_dose_response.toml")
    assert facts["model"] == "msu_peritonitis_mouse" and facts["candidates"] == 60
    assert facts["requirements"] == ["neutrophil_inhibition_6h"]
