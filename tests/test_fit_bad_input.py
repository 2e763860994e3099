"""Bad input on the fit and dataset paths (issue 23 items 1, 4-12): one regression test per
defect, each refused by `vtrial check` (so by `vtrial fit` before its first solve, which
runs the same checks) naming the key, or the file, row and column, with exit status 2.

The datasets are a few rows written here (Bolus_2CPT's layout and values), the fit
config is the shipped configs/bolus_2cpt_fit.toml; nothing here reaches the estimator,
except the unit tests of the tables it writes.
"""

from __future__ import annotations

import copy
import math
import tomllib

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import vtrial as vt
from vtrial.cli import app
from vtrial.errors import DataError, DatasetError, SpecError
from vtrial.estimation.population_tables import cv_pct_row, unfit_observation
from vtrial.io.covariate_search import toml_text

from conftest import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"
FIT = tomllib.loads((CONFIGS / "bolus_2cpt_fit.toml").read_text())
runner = CliRunner()

HEADER = "ID,TIME,AMT,EVID,CMT,DV,MDV"
ROWS = [
    "1,0,120000,1,1,.,1",
    "1,0.25,0,0,1,1040.7,0",
    "1,0.5,0,0,1,1629.0,0",
    "1,1,0,0,1,877.8,0",
    "2,0,60000,1,1,.,1",
    "2,0.25,0,0,1,500.5,0",
    "2,0.5,0,0,1,610.2,0",
]


def dataset(tmp_path, rows=ROWS, header=HEADER, name="data.csv"):
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def edit(row: str, column: str, value: str, header: str = HEADER) -> str:
    fields = row.split(",")
    fields[header.split(",").index(column)] = value
    return ",".join(fields)


def fit_config(**edits) -> dict:
    """The shipped Bolus_2CPT fit config with dotted-key edits (None deletes)."""
    table = copy.deepcopy(FIT)
    for dotted, value in edits.items():
        node, keys = table, dotted.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return table


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, " ".join(result.output.split())  # rich wraps at 80 columns


def test_a_good_small_dataset_checks(tmp_path):
    summary = vt.check_config(fit_config(), data=dataset(tmp_path))
    assert (summary["n_subjects"], summary["n_observations"]) == (2, 5)
    # the model's body weight is not in the dataset (no effect uses it): reported, not silent
    assert "bw" in summary["covariates_not_in_dataset"]


# ---------------------------------------------------------------------------
# item 1: tiny or huge omega never crashes parameters.csv


@pytest.mark.parametrize("key,value", [("variability.omega.cl", 1e-300), ("variability.omega.cl", 1e-7),
                                       ("variability.cv_percent.cl", 1e-300)])
def test_a_meaningless_initial_omega_is_refused_by_check(key, value):
    table = fit_config(**{key: value})
    if key.startswith("variability.cv_percent"):
        table["variability"]["omega"].pop("cl")
    with pytest.raises(SpecError) as info:
        vt.check_config(table)
    assert key in str(info.value)


def test_cv_pct_of_extreme_variances_is_inf_or_nan_never_an_overflow():
    cv, se, rse, lo, hi = cv_pct_row(0.1, 0.01, 1.96)
    assert cv == pytest.approx(100 * math.sqrt(math.expm1(0.1)))
    assert lo < cv < hi and se > 0 and rse == pytest.approx(100 * se / cv)
    assert cv_pct_row(1e-300, 1e300, 1.96)[1] == math.inf  # the SE of a collapsed variance
    assert cv_pct_row(800.0, 1.0, 1.96)[0] == math.inf  # exp(800) overflows
    assert all(math.isnan(v) for v in cv_pct_row(0.2, math.nan, 1.96)[1:])  # no covariance step
    assert np.isfinite(cv_pct_row(0.0, 0.1, 1.96)[4])


# ---------------------------------------------------------------------------
# items 4, 5: duplicated columns, rows with the wrong number of fields


@pytest.mark.parametrize("header", [HEADER + ",DV", HEADER + ",dv", HEADER + ", Dv "])
def test_a_duplicated_column_is_refused_whatever_its_case(tmp_path, header):
    rows = [r + ",1" for r in ROWS]
    code, out = cli("check", CONFIGS / "bolus_2cpt_fit.toml", "--data", dataset(tmp_path, rows, header))
    assert code == 2 and "appears twice" in out and "not case-sensitive" in out, out


@pytest.mark.parametrize("row,fields", [("1,0.75,0.0,0,1,169.5", 6), ("1,0.75,0.0,0,1,169.5,0,7", 8)])
def test_a_row_with_fewer_or_more_fields_than_the_header_is_named(tmp_path, row, fields):
    rows = [*ROWS[:3], row, *ROWS[3:]]
    with pytest.raises(DatasetError) as info:
        vt.check_config(fit_config(), data=dataset(tmp_path, rows))
    e = info.value
    assert e.row == 4 and f"{fields} fields" in e.rule and "header has 7 columns" in e.rule, str(e)
    assert "row 4 (line 5 of the file)" in str(e)


# ---------------------------------------------------------------------------
# item 6: a covariate a covariate effect needs and the dataset lacks


def test_a_covariate_effect_without_its_column_names_the_covariate_and_the_columns(tmp_path):
    table = fit_config()
    table["covariate_effects"] = [{"parameter": "cl", "covariate": "bw", "reference": 70.0, "exponent": 0.75}]
    with pytest.raises(DatasetError) as info:
        vt.check_config(table, data=dataset(tmp_path))
    message = str(info.value)
    assert "covariate_effects.0" in message and "'bw'" in message and "BW or WT" in message
    assert "columns: ID, TIME, AMT, EVID, CMT, DV, MDV" in message
    rows = [r + ",70" for r in ROWS]  # with the column it checks
    assert vt.check_config(table, data=dataset(tmp_path, rows, HEADER + ",WT"))["n_subjects"] == 2


# ---------------------------------------------------------------------------
# item 7: check runs every check the command runs before solving


def test_check_refuses_focei_without_random_effects():
    table = fit_config()
    table["variability"] = {}
    with pytest.raises(SpecError, match="needs random effects") as info:
        vt.check_config(table)
    assert info.value.field == "variability.omega"
    assert vt.check_config(table, method="fo")["random_effects"] == []  # FO without random effects is a fit


@pytest.mark.parametrize("key,value,named", [
    ("daily_dose_mg_per_kg", [3.0, 1e308], "space.daily_dose_mg_per_kg"),
    ("loading_dose_days", [1e308], "space.loading_dose_days.0"),
    ("loading_dose_days", [0, 1e300], "space.loading_dose_days.1"),
])
def test_an_absurd_regimen_space_is_refused_by_check_naming_its_key(key, value, named):
    table = tomllib.loads((CONFIGS / "cia_dose_optimization.toml").read_text())
    table["space"][key] = value
    with pytest.raises(SpecError) as info:
        vt.check_config(table)
    assert info.value.field == named, str(info.value)


# ---------------------------------------------------------------------------
# item 8: messages are printed literally


def test_cli_messages_keep_their_bracketed_text(tmp_path):
    rows = [edit(ROWS[0], "CMT", "99"), *ROWS[1:]]
    code, out = cli("check", CONFIGS / "bolus_2cpt_fit.toml", "--data", dataset(tmp_path, rows))
    assert code == 2 and "is not mapped to a route in [data.routes] (mapped: 1)" in out, out
    assert out.startswith("error: ")


# ---------------------------------------------------------------------------
# item 9: values no fit can use, named by row and column or key


@pytest.mark.parametrize("row_index,column,value,words", [
    (1, "DV", "1e300", "beyond the limit"),
    (1, "DV", "-1e300", "beyond the limit"),
    (0, "AMT", "1e300", "beyond the limit"),
    (3, "TIME", "1e6", "is data.time_unit right"),
])
def test_values_out_of_reach_are_named_by_row_and_column(tmp_path, row_index, column, value, words):
    rows = list(ROWS)
    rows[row_index] = edit(rows[row_index], column, value)
    with pytest.raises(DatasetError) as info:
        vt.check_config(fit_config(), data=dataset(tmp_path, rows))
    assert (info.value.row, info.value.column) == (row_index + 1, column) and words in info.value.rule, str(info.value)


@pytest.mark.parametrize("rate,words", [("1e-300", "over 1.2e+305 h"), ("1e300", "beyond the limit")])
def test_an_absurd_rate_is_named(tmp_path, rate, words):
    rows = [r + ",." for r in ROWS]
    rows[0] = rows[0][:-1] + rate
    with pytest.raises(DatasetError) as info:
        vt.check_config(fit_config(), data=dataset(tmp_path, rows, HEADER + ",RATE"))
    assert (info.value.row, info.value.column) == (1, "RATE") and words in info.value.rule, str(info.value)


def test_a_subject_without_a_dose_is_named_for_a_pk_only_model(tmp_path):
    rows = [r for r in ROWS if r != "2,0,60000,1,1,.,1"]
    with pytest.raises(DataError) as info:
        vt.check_config(fit_config(), data=dataset(tmp_path, rows))
    assert "subject(s) 2 have no dose" in str(info.value) and "row 5" in str(info.value)


def test_a_dose_of_amount_0_is_accepted(tmp_path):
    rows = [*ROWS[:2], "1,0.3,0,1,1,.,1", *ROWS[2:]]
    assert vt.check_config(fit_config(), data=dataset(tmp_path, rows))["n_subjects"] == 2


@pytest.mark.parametrize("key,value", [
    ("parameters.cl", 1e308), ("parameters.cl", 1e-308),
    ("residual.conc_mg_per_l.proportional", 1e308), ("residual.conc_mg_per_l.proportional", 1e-308),
    ("residual.conc_mg_per_l.additive", 1e300),
])
def test_absurd_initial_values_are_refused_by_check_naming_the_key(key, value):
    with pytest.raises(SpecError) as info:
        vt.check_config(fit_config(**{key: value}))
    assert info.value.field == key, str(info.value)


def test_an_unknown_time_unit_is_named():
    with pytest.raises(SpecError) as info:
        vt.check_config(fit_config(**{"data.time_unit": "lightyears"}))
    assert info.value.field.startswith("data.time_unit")


def test_a_non_finite_objective_names_the_row_and_the_cause():
    frame = pd.DataFrame({"ID": [1, 1, 2], "TIME": [1.0, 2.0, 3.0], "DV": [3.0, 4.0, 5.0], "PRED": [1.0, 0.0, 1.0],
                          "IPRED": [1.0, 0.0, 1.0], "IWRES": [1.0, np.inf, 1e5], "row": [2, 3, 5]})
    assert unfit_observation(frame, [1]).startswith("row 3 (ID 1, TIME 2 h, DV 4): the prediction is 0")
    assert "1e+05 residual SDs" in unfit_observation(frame, [2]) and "data.time_unit" in unfit_observation(frame, [2])
    frame.loc[1, "IPRED"] = np.nan
    assert "the solve failed there" in unfit_observation(frame, [1])


# ---------------------------------------------------------------------------
# item 10: a fit's dose records are bounded


def test_a_fit_refuses_more_dose_records_than_its_limit(tmp_path):
    rows = [r + ",.,." for r in ROWS]
    rows[0] = rows[0][: -len(",.,.")] + ",0.001,9999"
    with pytest.raises(DatasetError) as info:
        vt.check_config(fit_config(), data=dataset(tmp_path, rows, HEADER + ",II,ADDL"))
    assert info.value.column == "ADDL" and "1,000 in a fit" in info.value.rule, str(info.value)


# ---------------------------------------------------------------------------
# item 11: the key named is the key at fault


def test_a_fit_config_without_kind_or_with_another_kind_is_told_about_kind(tmp_path):
    for table in (fit_config(kind=None), fit_config(kind="trial")):
        path = tmp_path / "c.toml"
        path.write_text(toml_text(table))
        code, out = cli("check", path)
        assert code == 2 and "kind" in out and "'fit'" in out, out
        code, out = cli("fit", path, dataset(tmp_path))
        assert code == 2 and "kind" in out, out
        assert not (tmp_path / "runs").exists()


def test_power_and_trial_limits_name_their_own_key():
    power = tomllib.loads((CONFIGS / "cia_power.toml").read_text())
    power["animals_per_arm"] = [20_000_000]
    with pytest.raises(SpecError) as info:
        vt.check_config(power)
    assert info.value.field == "animals_per_arm", str(info.value)
    trial = tomllib.loads((CONFIGS / "msu_peritonitis_mouse.toml").read_text())
    trial["output"]["end_h"] = 1e308
    with pytest.raises(SpecError) as info:
        vt.check_config(trial)
    assert info.value.field == "output.end_h", str(info.value)


# ---------------------------------------------------------------------------
# item 12: nothing silently ignored


def test_dvid_values_a_single_mapped_observable_does_not_cover_are_refused(tmp_path):
    rows = [r + ",1" for r in ROWS]
    rows[2] = rows[2][:-1] + "2"
    with pytest.raises(DatasetError) as info:
        vt.check_config(fit_config(), data=dataset(tmp_path, rows, HEADER + ",DVID"))
    assert (info.value.row, info.value.column) == (3, "DVID") and "dvid = [1]" in info.value.rule, str(info.value)
    table = fit_config(**{"data.observables.conc_mg_per_l.dvid": [1]})  # mapped: DVID 2 is named as not mapped
    with pytest.raises(DatasetError, match="not mapped"):
        vt.check_config(table, data=dataset(tmp_path, rows, HEADER + ",DVID"))
    rows[2] = rows[2][:-1] + "1"
    assert vt.check_config(fit_config(), data=dataset(tmp_path, rows, HEADER + ",DVID"))["n_observations"] == 5


def test_check_data_on_a_config_that_reads_no_dataset_is_an_error(tmp_path):
    code, out = cli("check", CONFIGS / "msu_peritonitis_mouse.toml", "--data", dataset(tmp_path))
    assert code == 2 and "--data" in out and "'fit'" in out, out
