"""A run survives what it can and reports it; an animals file means what it says.

Regression tests of issue 23 (items 2, 3 and the animals-file, endpoint and inhibition
findings) and issue 25 (a run's own animals file fed back). A one-compartment oral PK
trial keeps them cheap (closed form: no ODE steps).
"""

from __future__ import annotations

import json
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import vtrial as vt
from vtrial.analysis.endpoints import endpoint_table, nonfinite_endpoints
from vtrial.errors import RunWarning
from vtrial.io.covariate_search import toml_text
from vtrial.io.writers import save_figure
from vtrial.models.base import Endpoint

CONFIG = {
    "kind": "trial",
    "name": "robust",
    "model": "one_compartment_absorption",
    "seed": 3,
    "animals_per_arm": 3,
    "variability": {"cv_percent": {"cl": 30}},
    "covariates": {"bw": {"median": 0.25, "cv_percent": 10}},
    "residual": {"conc_mg_per_l": {"proportional": 0.1}},
    "arms": [
        {"name": "vehicle", "doses": []},
        {"name": "oral", "doses": [{"type": "bolus", "route": "oral", "amount": 5, "unit": "mg/kg"}], "parameters": {"ka": 2.0}},
    ],
    "output": {"end_h": 12, "every_h": 2},
}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    return vt.run_config(CONFIG, out=tmp_path_factory.mktemp("robust") / "first")


# -- figures never take a run down ---------------------------------------------------------


def _overflowing_figure():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [-1.7e308, 1.7e308])  # matplotlib: "arange: cannot compute length"
    return fig


def test_a_figure_that_cannot_be_drawn_is_a_warning_and_leaves_no_file(tmp_path):
    with pytest.warns(RunWarning, match=r"bad\.png was not drawn: ValueError"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # matplotlib's own overflow notes
            assert save_figure(_overflowing_figure(), tmp_path / "bad.png") is None
    with pytest.warns(RunWarning, match="ZeroDivisionError"):
        assert save_figure(lambda: 1 / 0, tmp_path / "drawn.png") is None
    assert list(tmp_path.iterdir()) == []


def test_a_run_whose_figure_fails_writes_every_number_and_records_it(tmp_path, monkeypatch):
    import vtrial.jobs.trial as trial_job

    def broken(*args, **kwargs):
        raise ValueError("arange: cannot compute length")

    monkeypatch.setattr(trial_job, "plot_trial_report", broken)
    record = vt.run_config(CONFIG, out=tmp_path / "run")
    assert "report.png" not in record.files
    assert {"animals.parquet", "endpoints.csv", "summary.csv", "trajectories.parquet", "run.json"} <= set(record.files)
    info = json.loads((record.out_dir / "run.json").read_text())
    assert info["warnings"] == ["report.png was not drawn: ValueError: arange: cannot compute length"]
    assert record.facts["warnings"] == info["warnings"]


def test_the_cli_prints_a_failed_figure_and_exits_0(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import vtrial.jobs.trial as trial_job
    from vtrial.cli import app

    monkeypatch.setattr(trial_job, "plot_trial_report", lambda *a, **k: 1 / 0)
    path = tmp_path / "c.toml"
    path.write_text(toml_text(CONFIG))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "warning: report.png was not drawn: ZeroDivisionError" in result.output


# -- absurd doses, non-finite endpoints ----------------------------------------------------


@pytest.mark.parametrize("dose, key", [
    ({"type": "bolus", "route": "oral", "amount": 1e308, "unit": "mg/kg"}, r"arms\.1\.doses\.0\.amount"),
    ({"type": "bolus", "route": "oral", "amount": 2e9, "unit": "ug"}, r"arms\.1\.doses\.0\.amount"),
    ({"type": "infusion", "route": "oral", "rate": 1e300, "unit": "mg/h", "duration_h": 2}, r"arms\.1\.doses\.0\.rate"),
])
def test_an_absurd_dose_is_refused_by_check_naming_its_key(dose, key, tmp_path):
    config = {**CONFIG, "arms": [CONFIG["arms"][0], {"name": "oral", "doses": [dose]}]}
    with pytest.raises(vt.SpecError, match=key + r": a dose of .* exceeds the limit of 1e\+06"):
        vt.check_config(config)
    with pytest.raises(vt.SpecError, match=key):
        vt.run_config(config, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    vt.check_config({**CONFIG, "arms": [CONFIG["arms"][0], {"name": "oral", "doses": [{**dose, "amount": 1e6, "unit": "mg"}
                                                                                      if dose["type"] == "bolus" else {**dose, "rate": 1e5}]}]})


def test_endpoints_not_finite_for_ok_animals_are_named():
    arms = np.array(["a", "a", "b", "b"])
    per_animal = {"auc": np.array([1.0, np.inf, 2.0, np.nan]), "cmax": np.ones(4)}
    ok = np.array([True, True, True, False])  # b's NaN animal failed: expected, not named
    messages = nonfinite_endpoints(arms, ["a", "b"], per_animal, ok)
    assert messages == ["endpoint 'auc' of arm 'a' is not finite for 1 of 2 animals solved ok (a value beyond the float "
                        "range?); they are left out of endpoints.csv"]


# -- animals files -------------------------------------------------------------------------


def test_an_arm_without_animals_is_refused_by_check_and_run_alike(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("arm,animal\nvehicle,0\n")
    for call in (lambda: vt.check_config(CONFIG, animals=path), lambda: vt.run_config(CONFIG, animals=path, out=tmp_path / "o")):
        with pytest.raises(vt.SpecError, match=r"animals\.arm: arm 'oral' has no animals in the table"):
            call()
    assert not (tmp_path / "o").exists()


def test_a_runs_own_animals_file_round_trips(first_run, tmp_path):
    """issue 25: `status` and `n_steps` are accepted and ignored; the arm's fixed `ka` holds
    and the same animals give the same predictions."""
    path = first_run.out_dir / "animals.parquet"
    assert {"status", "n_steps", "ka"} <= set(pd.read_parquet(path).columns)
    assert vt.check_config(CONFIG, animals=path)["n_animals"] == 6
    again = vt.run_config(CONFIG, animals=path, out=tmp_path / "again")
    key = ["arm", "animal", "time_h"]
    got, ref = (pd.read_parquet(r.out_dir / "trajectories.parquet").sort_values(key, ignore_index=True) for r in (again, first_run))
    pd.testing.assert_frame_equal(got, ref)
    animals = pd.read_parquet(again.out_dir / "animals.parquet")
    assert (animals.loc[animals["arm"] == "oral", "ka"] == 2.0).all()


def test_a_column_that_changes_an_arms_parameter_is_refused_by_name(first_run, tmp_path):
    table = pd.read_parquet(first_run.out_dir / "animals.parquet")
    table.loc[table["arm"] == "oral", "ka"] = 1.0  # the typical value: the arm fixes 2
    path = tmp_path / "changed.csv"
    table.to_csv(path, index=False)
    row = int(np.flatnonzero(table["arm"] == "oral")[0]) + 1
    with pytest.raises(vt.SpecError, match=rf"animals\.ka: row {row}: animal \d+ of arm 'oral' has ka = 1, but the arm "
                                           r"fixes ka = 2 \(arms\.1\.parameters\)"):
        vt.check_config(CONFIG, animals=path)


# -- endpoints -----------------------------------------------------------------------------


def test_a_value_endpoint_without_a_time_is_read_at_the_end_of_the_run():
    from vtrial.analysis.endpoints import endpoint_values, window_label

    e = Endpoint("x_end", "x", "value")
    times = np.array([0.0, 3.0, 6.0])
    got = endpoint_values([e], times, {"x": np.array([[1.0, 2.0, 3.0]])})
    assert got["x_end"].tolist() == [3.0] and window_label(e, times) == "0.25"


def test_nmp_end_endpoints_follow_the_configs_end():
    from vtrial.io.trial_config import BuiltTrial, TrialConfig
    from vtrial.io.config import read_toml, validate
    from vtrial.analysis.endpoints import endpoint_values
    from pathlib import Path

    table, _ = read_toml(Path(__file__).resolve().parents[1] / "configs" / "renal_nmp_pig.toml")
    table.pop("kind")
    table["output"] = {"end_h": 6.0, "every_h": 0.5}
    built = BuiltTrial(validate(TrialConfig, table), 1)
    times = built.times_h
    assert times[-1] == 6.0
    ends = [e for e in built.endpoints if e.name.endswith("_end")]
    assert ends and all(e.start_h is None for e in ends)
    pred = {e.observable: np.tile(times, (1, 1)) for e in built.endpoints}
    values = endpoint_values(ends, times, pred)
    assert all(v.tolist() == [6.0] for v in values.values())
    means = [e for e in built.endpoints if e.statistic == "mean"]
    assert means and all(e.end_h is None for e in means)


def test_inhibition_is_reported_only_for_treated_arms():
    e = Endpoint("y", "y", "max", inhibition="y_inhibition_pct")
    arms = np.array(["PBS", "vehicle", "drug", "KO"])
    table = endpoint_table(arms, ["PBS", "vehicle", "drug", "KO"], {"y": np.array([0.1, 10.0, 5.0, 2.0])}, [e], {"y": "u"},
                           np.array([0.0, 1.0]), reference_arm="vehicle", treated_arms=["drug", "KO"])
    inhibition = table[table["endpoint"] == "y_inhibition_pct"].set_index("arm")["mean"]
    assert inhibition.to_dict() == {"drug": 50.0, "KO": 80.0}
    assert set(table[table["endpoint"] == "y"]["arm"]) == {"PBS", "vehicle", "drug", "KO"}


def test_the_knockout_switch_is_a_treatment():
    from vtrial.models import get_model

    model = get_model("ami_mouse")
    assert model.parameter("il1r_ko").treatment and not model.parameter("k_i").treatment


def test_endpoints_csv_says_what_each_exposure_endpoint_measures(first_run):
    """`cmax`/`auc` are plasma in one model and a biophase in another: endpoints.csv names
    the observable and what it measures (issue 23)."""
    table = pd.read_csv(first_run.out_dir / "endpoints.csv")
    cmax = table[table["endpoint"] == "cmax"].iloc[0]
    assert cmax["observable"] == "conc_mg_per_l" and cmax["measures"] == "plasma concentration"
    from vtrial.models import get_model

    for name, where in (("alphavirus_bone_mouse", "biophase"), ("msu_peritonitis_mouse", "plasma")):
        model = get_model(name)
        e = next(e for e in model.endpoints if e.name == "cmax")
        assert where in model.observable(e.observable).description and e.observable in e.description
