"""A population fit's own power covariate effects (`[[covariate_effects]]`) follow a
covariate that changes within a subject (NONMEM's next observation carried back), as the
same effect written in a model's $PK does."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vtrial.design.population import CovariateEffect, ResidualError
from vtrial.engine.solve import SolverOptions, observe_animal, solve_animal
from vtrial.estimation import population
from vtrial.estimation.population_spec import EstimationSpec, unpack
from vtrial.io.nonmem import read_nonmem
from vtrial.models.base import Covariate

sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))
from nmtests_model import nmtests_model  # noqa: E402

# WT 70 up to 6 h, 50 over (6, 12], 90 after (each row's value holds for the interval ending at it).
DATA = """ID,TIME,AMT,EVID,CMT,DV,MDV,WT
1,0,100,1,1,.,1,70
1,2,.,0,2,1,0,70
1,6,.,0,2,1,0,70
1,9,.,0,2,1,0,50
1,12,.,0,2,1,0,50
1,18,.,0,2,1,0,90
1,24,.,0,2,1,0,90
"""


@pytest.mark.long
def test_power_effect_follows_a_weight_that_changes(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(DATA)
    written = nmtests_model(weight=True)  # CL = 1.1 (WT/70)^0.75 in the model
    plain = nmtests_model()
    plain = dataclasses.replace(plain, covariates=plain.covariates + (Covariate("wt", "kg", 70.0, "body weight"),))
    spec = EstimationSpec(typical={"cl": 1.1, "v": 20.0, "ka": 1.5}, omega2={"cl": 0.1},
                          covariate_effects=(CovariateEffect("cl", "wt", 70.0, 0.75),),
                          residual={"cp": ResidualError(additive=1.0)})
    mapping = {"covariates": {"wt": "WT"}}
    data = read_nonmem(path, plain, mapping)
    assert data.doses.nonmem.changes is not None
    prep = population.prepare_problem(plain, data, spec, "foce", SolverOptions())
    u = unpack(prep.layout, prep.constants, jnp.asarray(prep.x0))
    s = jax.tree_util.tree_map(lambda a: jnp.asarray(a)[0], prep.arrays)
    eta = jnp.asarray([0.2])
    f, status = jax.jit(lambda s, e: prep.problem.predict(u, prep.constants, s, e))(s, eta)
    assert int(status) == 0

    reference = read_nonmem(path, written, mapping)
    p = {**written.typical_values(), **{k: v[0] for k, v in reference.covariates.items()}, "cl": 1.1 * np.exp(0.2)}
    doses = jax.tree_util.tree_map(lambda a: jnp.asarray(a)[0], reference.doses)
    times = jnp.asarray(reference.obs_time_h[0])
    sol = solve_animal(written, p, doses, times, options=SolverOptions(events="split"))
    expected = observe_animal(written, p, doses, sol.states, times)["cp"] * prep.constants.dv_scale[0]
    np.testing.assert_allclose(np.asarray(f), np.asarray(expected), rtol=1e-7)
    # with the first weight (70 kg) throughout, as before, the late predictions differ
    constant = {**p, "wt": 70.0}
    sol = solve_animal(written, constant, doses._replace(nonmem=doses.nonmem._replace(changes=None)), times)
    assert abs(float(sol.states[-1, 1]) / 20.0 * 1000.0 * prep.constants.dv_scale[0] / float(f[-1]) - 1) > 0.05
    # the FOCE gradient of the predictions wrt eta goes through the changes too (finite)
    g = jax.jit(jax.jacfwd(lambda e: prep.problem.predict(u, prep.constants, s, e)[0]))(eta)
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g[-1, 0])) > 0
