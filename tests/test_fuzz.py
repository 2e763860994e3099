"""Fuzzing the front door: mutated shipped configs and animals files never crash vtrial.

Properties (hypothesis), on the same path `vtrial run` takes before its first solve
(`vtrial.check_config`, and the `vtrial check` command):
- only vtrial's own error types escape (`SpecError`, `DataError`), never a traceback;
- the message names a key the user wrote (a top-level key of the config, `kind`, an
  `animals.<column>`), never an internal name;
- the command exits with status 0 or 2 and writes nothing.

Also, on the commands themselves (issue 23): mutated optimize and power configs through
`vtrial check`, and mutated `--animals` files through `vtrial run` of a cheap closed-form
trial (arms without animals, result columns of a run's own animals.parquet, columns that
change an arm's fixed parameters): exit 0 with outputs, or 2 naming the field; never 1.

Profiles: `ci` (the default, about a minute; a few dozen command runs) and `release`
(`VTRIAL_FUZZ_PROFILE=release`, thousands of examples, hundreds of runs; run it before a
release). Failing examples are printed by
hypothesis with the exact mutation, ready for a regression test in test_bad_input.py.
"""

from __future__ import annotations

import copy
import math
import os
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import vtrial as vt
from vtrial.cli import app

from mutations import config_paths, mutate_paths

settings.register_profile("ci", max_examples=120, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("release", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("VTRIAL_FUZZ_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {p.name: tomllib.loads(p.read_text()) for p in sorted((ROOT / "configs").glob("*.toml"))}
DELETE = object()



PATHS = {name: list(config_paths(cfg)) for name, cfg in CONFIGS.items()}

odd_values = st.one_of(
    st.sampled_from([DELETE, 0, -1, 1e308, -1e308, 1e-308, math.nan, math.inf, -math.inf, True, False, "", "x", "1",
                     [], {}, [1, 2], {"zz": 1}, 10**30, 2**63, -2**63, 0.5, 1e6]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-2**70, max_value=2**70),
    st.text(max_size=6),
)


@st.composite
def mutated_configs(draw):
    name = draw(st.sampled_from(sorted(CONFIGS)))
    data = copy.deepcopy(CONFIGS[name])
    mutate_paths(draw, data, st.sampled_from(PATHS[name]), odd_values, delete=DELETE,
                 times=draw(st.integers(min_value=1, max_value=3)))
    if draw(st.booleans()) and isinstance(data, dict):
        data[draw(st.sampled_from(["zz_unknown", "seeed", "arm"]))] = 1
    return name, data


def names_a_key(message_field: str, data: dict, extra=()) -> bool:
    first = message_field.split(".")[0]
    return first in data or first in CONFIGS_KEYS or first in extra


CONFIGS_KEYS = {k for cfg in CONFIGS.values() for k in cfg} | {"kind", "config", "animals", "--seed", "--animals-per-arm",
                                                                 "--chunk-size", "wells", "--typical"}


@given(mutated_configs())
def test_mutated_configs_are_accepted_or_refused_by_key(case):
    name, data = case
    try:
        vt.check_config(data, typical=True)
    except (vt.SpecError, vt.DataError) as e:
        field = getattr(e, "field", str(e).split(":")[0])
        assert names_a_key(field, data), f"{name}: the message does not name a config key: {e}"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()) + " }"
    return str(v)


def _toml_text(table: dict) -> str:
    """A (mutated) config table as TOML, tables inline. Not vtrial's `toml_text`: the values
    hypothesis draws include strings with control characters, which this escapes."""
    return "\n".join(f'"{k}" = {_toml_value(v)}' for k, v in table.items()) + "\n"


@given(mutated_configs())
def test_vtrial_check_exits_0_or_2_and_writes_nothing(tmp_path_factory, case):
    name, data = case
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / name
    path.write_text(_toml_text(data))
    result = CliRunner().invoke(app, ["check", str(path), "--typical"])
    assert result.exit_code in (0, 2), (name, result.output, result.exception)
    assert "Traceback" not in result.output
    assert [p.name for p in folder.iterdir()] == [name]


CIA_ANIMALS = pd.DataFrame({  # every arm of the config has animals (an arm without any is refused)
    "arm": ["vehicle", "vehicle", "10 mg/kg/day x 188 h", "100 mg/kg/day x 33 h", "100 mg/kg/day x 188 h"],
    "animal": [1, 2, 3, 4, 5], "bw": [0.2, 0.21, 0.19, 0.2, 0.2], "ka1": [0.35, 0.3, 0.4, 0.35, 0.35],
    "ic50": [0.5, 0.6, 0.4, 0.5, 0.5],
})


@st.composite
def mutated_animals(draw):
    table = CIA_ANIMALS.astype(object).copy()
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        row = draw(st.integers(min_value=0, max_value=len(table) - 1))
        col = draw(st.sampled_from(list(table.columns)))
        table.loc[row, col] = draw(st.one_of(st.sampled_from(["", "x", "nan", "inf", "-1", "0", "1e308", "true", "R101"]),
                                             st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**40, 2**40)))
    if draw(st.booleans()):
        table = table.drop(columns=draw(st.sampled_from(list(table.columns))))
    if draw(st.booleans()):
        table[draw(st.sampled_from(["zz", "cl", "weight"]))] = 1.0
    return table


@given(mutated_animals())
def test_mutated_animals_files_are_accepted_or_refused_by_column(tmp_path_factory, table):
    path = tmp_path_factory.mktemp("animals") / "animals.csv"
    table.to_csv(path, index=False)
    try:
        vt.check_config(ROOT / "configs" / "cia_rat_liu2011.toml", animals=path)
    except (vt.SpecError, vt.DataError) as e:
        assert str(e).startswith(("animals", str(path))), f"the message does not name the animals table: {e}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_shipped_config_passes_the_check(name):
    assert vt.check_config(ROOT / "configs" / name)["kind"] == CONFIGS[name].get("kind", "trial")


# -- the commands: optimize and power configs, `vtrial run --animals` ------------------------

RELEASE = os.environ.get("VTRIAL_FUZZ_PROFILE", "ci") == "release"
#: Command runs per property: a few dozen by default, hundreds before a release.
COMMAND_EXAMPLES = 400 if RELEASE else 24
DESIGN_CONFIGS = sorted(n for n, cfg in CONFIGS.items() if cfg.get("kind") in ("optimize", "power"))


@settings(max_examples=COMMAND_EXAMPLES)
@given(st.sampled_from(DESIGN_CONFIGS), st.data())
def test_mutated_optimize_and_power_configs_exit_0_or_2_naming_a_key(tmp_path_factory, name, data):
    """`vtrial check` of a mutated optimize/power config: 0, or 2 with a message that starts
    with a key of the config (never exit 1, never a traceback)."""
    table = copy.deepcopy(CONFIGS[name])
    mutate_paths(data.draw, table, st.sampled_from(PATHS[name]), odd_values, delete=DELETE,
                 times=data.draw(st.integers(min_value=1, max_value=3)))
    folder = tmp_path_factory.mktemp("design")
    path = folder / name
    path.write_text(_toml_text(table))
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code in (0, 2), (name, result.output, result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        try:
            vt.check_config(table)
        except (vt.SpecError, vt.DataError) as e:
            assert names_a_key(getattr(e, "field", str(e).split(":")[0]), table), f"{name}: names no config key: {e}"


#: A trial that costs no ODE step (closed-form oral PK), so that every example runs.
PK_TRIAL = {
    "kind": "trial", "name": "fuzz_pk", "model": "one_compartment_absorption", "seed": 1, "animals_per_arm": 2,
    "residual": {"conc_mg_per_l": {"proportional": 0.1}},
    "arms": [
        {"name": "vehicle", "doses": []},
        {"name": "oral", "doses": [{"type": "bolus", "route": "oral", "amount": 5, "unit": "mg/kg"}], "parameters": {"ka": 2.0}},
    ],
    "output": {"end_h": 8, "every_h": 2},
}
PK_ANIMALS = pd.DataFrame({"arm": ["vehicle", "oral", "oral"], "animal": [0, 0, 1], "cl": [0.05, 0.06, 0.04],
                           "ka": [1.0, 2.0, 2.0], "bw": [0.25, 0.3, 0.2], "status": "ok", "n_steps": 0})


@st.composite
def mutated_run_animals(draw):
    table = PK_ANIMALS.astype(object).copy()
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        row = draw(st.integers(min_value=0, max_value=len(table) - 1))
        col = draw(st.sampled_from(list(table.columns)))
        table.loc[row, col] = draw(st.one_of(
            st.sampled_from(["", "x", "nan", "inf", "-1", "0", "1e308", "true", "oral", "vehicle", "max_steps_reached", 1.0, 2.0]),
            st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**40, 2**40)))
    if draw(st.booleans()):
        table = table[table["arm"] != draw(st.sampled_from(["vehicle", "oral"]))]  # an arm without animals
    if draw(st.booleans()):
        table = table.drop(columns=draw(st.sampled_from(list(table.columns))))
    if draw(st.booleans()):
        table[draw(st.sampled_from(["zz", "v", "weight", "arm_index"]))] = 1.0
    return table


@pytest.fixture(scope="module")
def pk_trial_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("pk") / "fuzz_pk.toml"
    path.write_text(_toml_text(PK_TRIAL))
    return path


@settings(max_examples=COMMAND_EXAMPLES)
@given(mutated_run_animals(), st.sampled_from(["csv", "parquet"]))
def test_vtrial_run_with_mutated_animals_files_exits_0_or_2(tmp_path_factory, pk_trial_config, table, suffix):
    folder = tmp_path_factory.mktemp("run_animals")
    path = folder / f"animals.{suffix}"
    if suffix == "csv":
        table.to_csv(path, index=False)
    else:
        try:
            table.convert_dtypes().to_parquet(path, index=False)
        except Exception:  # noqa: BLE001 - mixed-type columns Parquet cannot hold: nothing to test
            return
    out = folder / "out"
    result = CliRunner().invoke(app, ["run", str(pk_trial_config), "--animals", str(path), "--out", str(out)])
    assert result.exit_code in (0, 2), (table.to_dict("list"), result.output, result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert not out.exists()
        assert "animals" in result.output, result.output
    else:
        assert (out / "endpoints.csv").is_file() and (out / "animals.parquet").is_file()
