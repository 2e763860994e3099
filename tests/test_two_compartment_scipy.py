"""Two-compartment model with first-order absorption against an independent scipy solve.

The reference below shares nothing with vtrial but the parameter names: its own
right-hand side (a 3x3 linear system plus the infusion rate), its own dose bookkeeping
(F, lag, mg/kg, infusion rate) and scipy's implicit Radau at rtol 1e-11, integrated
piecewise between dose events.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import PK_PATHS, solver_options
from scipy.integrate import solve_ivp

import vtrial as vt

MODEL = vt.models.two_compartment(absorption=True)
TIMES = np.array([0.5, 1.0, 2.0, 3.0, 4.5, 6.0, 8.0, 10.0, 12.2, 14.0, 18.0, 24.5, 30.0, 36.0, 48.0])
ANIMALS = pd.DataFrame(
    {
        "arm": ["sc+iv", "sc+iv"],
        "animal": [0, 1],
        "ka": [1.1, 0.4],
        "f": [0.6, 0.9],
        "alag": [0.35, 0.0],
        "cl": [0.12, 0.3],
        "v1": [0.9, 1.4],
        "q": [0.3, 0.1],
        "v2": [2.5, 1.0],
        "bw": [0.22, 0.31],
    }
)
# 1.5 mg/kg s.c. every 12 h x 3, plus 0.8 mg i.v. over 4 h from 5 h
SC_MG_PER_KG, SC_EVERY, SC_COUNT = 1.5, 12.0, 3
INF_MG, INF_START, INF_DURATION = 0.8, 5.0, 4.0
REGIMEN = vt.Regimen(
    (
        vt.Bolus(SC_MG_PER_KG, unit="mg/kg", route="sc", every_h=SC_EVERY, count=SC_COUNT),
        vt.Infusion(duration_h=INF_DURATION, start_h=INF_START, amount=INF_MG, unit="mg", route="iv"),
    )
)


def scipy_reference(p: dict, times: np.ndarray) -> np.ndarray:
    """Central concentration (mg/L) at `times` (none of which is an event time)."""
    k10, k12, k21 = p["cl"] / p["v1"], p["q"] / p["v1"], p["q"] / p["v2"]
    a = np.array(
        [
            [-p["ka"], 0.0, 0.0],
            [p["ka"], -(k10 + k12), k21],
            [0.0, k12, -k21],
        ]
    )
    infusion_rate = INF_MG / INF_DURATION
    boluses = {}  # time -> amount into the depot
    for i in range(SC_COUNT):
        t = i * SC_EVERY + p["alag"]
        boluses[t] = boluses.get(t, 0.0) + p["f"] * SC_MG_PER_KG * p["bw"]
    breaks = sorted({0.0, INF_START, INF_START + INF_DURATION, *boluses, float(times[-1])})
    y = np.zeros(3)
    out = np.full(times.shape, np.nan)
    for lo, hi in zip(breaks[:-1], breaks[1:]):
        y = y + np.array([boluses.get(lo, 0.0), 0.0, 0.0])
        r = np.array([0.0, infusion_rate if INF_START <= lo < INF_START + INF_DURATION else 0.0, 0.0])
        inside = (times > lo) & (times <= hi)
        t_eval = np.unique(np.append(times[inside], hi))  # the outputs, then the segment end
        sol = solve_ivp(
            lambda t, y: a @ y + r, (lo, hi), y, method="Radau", jac=lambda t, y: a,
            t_eval=t_eval, rtol=1e-11, atol=1e-14,
        )
        assert sol.success, sol.message
        out[inside] = sol.y[1, : inside.sum()] / p["v1"]
        y = sol.y[:, -1]
    assert np.all(np.isfinite(out))
    return out


@pytest.fixture(scope="module", params=PK_PATHS)
def result(request):
    """Both solve paths: closed-form linear PK (the default) and the diffrax ODE path."""
    return vt.simulate(
        MODEL, [vt.Arm("sc+iv", REGIMEN, 2)], animals=ANIMALS, times_h=TIMES,
        options=solver_options(request.param, rtol=1e-10, atol=1e-12),
    )


@pytest.fixture(scope="module")
def references():
    return [scipy_reference(ANIMALS.iloc[row].to_dict(), TIMES) for row in range(len(ANIMALS))]


def test_reference_is_not_trivial(references):
    for ref in references:
        assert np.all(ref > 0) and ref.max() / ref.min() > 5
    assert not np.allclose(references[0], references[1], rtol=0.1)


@pytest.mark.parametrize("row", [0, 1])
def test_two_compartment_matches_scipy(result, references, row):
    assert list(result.animals["status"]) == ["ok", "ok"]
    ref = references[row]
    got = result.solution.observables["conc_mg_per_l"][row]
    np.testing.assert_allclose(got, ref, rtol=1e-6)
