"""`vtrial predict`: PRED, IPRED and simulated DVs for a dataset's own records."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from vtrial.cli import app
from vtrial.errors import DataError, SpecError
from vtrial.jobs.predict import predict

TRIAL = """\
kind = "trial"
model = "one_compartment"
[parameters]
cl = 1.0
v = 10.0
[residual.conc_mg_per_l]
proportional = 0.1
[[arms]]
name = "unused"
doses = []
[output]
end_h = 4
"""

DATA = """\
ID,TIME,AMT,EVID,CMT,DV,MDV,CL,NOTE
1,0,100,1,1,.,1,0.5,dose
1,1,.,0,.,9.0,0,0.5,a
1,4,.,0,.,7.0,0,0.5,b
2,0,50,1,1,.,1,2,dose
2,2,.,0,.,3.0,0,2,c
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "trial.toml").write_text(TRIAL)
    (tmp_path / "data.csv").write_text(DATA)
    return tmp_path


def test_pred_and_ipred_from_the_dataset_columns_are_the_analytic_solution(files):
    result = predict(files / "trial.toml", files / "data.csv")
    table = result.table
    data = pd.read_csv(files / "data.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(table[list(data.columns)], data)
    dose = {"1": 100.0, "2": 50.0}
    cl_i = {"1": 0.5, "2": 2.0}
    for i, r in table.iterrows():
        if r.EVID == "1":
            assert math.isnan(r.PRED) and math.isnan(r.IPRED)
            continue
        t = float(r.TIME)
        assert r.PRED == pytest.approx(dose[r.ID] / 10.0 * math.exp(-1.0 / 10.0 * t), rel=1e-8)
        assert r.IPRED == pytest.approx(dose[r.ID] / 10.0 * math.exp(-cl_i[r.ID] / 10.0 * t), rel=1e-8)
    assert "CL" in result.ipred_source


def test_replicates_repeat_the_rows_with_simulated_dvs(files):
    (files / "data.csv").write_text(DATA.replace(",CL,", ",X,"))  # no individual values: IPRED = PRED (no IIV)
    result = predict(files / "trial.toml", files / "data.csv", replicates=3, seed=5)
    table = result.table
    assert list(table.REP.unique()) == [1, 2, 3] and len(table) == 15
    obs = table.EVID == "0"
    np.testing.assert_allclose(table.loc[obs, "IPRED"], table.loc[obs, "PRED"])
    ratio = table.loc[obs, "SIM_DV"] / table.loc[obs, "PRED"]
    assert np.all(np.abs(ratio - 1) < 0.6) and ratio.std() > 0  # proportional error of 10%
    again = predict(files / "trial.toml", files / "data.csv", replicates=3, seed=5).table
    np.testing.assert_array_equal(again.SIM_DV.to_numpy(), table.SIM_DV.to_numpy())


def test_individual_file(files):
    (files / "individual.csv").write_text("ID,eta_cl,cl\n1,0.1,0.25\n2,0.0,1.0\n")
    table = predict(files / "trial.toml", files / "data.csv", individual=files / "individual.csv").table
    row = table[(table.ID == "1") & (table.TIME == "4")].iloc[0]
    assert row.IPRED == pytest.approx(10.0 * math.exp(-0.025 * 4.0), rel=1e-8)


@pytest.mark.parametrize(
    "change,kwargs,error,match",
    [
        (None, {"replicates": -1}, SpecError, "--replicates"),
        (None, {"seed": 1.5}, SpecError, "--seed"),
        ("kind", {}, SpecError, "kind"),
        ("no data", {}, SpecError, "not found"),
        ("individual without ID", {}, DataError, "no ID column"),
        ("individual missing a subject", {}, DataError, "subject ID 2"),
        ("CL varies", {}, DataError, "column CL"),
    ],
)
def test_bad_input_is_named_before_any_solve(files, change, kwargs, error, match):
    data = files / "data.csv"
    if change == "kind":
        (files / "trial.toml").write_text(TRIAL.replace('kind = "trial"', 'kind = "power"'))
    elif change == "no data":
        data = files / "nope.csv"
    elif change == "individual without ID":
        (files / "ind.csv").write_text("SUBJ,cl\n1,1\n")
        kwargs = {"individual": files / "ind.csv"}
    elif change == "individual missing a subject":
        (files / "ind.csv").write_text("ID,cl\n1,1\n")
        kwargs = {"individual": files / "ind.csv"}
    elif change == "CL varies":
        data.write_text(DATA.replace("1,4,.,0,.,7.0,0,0.5", "1,4,.,0,.,7.0,0,0.7"))
    with pytest.raises(error, match=match):
        predict(files / "trial.toml", data, **kwargs)


def test_cli_writes_a_folder_and_exits_2_on_bad_input(files):
    runner = CliRunner()
    ok = runner.invoke(app, ["predict", str(files / "trial.toml"), str(files / "data.csv"), "--out", str(files / "out")])
    assert ok.exit_code == 0, ok.output
    assert (files / "out" / "predictions.csv").is_file()
    assert json.loads((files / "out" / "run.json").read_text())["kind"] == "predict"
    bad = runner.invoke(app, ["predict", str(files / "trial.toml"), str(files / "data.csv"), "--out", str(files / "out2"),
                              "--replicates", "-2"])
    assert bad.exit_code == 2 and not (files / "out2").exists()
    assert "--replicates" in textwrap.shorten(bad.output, 1000)
