"""The README's quick example runs as written and produces sensible results.

The code is taken from README.md (the first ```python block), so the README cannot
drift from the API without this test failing.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT

import vtrial as vt


def readme_example() -> str:
    readme = REPO_ROOT / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    match = re.search(r"^```python[ \t]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    if match is None:
        pytest.skip("README.md has no ```python block (the quick example) yet")
    return match.group(1)


@pytest.fixture(scope="module")
def namespace():
    code = readme_example()
    ns: dict = {"__name__": "readme_example"}
    exec(compile(code, "README.md:quick-example", "exec"), ns)
    return ns


def of_type(ns, cls):
    return [v for k, v in ns.items() if isinstance(v, cls) and not k.startswith("_")]


def test_example_is_short():
    assert len([line for line in readme_example().splitlines() if line.strip()]) <= 20


def test_example_simulates_a_trial(namespace):
    results = of_type(namespace, vt.SimulationResult)
    assert len(results) == 1, "the example should define one SimulationResult"
    res = results[0]
    assert len(res.animals) >= 1
    assert (res.animals["status"] == "ok").all(), res.animals["status"].value_counts()
    conc = res.solution.observables["conc_mg_per_l"]
    assert np.all(np.isfinite(conc)) and np.all(conc >= 0) and conc.max() > 0
    # the animals differ (the population has variability)
    if len(res.animals) > 1 and res.population.iiv_names:
        assert np.unique(conc[:, -1]).size > 1


def test_example_tables(namespace):
    res = of_type(namespace, vt.SimulationResult)[0]
    frames = of_type(namespace, pd.DataFrame)
    assert frames, "the example should build at least one table"
    n_rows = len(res.animals) * res.times_h.size
    for frame in frames:
        assert {"arm", "animal", "time_h"} <= set(frame.columns)
        assert len(frame) == n_rows
    pred = res.to_frame()
    for frame in frames:
        for name in res.solution.observables:
            if name in frame.columns and name in res.population.residual:
                diff = (frame[name] - pred[name]).to_numpy()
                if np.any(diff != 0):  # an observations() table: noise added, finite
                    assert np.all(np.isfinite(diff))
