"""Output times: any non-decreasing list (duplicates, runs longer than a segment's save
capacity, times on events) gives the analytic values, pre-event at event times."""

import jax.numpy as jnp
import numpy as np
import pytest

import vtrial as vt
from vtrial.engine.solve import SAVES_PER_SEGMENT, solve_animal

MODEL = vt.models.one_compartment(cl=0.1, v=1.0)
DOSES = tuple(jnp.asarray(a[0]) for a in vt.design.dosing.lower_regimens(MODEL, [vt.Regimen((vt.Bolus(1.0, time_h=1.0),))])[:5])
P = {k: jnp.asarray(v) for k, v in MODEL.typical_values().items()}
K = SAVES_PER_SEGMENT


def analytic(ts):
    ts = np.asarray(ts)
    return np.where(ts <= 1.0, 0.0, np.exp(-0.1 * (ts - 1.0)))


CASES = {
    "run of duplicates on the dose time": [0.0, 0.0, 0.5] + [1.0] * (2 * K + 3) + [1.5, 2.0, 2.0],
    "run of duplicates between grid points": [0.2] * (K + 5) + [0.7] * (K + 1) + [1.3] * (2 * K) + [3.0],
    "dense grid across the dose": list(np.linspace(0.0, 3.0, 5 * K + 3)),
    "single time": [2.5],
}


@pytest.mark.parametrize("case", list(CASES))
def test_values_at_any_non_decreasing_times(case):
    ts = jnp.asarray(CASES[case])
    sol = solve_animal(MODEL, P, DOSES, ts, options=vt.SolverOptions(rtol=1e-10, atol=1e-12))
    assert int(sol.status) == 0
    np.testing.assert_allclose(np.asarray(sol.states[:, 0]), analytic(ts), rtol=1e-8, atol=1e-12)
