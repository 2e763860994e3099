"""`[covariate_search]` and the covariate-effect shapes are checked before anything is
compiled (`vtrial check`), and the final config's TOML writer round-trips (no JAX)."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest

from vtrial.design.population import CovariateEffect, effect_factor
from vtrial.errors import DataError, SpecError
from vtrial.io.covariate_search import toml_text
from vtrial.jobs import check_config

from batched_fit_data import write_tiny_files

CANDIDATE = """
[covariate_search]
[[covariate_search.candidates]]
parameter = "{parameter}"
covariate = "{covariate}"
shape = "{shape}"
{extra}
"""


def _check(tmp_path, **kw):
    fields = dict(parameter="cl", covariate="bw", shape="power", extra="") | kw
    config, data = write_tiny_files(tmp_path, extra_config=CANDIDATE.format(**fields))
    return check_config(config, data=data)


def test_check_accepts_candidates(tmp_path):
    assert _check(tmp_path)["kind"] == "fit"
    assert _check(tmp_path, shape="categorical", extra="reference = 0.3\nbelow = true")["kind"] == "fit"


@pytest.mark.parametrize("fields, where", [
    (dict(parameter="ka"), "covariate_search.candidates.0.parameter"),
    (dict(covariate="age"), "covariate_search.candidates.0.covariate"),
    (dict(shape="sigmoid"), "covariate_search"),
    (dict(shape="linear", extra="below = true"), "covariate_search"),
    (dict(extra="forward = 0.05"), "covariate_search"),
])
def test_check_names_the_bad_candidate(tmp_path, fields, where):
    with pytest.raises(SpecError) as e:
        _check(tmp_path, **fields)
    assert str(e.value).startswith(where)


def test_candidate_covariate_must_be_in_the_dataset(tmp_path):
    config, data = write_tiny_files(tmp_path, extra_config=CANDIDATE.format(parameter="cl", covariate="bw", shape="power", extra=""))
    config.write_text(config.read_text().replace('bw = "BW"', 'bw = "WEIGHT"'))
    with pytest.raises((SpecError, DataError), match="WEIGHT"):
        check_config(config, data=data)


def test_effect_shapes():
    x = np.array([0.5, 1.0, 2.0])
    np.testing.assert_allclose(effect_factor("power", x, 1.0, 0.75), x**0.75)
    np.testing.assert_allclose(effect_factor("linear", x, 1.0, 0.5), 1 + 0.5 * (x - 1))
    np.testing.assert_allclose(effect_factor("exponential", x, 1.0, 0.5), np.exp(0.5 * (x - 1)))
    np.testing.assert_allclose(effect_factor("categorical", x, 1.0, 0.5), [1.5, 1.0, 1.5])
    np.testing.assert_allclose(effect_factor("categorical_below", x, 1.0, 0.5), [1.5, 1.0, 1.0])
    for kind in ("power", "linear", "exponential", "categorical", "categorical_below"):
        np.testing.assert_allclose(effect_factor(kind, x, 1.0, 0.0), 1.0)  # 0: no effect
    assert CovariateEffect("v", "apgr", 5, 0.1, "categorical", below=True).kind == "categorical_below"
    with pytest.raises(SpecError, match="below"):
        CovariateEffect("v", "apgr", 5, 0.1, "linear", below=True)
    with pytest.raises(SpecError, match="reference"):
        CovariateEffect("v", "sex", 0, 0.1)  # a power effect needs a reference > 0
    CovariateEffect("v", "sex", 0, 0.1, "categorical")  # a reference category may be 0


def test_toml_text_round_trips():
    table = {"kind": "fit", "model": "a.py:b", "fixed": [], "parameters": {"cl": 0.1, "apgr_v": 1e-300},
             "bounds": {"apgr_v": [-0.99, math.inf]}, "data": {"routes": {"iv": [1]}, "covariates": {"wgt": "WGT"}},
             "covariate_effects": [{"parameter": "cl", "covariate": "wgt", "reference": 1.3, "exponent": 0.8, "estimate": True}]}
    assert tomllib.loads(toml_text(table)) == table


def test_toml_text_escapes_control_characters_and_quotes_keys():
    """A description with a newline, a tab or any other control character, and keys TOML
    cannot write bare (spaces, dots, non-ASCII letters, quotes), survive the round trip."""
    text = "line one\nline two\ttabbed \\ back \"quoted\" \x00\x1f\x7f é"
    table = {"description": text, "parameters": {"weird key": 1.0, "a.b": 2.0, "é": 3.0, 'q"uote\n': 4.0, "": 5.0},
             "data": {"columns": [text, "plain"]}}
    assert tomllib.loads(toml_text(table)) == table
