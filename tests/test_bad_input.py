"""Bad input never crashes: one regression test per defect the fuzz campaign of issue 13 found.

The promise: a clear error naming the field, row or column, exit status 2, no traceback,
no output or partial folder; failed animals (wells) flagged, never a crash.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import vtrial as vt
from vtrial.cli import app
from vtrial.io.covariate_search import toml_text

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
CIA = CONFIGS / "cia_rat_liu2011.toml"
runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def bad(result, *names: str):
    """Exit 2, every name in the message, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for name in names:
        assert name in result.output, (name, result.output)


def config(path: Path, **edits) -> dict:
    """The TOML at `path` with dotted-key edits (`None` deletes)."""
    data = tomllib.loads(path.read_text())
    for dotted, value in edits.items():
        node, keys = data, dotted.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = int(keys[-1]) if isinstance(node, list) else keys[-1]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return data


def write_toml(tmp_path: Path, data: dict, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(toml_text(data))
    return path


# -- 1, 2, 5, 8: animals files ------------------------------------------------------------

def test_text_animal_ids_work_and_are_carried_to_every_output(tmp_path):
    ids = ["vehicle-0", "R101", "R102"]
    arms = ["vehicle", "100 mg/kg/day x 33 h", "100 mg/kg/day x 188 h", "10 mg/kg/day x 188 h"]
    table = pd.DataFrame({"arm": np.repeat(arms, 3), "animal": ids * 4, "bw": 0.2})
    path = tmp_path / "animals.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "out"
    result = cli("run", CIA, "--animals", path, "--out", out, "--seed", 7)
    assert result.exit_code == 0, result.output
    for name in ("animals.parquet", "trajectories.parquet", "observations.parquet"):
        got = pd.read_parquet(out / name)
        assert set(got["animal"]) == set(ids), name
    assert (pd.read_parquet(out / "animals.parquet")["status"] == "ok").all()


@pytest.mark.parametrize("rows,names", [
    ("arm,animal,bw\n", ["no animals"]),
    ("arm,animal,bw\nvehicle,1,0.2\nvehicle,2,0\n", ["animals.bw", "row 2"]),
    ("arm,animal,bw\nvehicle,1,0.2\nvehicle,2,-0.1\n", ["animals.bw", "row 2"]),
    ("arm,animal,bw\nvehicle,1,0.2\nvehicle,1,0.2\n", ["animals.animal", "row 2", "twice"]),
    ("arm,animal,ka1\nvehicle,1,fast\n", ["animals.ka1", "row 1"]),
    ("arm,animal,time_h,bw,ka1\nvehicle,1,0,0.2,1\nvehicle,1,5,0.3,2\n", ["animals.ka1", "row 2", "changes parameter"]),
    ("arm,animal,time_h,bw\nvehicle,1,0,0.2\nvehicle,1,0,0.3\n", ["animals.time_h", "row 2", "two rows at 0 h"]),
], ids=["header-only", "bw-zero", "bw-negative", "duplicate-id", "text-parameter", "long-form-parameter-changes",
        "long-form-same-time"])
def test_bad_animals_file_is_named(tmp_path, rows, names):
    path = tmp_path / "animals.csv"
    path.write_text(rows)
    out = tmp_path / "out"
    bad(cli("run", CIA, "--animals", path, "--out", out), *names)
    assert list(tmp_path.iterdir()) == [path]  # no output, no partial folder


def test_boolean_parquet_column_is_not_a_number(tmp_path):
    path = tmp_path / "animals.parquet"
    pd.DataFrame({"arm": ["vehicle"], "animal": [1], "ka1": [True]}).to_parquet(path)
    bad(cli("check", CIA, "--animals", path), "animals.ka1")


# -- 3: assays: solver failures, calibration in bounded time ---------------------------------

def test_absurd_assay_constant_is_refused_by_name(tmp_path):
    bad(cli("check", write_toml(tmp_path, config(CONFIGS / "el4_displacement.toml", **{"antagonist.ki_nm": 1e308}))),
        "antagonist.ki_nm", "less than or equal")


def test_failed_wells_are_left_out_of_the_fit_and_said_so():
    from vtrial.assays.common import fit_logistic4_scaled

    conc = np.repeat(np.logspace(-3, 2, 8), 2)
    resp = 100.0 / (1.0 + conc / 0.3)
    resp[[1, 5]] = np.nan  # two wells whose solve failed
    fit = fit_logistic4_scaled(conc, resp)
    np.testing.assert_allclose(fit.estimates["ic50"], 0.3, rtol=1e-4)
    assert any("2 wells failed" in w for w in fit.warnings)
    resp[:-4] = np.nan
    with pytest.raises(vt.SpecError, match="too few concentrations"):
        fit_logistic4_scaled(conc, resp)


def test_calibration_that_cannot_reach_its_target_says_so_in_bounded_time(tmp_path):
    import time

    from vtrial.jobs.calibrate import calibrate_config

    path = write_toml(tmp_path, config(CONFIGS / "mrc5_il6.toml", **{"calibration.target_ic50_nm": 45000.0}))
    start = time.perf_counter()
    with pytest.raises(vt.SpecError, match=r"calibration\.ki_nm.*\[.*\].*target IC50 4\.5e\+04 nM"):
        calibrate_config(path)
    assert time.perf_counter() - start < 120
    bad(cli("calibrate", write_toml(tmp_path, config(CONFIGS / "mrc5_il6.toml", **{"calibration.target_ic50_nm": 1e308}), "huge.toml")),
        "calibration.target_ic50_nm")


# -- 4: numbers that set the size of a computation ------------------------------------------

@pytest.mark.parametrize("edits,names", [
    ({"variability.cv_percent.cl_ref": 1e308}, ["variability.cv_percent.cl_ref", "10000"]),
    ({"output.end_h": 1e308, "output.every_h": 1.0}, ["output", "limit"]),
    ({"sampling.paw_volume_ml.every_h": 1e-308}, ["sampling.paw_volume_ml", "limit"]),
    ({"sampling.paw_volume_ml.start_h": 1e308}, ["sampling.paw_volume_ml"]),
    ({"arms.1.doses.0.count": 10**9, "arms.1.doses.0.every_h": 1.0}, ["arms.1.doses.0.count", "10000"]),
    ({"animals_per_arm": 10**12}, ["animals_per_arm"]),
    ({"seed": 2**70}, ["seed"]),
], ids=["cv", "output-times", "sampling-step", "sampling-start", "dose-count", "animals", "seed"])
def test_size_determining_numbers_are_bounded(tmp_path, edits, names):
    bad(cli("check", write_toml(tmp_path, config(CIA, **edits))), *names)


def test_seed_beyond_64_bits_on_the_command_line(tmp_path):
    bad(cli("run", CIA, "--seed", 2**70, "--out", tmp_path / "out"), "--seed")
    assert not list(tmp_path.iterdir())


# -- 6: curve fits without information ------------------------------------------------------

@pytest.mark.parametrize("response,names", [
    (lambda c: np.full(c.size, 42.0), ["flat line"]),
    (lambda c: 1e300 / (1.0 + c), ["1e+150", "larger unit"]),
], ids=["flat", "huge"])
def test_fit_curve_without_information_says_so(tmp_path, response, names):
    conc = np.repeat(np.logspace(-3, 2, 6), 2)
    path = tmp_path / "plate.csv"
    pd.DataFrame({"concentration_nM": conc, "response": response(conc)}).to_csv(path, index=False)
    bad(cli("fit-curve", path, "--out", tmp_path / "fit"), *names)
    assert not (tmp_path / "fit").exists()


# -- 7: messages name the key the user wrote ---------------------------------------------------

def test_missing_kind_is_named(tmp_path):
    bad(cli("check", write_toml(tmp_path, config(CONFIGS / "el4_displacement.toml", kind=None))), "kind", "missing")


def test_wrong_kind_lists_the_kinds(tmp_path):
    bad(cli("check", write_toml(tmp_path, config(CONFIGS / "el4_displacement.toml", kind="displacement"))),
        "kind", "binding_displacement")


def test_pbmc_readout_time_is_reported_at_its_key(tmp_path):
    bad(cli("check", write_toml(tmp_path, config(CONFIGS / "pbmc_lps.toml", readout_times_h=[6.0, 99.0]))),
        "readout_times_h.1")


def test_unknown_endpoint_observable_names_it_and_the_choices(tmp_path):
    bad(cli("check", write_toml(tmp_path, config(CIA, **{"endpoints.response": "paw_swelling"}))),
        "endpoints.response", "'paw_swelling'", "paw_swelling_pct")


def test_model_parameter_errors_name_the_config_key():
    from vtrial.assays.common import config_keys
    from vtrial.assays.pbmc import CONFIG_KEYS

    with pytest.raises(vt.SpecError, match=r"^parameters\.il1b_kd_nm"):
        with config_keys(CONFIG_KEYS):
            raise vt.SpecError("population.typical.kd_l", "must be > 1e-12")


# -- 8: no silent coercion ----------------------------------------------------------------------

@pytest.mark.parametrize("edits,names", [
    ({"arms.1.doses.0.duration_h": True}, ["arms.1.doses.0.duration_h", "True"]),
    ({"arms.1.doses.0.rate": "100"}, ["arms.1.doses.0.rate", "'100'"]),
    ({"animals_per_arm": 2.5}, ["animals_per_arm"]),
    ({"covariate_effects": [{"parameter": "cl_ref", "covariate": "bw", "reference": 0.2, "exponent": float("nan")}]},
     ["covariate_effects.0.exponent"]),
    ({"parameters": {"ka1": float("inf")}}, ["parameters.ka1"]),
], ids=["bool", "numeric-string", "fractional-count", "nan-exponent", "inf-parameter"])
def test_no_silent_coercion(tmp_path, edits, names):
    bad(cli("check", write_toml(tmp_path, config(CIA, **edits))), *names)
