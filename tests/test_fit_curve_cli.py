"""`vtrial fit-curve DATA`: 4PL fit of a user's concentration-response file, and its errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import vtrial  # noqa: F401  (float64)
from vtrial.cli import app
from vtrial.estimation.curvefit import logistic4

runner = CliRunner()
TRUTH = {"bottom": 120.0, "top": 2400.0, "ic50": 0.45, "hill": 1.3}  # ic50 in nM
CONC = np.repeat(np.concatenate([[0.0], np.logspace(-3, 2.5, 11)]), 3)


def _curve(conc):
    return np.asarray(logistic4(conc, TRUTH["bottom"], TRUTH["top"], np.log10(TRUTH["ic50"]), TRUTH["hill"]))


def _write(path, conc, response, conc_column="concentration_nM"):
    pd.DataFrame({conc_column: conc, "response": response, "replicate": np.tile([1, 2, 3], conc.size // 3)}).to_csv(path, index=False)
    return path


def _run(*args):
    return runner.invoke(app, ["fit-curve", *map(str, args)])


def test_recovers_known_4pl_parameters(tmp_path):
    data = _write(tmp_path / "clean.csv", CONC, _curve(CONC))
    out = tmp_path / "fit"
    result = _run(data, "--out", out)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "curve_fit.csv").set_index("parameter")
    assert list(pd.read_csv(out / "curve_fit.csv").columns[:6]) == ["parameter", "estimate", "se", "ci_low", "ci_high", "unit"]
    for name, value in TRUTH.items():
        np.testing.assert_allclose(table.loc[name, "estimate"], value, rtol=1e-4, err_msg=name)
    assert table.loc["ic50", "unit"] == "nM"
    assert (out / "curve_fit.png").stat().st_size > 1000
    assert "ic50" in result.output  # the rich table


def test_noisy_data_interval_covers_truth_and_gives_ki(tmp_path):
    rng = np.random.default_rng(3)
    response = _curve(CONC) * np.exp(rng.normal(0, 0.03, CONC.size))
    data = _write(tmp_path / "noisy.csv", CONC * 1e3, response, "concentration_pM")  # pM in the file
    out = tmp_path / "fit"
    result = _run(data, "--out", out, "--ligand-nm", 0.1, "--kd-nm", 0.26)
    assert result.exit_code == 0, result.output
    t = pd.read_csv(out / "curve_fit.csv").set_index("parameter")
    for name, value in TRUTH.items():
        scale = 1e3 if name == "ic50" else 1.0
        assert t.loc[name, "ci_low"] <= value * scale <= t.loc[name, "ci_high"], name
    assert t.loc["ic50", "unit"] == "pM"
    ki = t.loc["ki_cheng_prusoff"]
    assert ki["unit"] == "nM"
    np.testing.assert_allclose(ki["estimate"], t.loc["ic50", "estimate"] * 1e-3 / (1 + 0.1 / 0.26), rtol=1e-12)


def test_mass_units_need_molecular_weight_for_ki(tmp_path):
    data = _write(tmp_path / "mass.csv", CONC * 17.3, _curve(CONC), "concentration_ng_per_ml")
    result = _run(data, "--out", tmp_path / "a", "--ligand-nm", 0.1, "--kd-nm", 0.26)
    assert result.exit_code == 2 and "--mw-kda" in result.output
    result = _run(data, "--out", tmp_path / "b", "--ligand-nm", 0.1, "--kd-nm", 0.26, "--mw-kda", 17.3)
    assert result.exit_code == 0, result.output
    t = pd.read_csv(tmp_path / "b" / "curve_fit.csv").set_index("parameter")
    np.testing.assert_allclose(t.loc["ki_cheng_prusoff", "estimate"], TRUTH["ic50"] / (1 + 0.1 / 0.26), rtol=1e-4)


@pytest.mark.parametrize("text, expected", [
    ("dose,response\n1,2\n2,3\n3,4\n4,5\n5,6\n", "concentration"),                       # missing concentration column
    ("concentration_nM,signal\n1,2\n2,3\n3,4\n4,5\n5,6\n", "response"),                  # missing response column
    ("concentration_nM,response\n1,2\n-2,3\n3,4\n4,5\n5,6\n", "row 2"),                  # negative concentration
    ("concentration_nM,response\n1,2\n2,3\nten,4\n4,5\n5,6\n", "row 3"),                 # non-numeric concentration
    ("concentration_nM,response\n1,2\n2,3\n3,oops\n4,5\n5,6\n", "row 3"),                # non-numeric response
    ("concentration_nM,response\n1,2\n2,3\n3,4\n", "4"),                                 # fewer points than parameters
    ("concentration_parsecs,response\n1,2\n2,3\n3,4\n4,5\n5,6\n", "unit"),               # unknown unit
])
def test_malformed_file_exits_2_naming_row_or_column(tmp_path, text, expected):
    data = tmp_path / "bad.csv"
    data.write_text(text)
    out = tmp_path / "fit"
    result = _run(data, "--out", out)
    assert result.exit_code == 2, result.output
    assert "error" in result.output and expected in result.output
    assert not out.exists()


def test_negative_concentration_message_names_column_and_row(tmp_path):
    data = tmp_path / "neg.csv"
    data.write_text("concentration_nM,response\n1,2\n2,3\n-3,4\n4,5\n5,6\n")
    result = _run(data, "--out", tmp_path / "fit")
    assert result.exit_code == 2
    assert "concentration_nM" in result.output and "row 3" in result.output


def test_missing_file_and_half_given_cheng_prusoff_options(tmp_path):
    result = _run(tmp_path / "nope.csv")
    assert result.exit_code == 2 and "not found" in result.output
    data = _write(tmp_path / "ok.csv", CONC, _curve(CONC))
    result = _run(data, "--out", tmp_path / "fit", "--ligand-nm", 0.1)
    assert result.exit_code == 2 and "--kd-nm" in result.output
