"""The README tutorial "Your own model", at small size, outside the package: the model
file and its configs copied to a folder of their own, simulated as a trial with its
dataset written, fitted, predicted, and the same file used from Python."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import vtrial as vt
from vtrial.cli import app
from vtrial.models import load_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.long
def test_tutorial_steps(tmp_path, monkeypatch):
    work = tmp_path / "my_study"
    work.mkdir()
    for name in ("my_model.py", "my_trial.toml", "my_fit.toml"):
        shutil.copy(EXAMPLES / name, work / name)
    fit_config = (work / "my_fit.toml").read_text().replace("replicates = 50", "replicates = 0")
    (work / "my_fit.toml").write_text(fit_config + '\n[estimation]\ncovariance = "none"\n')
    monkeypatch.chdir(tmp_path)  # the configs name the model file relative to their own folder
    runner = CliRunner()

    run = runner.invoke(app, ["run", "my_study/my_trial.toml", "--animals-per-arm", "4", "--out", "trial",
                              "--dataset", "study.csv"])
    assert run.exit_code == 0, run.output
    study = pd.read_csv("study.csv")
    assert study.ID.nunique() == 12

    fit = runner.invoke(app, ["fit", "my_study/my_fit.toml", "study.csv", "--out", "fit"])
    assert fit.exit_code == 0, fit.output
    estimates = pd.read_csv("fit/parameters.csv").set_index("name")["estimate"]
    assert 0.2 < estimates["cl"] < 1.0 and 2.5 < estimates["v"] < 10.0  # truth 0.5 L/h and 5 L

    predict = runner.invoke(app, ["predict", "my_study/my_fit.toml", "study.csv", "--out", "predict",
                                  "--individual", "fit/individual.csv", "--replicates", "2", "--seed", "3"])
    assert predict.exit_code == 0, predict.output
    table = pd.read_csv("predict/predictions.csv")
    assert list(table.columns) == ["REP", *study.columns, "PRED", "IPRED", "SIM_DV"]
    assert len(table) == 2 * len(study) and (table.REP.to_numpy() == np.repeat([1, 2], len(study))).all()
    first = table[table.REP == 1].reset_index(drop=True)
    pd.testing.assert_frame_equal(first[list(study.columns)], study)  # the dataset's rows, order and columns
    observed = (study.EVID == 0).to_numpy() & (study.MDV == 0).to_numpy()
    assert np.isfinite(first.loc[observed, ["PRED", "IPRED", "SIM_DV"]].to_numpy()).all()
    assert first.loc[~observed, ["PRED", "IPRED", "SIM_DV"]].isna().all().all()
    # IPRED at the fit's own individual values and estimates is the fit's IPRED wherever
    # the config's values are the estimates (cl, v, ic50 come from individual.csv).
    assert not np.allclose(first.loc[observed, "PRED"], first.loc[observed, "IPRED"])

    model = load_model("my_study/my_model.py:oral_pk_biomarker")
    result = vt.simulate(model, vt.Regimen((vt.Bolus(10.0, route="oral"),)), times_h=[0.0, 2.0, 24.0], typical=True)
    frame = result.to_frame()
    assert frame["biomarker_ng_per_ml"].iloc[0] == pytest.approx(100.0)
    assert frame["biomarker_ng_per_ml"].iloc[-1] < 100.0  # the drug lowers the biomarker
