"""Fuzzing the fit's front door: mutated NONMEM datasets and fit configs never crash vtrial.

Properties (hypothesis), on the path `vtrial fit` takes before its first solve
(`vtrial.check_config(config, data=...)`, and `vtrial check CONFIG --data DATASET`):
- only vtrial's own error types escape (`SpecError`, `DataError`), never a traceback;
- the message names the dataset file (with its row and column where one is at fault) or a
  key the user wrote;
- the command exits with status 0 or 2.

Profiles as in test_fuzz.py: `ci` (the default: a few dozen examples per test, seconds
each) and `release` (`VTRIAL_FUZZ_PROFILE=release`: thousands; run it before a release).
A failing example is printed with the exact mutation, ready for a regression test in
test_fit_bad_input.py.
"""

from __future__ import annotations

import copy
import math
import os
import tomllib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import vtrial as vt
from vtrial.cli import app

from conftest import REPO_ROOT
from mutations import config_paths, mutate_paths

RELEASE = os.environ.get("VTRIAL_FUZZ_PROFILE", "ci") == "release"
FUZZ = settings(max_examples=2000 if RELEASE else 30, deadline=None, derandomize=not RELEASE,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

CONFIG = REPO_ROOT / "configs" / "bolus_2cpt_fit.toml"
FIT = tomllib.loads(CONFIG.read_text())
HEADER = ["ID", "TIME", "AMT", "RATE", "EVID", "CMT", "DV", "MDV", "II", "ADDL", "DVID", "WT"]
ROWS = [  # Bolus_2CPT's first subjects, with every column the reader knows
    ["1", "0", "120000", ".", "1", "1", ".", "1", ".", ".", ".", "70"],
    ["1", "0.25", "0", ".", "0", "1", "1040.7", "0", ".", ".", "1", "70"],
    ["1", "0.5", "0", ".", "0", "1", "1629.0", "0", ".", ".", "1", "70"],
    ["1", "1", "0", ".", "0", "1", "877.8", "0", ".", ".", "1", "70"],
    ["2", "0", "60000", "30000", "1", "1", ".", "1", "12", "1", ".", "82"],
    ["2", "0.25", "0", ".", "0", "1", "500.5", "0", ".", ".", "1", "82"],
    ["2", "0.5", "0", ".", "0", "1", "610.2", "0", ".", ".", "1", "82"],
]
ODD_CELLS = [".", "", "x", "nan", "inf", "-1", "0", "1", "2", "3", "4", "99", "1e6", "1e300", "-1e300", "1e-300", "9999",
             "0.001", "1.5", "ID", "  7  ", '"1,2"']


@st.composite
def mutated_datasets(draw) -> str:
    header, rows = list(HEADER), [list(r) for r in ROWS]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        what = draw(st.sampled_from(["cell", "cell", "cell", "drop_row", "copy_row", "short_row", "long_row",
                                     "drop_column", "rename_column"]))
        r = draw(st.integers(min_value=0, max_value=len(rows) - 1)) if rows else 0
        c = draw(st.integers(min_value=0, max_value=len(header) - 1)) if header else 0
        if what == "cell" and rows and c < len(rows[r]):
            rows[r][c] = draw(st.one_of(st.sampled_from(ODD_CELLS), st.floats().map(repr), st.text(max_size=4)))
        elif what == "drop_row" and rows:
            rows.pop(r)
        elif what == "copy_row" and rows:
            rows.insert(r, list(rows[r]))
        elif what == "short_row" and rows and rows[r]:
            rows[r].pop()
        elif what == "long_row" and rows:
            rows[r].append("0")
        elif what == "drop_column" and len(header) > 1:
            header.pop(c)
            for row in rows:
                if c < len(row):
                    row.pop(c)
        elif what == "rename_column" and header:
            header[c] = draw(st.sampled_from(["DV", "dv", "Time", "BW", "CENS", "SS", "zz", ""]))
    return "\n".join(",".join(line) for line in [header, *rows]) + "\n"


def _names_the_input(error: Exception, path, table: dict) -> bool:
    text = str(error)
    field = getattr(error, "field", text.split(":")[0])
    return (str(path) in text or field.split(".")[0] in table or field.split(".")[0] in ("kind", "DATA", "--data")
            or "`kind`" in text)  # a config without kind read as a trial config says so


@FUZZ
@given(mutated_datasets())
def test_mutated_datasets_are_accepted_or_refused_naming_the_file(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("dataset") / "data.csv"
    path.write_text(text)
    try:
        vt.check_config(FIT, data=path)
    except (vt.SpecError, vt.DataError) as e:
        assert _names_the_input(e, path, FIT), f"the message names neither the dataset nor a key: {e}"


ODD_VALUES = st.one_of(
    st.sampled_from([None, 0, -1, 1e308, -1e308, 1e-308, 1e-300, math.nan, math.inf, True, "", "x", "weeks", [], {}, [1],
                     {"zz": 1}, 10**30, 0.5, 1e6, "mg/kg", "ug/L", "DVID"]),
    st.floats(allow_nan=True, allow_infinity=True),
)



FIT_PATHS = list(config_paths(FIT))


@st.composite
def mutated_fit_configs(draw) -> dict:
    table = copy.deepcopy(FIT)
    table["vpc"]["replicates"] = 0
    mutate_paths(draw, table, st.sampled_from(FIT_PATHS), ODD_VALUES, delete=None,
                 times=draw(st.integers(min_value=1, max_value=3)))
    if draw(st.booleans()):
        table.setdefault("covariate_effects", []).append(
            {"parameter": draw(st.sampled_from(["cl", "v1", "zz"])), "covariate": "bw", "reference": 70.0, "exponent": 0.75})
    return table


@FUZZ
@given(mutated_fit_configs())
def test_mutated_fit_configs_with_a_dataset_are_accepted_or_refused_by_key(tmp_path_factory, table):
    path = tmp_path_factory.mktemp("dataset") / "data.csv"
    path.write_text("\n".join(",".join(line) for line in [HEADER, *ROWS]) + "\n")
    try:
        vt.check_config(table, data=path)
    except (vt.SpecError, vt.DataError) as e:
        assert _names_the_input(e, path, {**table, **FIT}), f"the message names neither the dataset nor a key: {e}"


@settings(FUZZ, max_examples=200 if RELEASE else 8)
@given(mutated_datasets())
def test_vtrial_check_data_exits_0_or_2(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("cli")
    path = folder / "data.csv"
    path.write_text(text)
    result = CliRunner().invoke(app, ["check", str(CONFIG), "--data", str(path)])
    assert result.exit_code in (0, 2), (text, result.output, result.exception)
    assert "Traceback" not in result.output
    assert [p.name for p in folder.iterdir()] == ["data.csv"]
