"""Model files (`file.py:factory`), entry points and the one loader; `vtrial model`.

A broken model file is bad input: a `SpecError` naming the file (and the line, where
the problem is in the user's code), exit 2 from the command line.
"""

from __future__ import annotations

import os
import textwrap
import time
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from typer.testing import CliRunner

import vtrial as vt
from vtrial.cli import app
from vtrial.errors import SpecError
from vtrial.models import load_model
from vtrial.models import loader

HEADER = """\
import jax.numpy as jnp
from vtrial.models import Model, Observable, Parameter, Route, State
"""

GOOD = HEADER + """
def rhs(t, y, p, rate):
    return jnp.stack([-p["cl"] / p["v"] * y[0] + rate[0]])

def make():
    return Model(
        name="my_iv",
        states=(State("central", "mg"),),
        parameters=(Parameter("cl", 1.0, "L/h"), Parameter("v", 10.0, "L", 1e-9)),
        vector_field=rhs,
        observables=(Observable("conc_mg_per_l", lambda y, p: y[0] / p["v"], "", "mg/L"),),
        routes=(Route("iv", "central"),),
        report_time_unit="h",
    )
"""


def write(tmp_path: Path, text: str, name: str = "m.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problem(reference, base_dir=None) -> str:
    with pytest.raises(SpecError) as info:
        load_model(reference, base_dir)
    assert info.value.field == "model"
    return str(info.value)


def test_a_model_file_loads_once_and_reloads_when_changed(tmp_path):
    path = write(tmp_path, GOOD)
    model = load_model("m.py:make", tmp_path)
    assert model.name == "my_iv" and load_model(f"{path}:make") is model
    assert loader.model_reference(model) == f"{path.resolve()}:make"
    time.sleep(0.01)
    path.write_text(GOOD.replace('"my_iv"', '"my_iv2"'))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert load_model("m.py:make", tmp_path).name == "my_iv2"


def test_shipped_models_load_through_the_same_loader():
    assert vt.models.get_model("one_compartment") is load_model("one_compartment")
    assert loader.model_reference(load_model("two_compartment")) == "two_compartment"
    assert "unknown model 'nope'" in problem("nope") and "file.py:factory" in problem("nope")


def test_an_entry_point_adds_a_model(tmp_path, monkeypatch):
    write(tmp_path, GOOD, "my_vtrial_plugin.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint(name="plugin_iv", value="my_vtrial_plugin:make", group=loader.ENTRY_POINT_GROUP)
    monkeypatch.setattr(loader, "_entry_points", lambda: (ep,))
    assert load_model("plugin_iv").name == "my_iv"
    assert loader.available_models()["plugin_iv"].startswith("entry point")


@pytest.mark.parametrize(
    "text,reference,expected",
    [
        (GOOD, "missing.py:make", ["model file", "missing.py", "not found"]),
        (GOOD, "m.py:nothing", ["m.py", "no factory 'nothing'", "make"]),
        ("def make(:\n    pass\n", "m.py:make", ["m.py, line 1", "syntax error"]),
        ("import jax\nx = 1\nraise RuntimeError('boom')\n", "m.py:make", ["m.py, line 3", "RuntimeError: boom"]),
        (GOOD + "\ndef bad():\n    x = 1\n    raise ValueError('no parameters')\n", "m.py:bad", ["m.py, line 20", "ValueError: no parameters"]),
        (GOOD + "\ndef other():\n    return 42\n", "m.py:other", ["m.py:other", "must return a vtrial.models.Model, got int"]),
        (GOOD.replace("+ rate[0]])", "+ rate[0], 0.0 * y[0]])"), "m.py:make", ["m.py:make", "shape (2,)", "shape (1,)"]),
        (GOOD.replace('Route("iv", "central")', 'Route("iv", "centrl")'), "m.py:make", ["m.py, line", "unknown state 'centrl'"]),
        (GOOD.replace("+ rate[0]])", "+ rate[0] + jnp.log(1.0 - y[0])])"), "m.py:make", ["m.py:make", "-inf", "dcentral/dt"]),
        (GOOD.replace('y[0] / p["v"], ""', 'y[0] / (p["v"] - 10.0), ""'), "m.py:make", ["observable 'conc_mg_per_l'", "nan"]),
    ],
    ids=["missing file", "missing factory", "syntax error", "import fails", "factory raises", "not a model",
         "wrong shape", "unknown state", "inf in the vector field", "nan in an observable"],
)
def test_a_broken_model_file_is_named(tmp_path, text, reference, expected):
    write(tmp_path, text)
    message = problem(reference, tmp_path)
    for part in expected:
        assert part in message, message


def test_configs_resolve_a_model_file_against_their_folder(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    folder.mkdir()
    write(folder, GOOD, "pk.py")
    (folder / "trial.toml").write_text(textwrap.dedent("""\
        kind = "trial"
        model = "pk.py:make"
        animals_per_arm = 2
        [[arms]]
        name = "10 mg"
        doses = [{ type = "bolus", amount = 10, route = "iv" }]
        [output]
        end_h = 4
        every_h = 1
    """))
    monkeypatch.chdir(tmp_path)  # not the config's folder
    assert vt.check_config(folder / "trial.toml")["kind"] == "trial"
    (folder / "trial.toml").write_text((folder / "trial.toml").read_text().replace("pk.py", "nope.py"))
    with pytest.raises(SpecError, match="nope.py.*not found"):
        vt.check_config(folder / "trial.toml")


def test_vtrial_model_exit_2_on_a_broken_file(tmp_path):
    write(tmp_path, GOOD + "\ndef other():\n    return 42\n")
    result = CliRunner().invoke(app, ["model", f"{tmp_path / 'm.py'}:other"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    assert "must return a vtrial.models.Model" in text and "Traceback" not in text


def test_vtrial_model_prints_the_card_without_checks():
    result = CliRunner().invoke(app, ["model", "two_compartment", "--no-check"])
    assert result.exit_code == 0, result.output
    for word in ("states", "parameters", "routes", "observables", "covariates", "endpoints", "v1", "conc_mg_per_l"):
        assert word in result.output


@pytest.mark.slow
def test_vtrial_model_checks_pass_and_a_wrong_linear_pk_fails_with_5(tmp_path):
    linear = GOOD.replace("from vtrial.models import", "from vtrial.models.linear_pk import LinearPK, MammillaryConstants\nfrom vtrial.models import").replace(
        '        report_time_unit="h",',
        '        report_time_unit="h",\n        linear_pk=LinearPK((), "central", (), lambda p: MammillaryConstants('
        'jnp.zeros(0), FACTOR * p["cl"], p["v"], jnp.zeros(0), jnp.zeros(0))),')
    write(tmp_path, "FACTOR = 1.0\n" + linear, "ok.py")
    write(tmp_path, "FACTOR = 1.5\n" + linear, "wrong.py")
    runner = CliRunner()
    ok = runner.invoke(app, ["model", f"{tmp_path / 'ok.py'}:make"])
    assert ok.exit_code == 0, ok.output
    for name in ("jit", "vmap", "gradients", "linear_pk"):
        assert f"pass {name}" in ok.output
    wrong = runner.invoke(app, ["model", f"{tmp_path / 'wrong.py'}:make"])
    assert wrong.exit_code == 5, wrong.output
    text = " ".join(wrong.output.split())
    assert "FAIL linear_pk" in text and "pass gradients" in text


def test_a_model_with_individual_parameters_loads_and_passes_its_checks():
    """A model that computes its parameters from covariates (NONMEM's $PK: pheno's
    CL = THETA1*WGT, V = ...) is checked with its derived quantities: loading (the
    vector field at the typical values) and every check of `vtrial model` (jit, vmap,
    gradients, its linear PK against the ODE) pass."""
    from vtrial.jobs.model_check import check_model_code

    model = load_model("pheno.py:pheno", Path(__file__).parent / "models")
    results = check_model_code(model)
    assert [r.name for r in results] == ["jit", "vmap", "gradients", "linear_pk"]
    assert all(r.passed for r in results), [r.detail for r in results if not r.passed]
