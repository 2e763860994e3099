"""CIA-1 (model card cia_rat.md): the engine against the independent scipy oracle, the
card's stated behaviour, and the `vtrial run` command on the shipped configs."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import vtrial as vt
from vtrial.cli import app
from vtrial.io.trial_config import BuiltTrial
from tests.cia_reference import CIA_TYPICAL, simulate_cia_scipy

from conftest import assert_run_refuses_edit, trial_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "cia_rat_liu2011.toml"
PUMP_H = 504.0
ARMS = {  # arm name -> (rate mg/kg/day, duration h)
    "vehicle": (0.0, 0.0),
    "100 mg/kg/day x 33 h": (100.0, 33.0),
    "100 mg/kg/day x 188 h": (100.0, 188.0),
    "10 mg/kg/day x 188 h": (10.0, 188.0),
}


@pytest.fixture(scope="module")
def typical():
    built = BuiltTrial(trial_config(CONFIG), animals_per_arm=1)
    res = vt.simulate(built.model, built.arms, built.population, times_h=built.times_h, typical=True, options=built.options)
    return built, res


def _arm(res, name):
    row = int(np.flatnonzero(res.animals["arm"].to_numpy() == name)[0])
    return {k: v[row] for k, v in res.solution.observables.items()}


def test_card_parameters_are_exact():
    model = vt.models.get_model("cia_rat")
    for name, value in CIA_TYPICAL.items():
        assert model.parameter(name).value == value, name
    sources = {p.name: p.source for p in model.parameters}
    assert sources["imax"].startswith("P") and sources["kout"].startswith("P") and sources["t_onset"].startswith("P")
    doc = importlib.import_module("vtrial.models.cia_rat").__doc__.lower()
    assert "reconstruction" in doc and "assumption" in doc


@pytest.mark.parametrize("arm", list(ARMS))
def test_typical_animal_matches_scipy_oracle(typical, arm):
    built, res = typical
    rate, duration = ARMS[arm]
    ref = simulate_cia_scipy(CIA_TYPICAL, 0.2, PUMP_H if rate else None, duration, rate, built.times_h)
    got = _arm(res, arm)
    np.testing.assert_allclose(got["paw_volume_ml"], ref["paw_volume_ml"], rtol=1e-5)
    # Concentrations decay to ~1e-5 mg/L after the pump; judge the tail against Cmax.
    np.testing.assert_allclose(got["conc_mg_per_l"], ref["conc_mg_per_l"], rtol=1e-5, atol=1e-7 * max(1.0, ref["conc_mg_per_l"].max()))


def test_vehicle_onset_peak_and_settling(typical):
    built, res = typical
    t_day = built.times_h / 24.0
    ratio = _arm(res, "vehicle")["paw_volume_ml"] / CIA_TYPICAL["paw0"]
    assert np.all(np.abs(ratio[t_day <= 14] - 1.0) < 0.03)
    peak = np.argmax(ratio)
    assert abs(ratio[peak] - 1.77) < 0.03
    assert 18.5 <= t_day[peak] <= 21.0
    assert np.all(np.abs(ratio[t_day >= 26] - 1.50) < 0.03)


def test_steady_state_concentration_at_100_mg_per_kg_per_day(typical):
    built, res = typical
    conc = _arm(res, "100 mg/kg/day x 188 h")["conc_mg_per_l"]
    at_end = conc[np.searchsorted(built.times_h, PUMP_H + 188.0)]
    expected = 0.75 * (100.0 / 24.0 * 0.2) / 0.095  # f_sc R / cl
    assert abs(at_end - expected) / expected < 0.01
    assert abs(at_end - 6.6) < 0.1


def test_33h_arm_rejoins_vehicle_within_three_days(typical):
    built, res = typical
    after = built.times_h >= PUMP_H + 33.0 + 72.0
    diff = (_arm(res, "100 mg/kg/day x 33 h")["paw_volume_ml"] - _arm(res, "vehicle")["paw_volume_ml"]) / CIA_TYPICAL["paw0"]
    assert np.max(np.abs(diff[after])) < 0.01
    assert np.max(np.abs(diff)) > 0.1  # the drug did act while the pump ran


def test_settled_phase_pump_removes_swelling():
    """100 mg/kg/day held 12 days from day 26 removes >= 70% of the swelling (10 mg/kg/day about half)."""
    model = vt.models.get_model("cia_rat")
    pump = lambda rate: vt.Regimen((vt.Infusion(duration_h=288.0, start_h=624.0, rate=rate, unit="mg/kg/day", route="sc"),))
    arms = [vt.Arm("vehicle", vt.Regimen()), vt.Arm("100", pump(100.0)), vt.Arm("10", pump(10.0))]
    times = np.array([0.0, 624.0, 864.0, 912.0])
    res = vt.simulate(model, arms, times_h=times, typical=True)
    paw = {a: _arm(res, a)["paw_volume_ml"][-1] for a in ("vehicle", "100", "10")}
    removed = {a: (paw["vehicle"] - paw[a]) / (paw["vehicle"] - CIA_TYPICAL["paw0"]) for a in ("100", "10")}
    assert removed["100"] >= 0.70
    assert 0.40 <= removed["10"] <= 0.60


# --- the command line -----------------------------------------------------------------

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def cia_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cia") / "run"
    result = invoke("run", CONFIG, "--out", out, "--animals-per-arm", 3, "--seed", 7)
    assert result.exit_code == 0, result.output
    return out


def test_cli_writes_every_output(cia_run):
    names = {p.name for p in cia_run.iterdir()}
    assert names == {"trajectories.parquet", "observations.parquet", "animals.parquet", "summary.csv", "endpoints.csv", "report.png", "run.json"}
    traj = pd.read_parquet(cia_run / "trajectories.parquet")
    assert list(traj.columns[:3]) == ["arm", "animal", "time_h"]
    assert {"conc_mg_per_l", "paw_volume_ml", "paw_swelling_pct"} <= set(traj.columns)
    assert len(traj) == 4 * 3 * traj["time_h"].nunique()
    obs = pd.read_parquet(cia_run / "observations.parquet")
    conc_times = np.sort(obs.loc[obs["conc_mg_per_l"].notna(), "time_h"].unique())
    np.testing.assert_allclose(conc_times, PUMP_H + np.array([1, 3, 6, 12, 24, 33, 36, 48, 96, 144, 188, 192, 200, 212.0]))
    paw_times = np.sort(obs.loc[obs["paw_volume_ml"].notna(), "time_h"].unique())
    np.testing.assert_allclose(paw_times, np.arange(0, 841, 24.0))
    animals = pd.read_parquet(cia_run / "animals.parquet")
    assert len(animals) == 12 and (animals["status"] == "ok").all()
    assert {"cl_ref", "bw", "ic50", "n_steps"} <= set(animals.columns)
    summary = pd.read_csv(cia_run / "summary.csv")
    assert {"arm", "time_h", "observable", "mean", "median", "p05", "p95"} <= set(summary.columns)
    endpoints = pd.read_csv(cia_run / "endpoints.csv")
    assert {"cmax", "auc", "inhibition_pct"} <= set(endpoints["endpoint"])
    info = json.loads((cia_run / "run.json").read_text())
    assert info["seed"] == 7 and info["n_animals"] == 12 and len(info["config_sha256"]) == 64
    for key in ("vtrial_version", "device", "compile_seconds", "run_seconds"):
        assert key in info


def test_cli_seed_reproducible_and_animals_file(cia_run, tmp_path):
    animals = pd.read_parquet(cia_run / "animals.parquet")
    table = animals[["arm", "animal", "cl_ref", "v1_ref", "ic50", "bw"]]
    path = tmp_path / "animals.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "again"
    result = invoke("run", CONFIG, "--out", out, "--animals", path, "--no-figures")
    assert result.exit_code == 0, result.output
    again = pd.read_parquet(out / "animals.parquet")
    np.testing.assert_allclose(again["cl_ref"], animals["cl_ref"])
    np.testing.assert_allclose(again["bw"], animals["bw"])
    # --no-figures: every output but report.png.
    assert {p.name for p in out.iterdir()} == {p.name for p in cia_run.iterdir()} - {"report.png"}


def test_cli_typical(tmp_path):
    out = tmp_path / "typ"
    result = invoke("run", CONFIG, "--out", out, "--typical", "--no-figures")
    assert result.exit_code == 0, result.output
    traj = pd.read_parquet(out / "trajectories.parquet")
    ref = simulate_cia_scipy(CIA_TYPICAL, 0.2, PUMP_H, 188.0, 100.0, np.sort(traj["time_h"].unique()))
    arm = traj[traj["arm"] == "100 mg/kg/day x 188 h"].sort_values("time_h")
    np.testing.assert_allclose(arm["paw_volume_ml"], ref["paw_volume_ml"], rtol=1e-5)
    obs = pd.read_parquet(out / "observations.parquet")
    merged = obs.merge(traj, on=["arm", "animal", "time_h"], suffixes=("", "_pred"))
    sampled = merged["paw_volume_ml"].notna()
    np.testing.assert_array_equal(merged.loc[sampled, "paw_volume_ml"], merged.loc[sampled, "paw_volume_ml_pred"])


BAD = {
    "unknown key": ("[parameters]", "[parameterz]", "parameterz"),
    "negative dose": ("rate = 100,", "rate = -100,", "arms.1.doses.0"),
    "arm without regimen": ('name = "vehicle"\ndoses = []', 'name = "vehicle"', "arms.0.doses"),
    "unknown parameter": ("[parameters]", "[parameters]\nic51 = 1.0", "parameters.ic51"),
    "unknown variability": ("cl_ref = 25", "cl_rev = 25", "variability.cv_percent.cl_rev"),
    "bad unit": ('unit = "mg/kg/day" }]\n\n[[arms]]\nname = "100 mg/kg/day x 188 h"', 'unit = "mg/kgday" }]\n\n[[arms]]\nname = "100 mg/kg/day x 188 h"', "arms.1.doses"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_exits_2_naming_the_field(tmp_path, case):
    assert_run_refuses_edit(tmp_path, CONFIG, *BAD[case])


def test_unknown_parameter_in_animals_file(tmp_path):
    path = tmp_path / "animals.csv"
    pd.DataFrame({"arm": ["vehicle"], "animal": [0], "cl_rf": [0.1]}).to_csv(path, index=False)
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(CONFIG), "--out", str(out), "--animals", str(path)])
    assert result.exit_code == 2
    assert "cl_rf" in result.output
    assert not out.exists()


GOLDEN = Path(__file__).resolve().parent / "golden"


def _runs_without_a_dataset(path) -> bool:
    """Fit configs need their dataset (`vtrial fit CONFIG DATA.csv`); tests/test_fit_command.py runs them."""
    return 'kind = "fit"' not in path.read_text()


#: Configs whose full run is a long validation: dose search and dose-response sweeps (many
#: animal-regimens; their jobs' small runs are in tests/test_optimize.py and
#: test_msu_peritonitis.py), and the configs of models whose own test file runs `vtrial run`
#: by default (test_alphavirus, test_renal_nmp, test_caf_tslp, test_ami, test_msu_peritonitis,
#: test_assays): their golden numbers are compared in CI's long step. The flagship and the
#: README's quick-start study stay in the default run.
LONG_CONFIGS = ("cia_dose_optimization", "msu_dose_response", "alphavirus_bone_mouse", "renal_nmp_pig",
                "pancreatic_caf_tslp_mouse", "pancreatic_caf_tslp", "ami_mouse", "msu_peritonitis_mouse",
                "el4_displacement", "pbmc_lps", "cia_power")


@pytest.mark.parametrize("config", [pytest.param(p, marks=pytest.mark.long) if p.stem in LONG_CONFIGS else p
                                    for p in sorted((ROOT / "configs").glob("*.toml")) if _runs_without_a_dataset(p)],
                         ids=lambda p: p.stem)
def test_every_shipped_config_runs(config, tmp_path):
    """Every shipped config runs; where `tests/golden/<config>/` holds the numbers an earlier
    version wrote for the same command (2 animals per arm, the config's seed), they are
    unchanged: predictions, parameters, summaries, endpoints, fits. (Observation noise is
    not compared: its keying changed once, to per-animal-and-observable keys.)"""
    out = tmp_path / "out"
    result = invoke("run", config, "--out", out, "--animals-per-arm", 2)
    assert result.exit_code == 0, result.output
    assert (out / "run.json").is_file()
    golden = GOLDEN / config.stem
    for expected_path in sorted(golden.glob("*.csv")) if golden.is_dir() else []:
        expected = pd.read_csv(expected_path)
        got_path = out / expected_path.name
        got = pd.read_parquet(got_path.with_suffix(".parquet")) if not got_path.exists() else pd.read_csv(got_path)
        keys = [c for c in expected.columns if c in ("arm", "animal", "time_h", "observable", "endpoint", "parameter",
                                                      "condition", "cytokine", "donor", "concentration_nM", "well")]
        merged = expected.merge(got, on=keys, how="left", suffixes=("", "_now"), validate="one_to_one")
        for col in expected.columns:
            if col in keys or col not in got.columns or not pd.api.types.is_numeric_dtype(expected[col]):
                continue
            np.testing.assert_allclose(merged[f"{col}_now"], merged[col], rtol=1e-9, atol=1e-12, err_msg=f"{config.stem}/{expected_path.name}:{col}")
