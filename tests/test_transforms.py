"""Consistency under JAX transforms and batching.

- the vmapped, chunked solve equals a Python loop of single-animal solves;
- jit equals eager;
- `jax.grad` through the solve (w.r.t. a parameter and a dose amount) matches central
  finite differences;
- results and animals do not depend on the chunk size or on how animals are split
  between `Population.sample` calls;
- a second `simulate` with the same shapes compiles nothing.

Everything runs on both solve paths (closed-form linear PK, the default, and the
diffrax ODE path); within a path, one model, population and set of solver options, so
the compiled functions are shared between tests.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import PK_PATHS_DEFAULT_AUTO, solver_options

import vtrial as vt
from vtrial.design.dosing import lower_regimens
from vtrial.engine.runner import simulate_population
from vtrial.engine.solve import solve_animal

MODEL = vt.models.one_compartment(absorption=True, ka=1.2, f=0.8, alag=0.25, cl=0.4, v=1.5)
TIMES = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0])
N = 10
POPULATION = vt.Population.build(
    MODEL,
    cv_percent={"cl": 30.0, "v": 20.0, "ka": 40.0, "alag": 50.0},
    covariates=[vt.CovariateDistribution("bw", 0.25, 0.15)],
    residual={"conc_mg_per_l": vt.ResidualError(additive=0.01, proportional=0.1)},
)


def regimen(oral_mg=2.0):
    return vt.Regimen(
        (
            vt.Bolus(oral_mg, route="oral", every_h=6.0, count=3),
            vt.Infusion(duration_h=2.0, start_h=3.0, rate=4.0, unit="mg/kg/h", route="iv"),
        )
    )


@pytest.fixture(scope="module", params=PK_PATHS_DEFAULT_AUTO)
def options(request):
    return solver_options(request.param, rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def animals():
    return POPULATION.sample(jax.random.PRNGKey(11), N)


@pytest.fixture(scope="module")
def doses():
    return lower_regimens(MODEL, [regimen()] * N)


@pytest.fixture(scope="module")
def batched(animals, doses, options):
    return simulate_population(MODEL, animals, doses, TIMES, options=options, chunk_size=N)


@pytest.fixture(scope="module")
def solve_one(options):
    return jax.jit(lambda p, d, ts: solve_animal(MODEL, p, d, ts, options=options))


def assert_equal_to_rounding(actual, desired):
    """Equal up to 1e-12 relative to the largest value (bitwise is not guaranteed: XLA
    may fuse a batch of 1 and a batch of 10 differently)."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    np.testing.assert_allclose(actual, desired, rtol=1e-12, atol=1e-12 * np.max(np.abs(desired)))


def animal(params, doses, i):
    return {k: v[i] for k, v in params.items()}, tuple(jnp.asarray(a[i]) for a in doses[:5])


def test_population_really_varies(animals, batched):
    assert np.all(batched.status == 0)
    for name in ("cl", "v", "ka", "alag", "bw"):
        assert np.unique(animals[name]).size == N
    assert np.unique(batched.observables["conc_mg_per_l"][:, -1]).size == N


def test_vmap_equals_loop_of_single_solves(animals, doses, batched, solve_one):
    for i in range(N):
        p, d = animal(animals, doses, i)
        sol = solve_one(p, d, jnp.asarray(TIMES))
        assert int(sol.status) == 0
        assert_equal_to_rounding(batched.states[i], sol.states)
        assert int(sol.n_steps) == batched.n_steps[i]


def test_jit_equals_eager(animals, doses, solve_one, options):
    p, d = animal(animals, doses, 3)
    eager = solve_animal(MODEL, p, d, jnp.asarray(TIMES), options=options)
    jitted = solve_one(p, d, jnp.asarray(TIMES))
    assert_equal_to_rounding(eager.states, jitted.states)
    assert int(eager.status) == int(jitted.status) == 0


def test_grad_matches_finite_differences(animals, doses, options):
    """d conc(t=4 h) / d cl and d conc(t=4 h) / d amount of each dose record."""
    p0, d0 = animal(animals, doses, 0)
    i_t = int(np.flatnonzero(TIMES == 4.0)[0])
    grad_options = dataclasses.replace(options, rtol=1e-11, atol=1e-13, max_steps=4096)

    @jax.jit
    def conc(cl, amount):
        p = dict(p0, cl=cl)
        d = (d0[0], amount, *d0[2:])
        sol = solve_animal(MODEL, p, d, jnp.asarray(TIMES), options=grad_options)
        return sol.states[i_t, MODEL.state_index("central")] / p["v"]

    cl, amount = jnp.asarray(p0["cl"]), d0[1]
    g_cl, g_amount = jax.jit(jax.grad(conc, argnums=(0, 1)))(cl, amount)

    h = 1e-4 * float(cl)
    fd_cl = (conc(cl + h, amount) - conc(cl - h, amount)) / (2 * h)
    assert float(g_cl) < 0  # more clearance, less drug
    np.testing.assert_allclose(float(g_cl), float(fd_cl), rtol=1e-5)

    fd_amount = []
    for j in range(amount.shape[0]):
        e = jnp.zeros_like(amount).at[j].set(1e-3)
        fd_amount.append((conc(cl, amount + e) - conc(cl, amount - e)) / 2e-3)
    fd_amount = np.asarray(fd_amount)
    # doses before 4 h matter, the later ones do not
    times = np.asarray(d0[0])
    assert np.all(np.asarray(g_amount)[times < 3.5] > 0)
    assert np.all(np.asarray(g_amount)[times > 4.0] == 0)
    np.testing.assert_allclose(np.asarray(g_amount), fd_amount, rtol=1e-5, atol=1e-12)


@pytest.fixture(scope="module")
def by_chunk_size(options):
    return {
        c: vt.simulate(MODEL, regimen(), POPULATION, times_h=TIMES, n_animals=N, seed=3, options=options, chunk_size=c)
        for c in (1, 3, 7, N)
    }


@pytest.mark.parametrize("chunk_size", [1, 3, 7])
def test_chunk_size_does_not_change_results(by_chunk_size, chunk_size):
    ref, res = by_chunk_size[N], by_chunk_size[chunk_size]
    cols = [*MODEL.parameter_names, *MODEL.covariate_names]
    np.testing.assert_array_equal(res.animals[cols].to_numpy(), ref.animals[cols].to_numpy())
    assert_equal_to_rounding(res.solution.states, ref.solution.states)
    np.testing.assert_array_equal(res.solution.status, ref.solution.status)
    np.testing.assert_array_equal(res.solution.n_steps, ref.solution.n_steps)


def test_same_animals_whatever_the_split():
    key = jax.random.PRNGKey(21)
    whole = POPULATION.sample(key, N)
    parts = [POPULATION.sample(key, 3), POPULATION.sample(key, 3, first_index=3), POPULATION.sample(key, 4, first_index=6)]
    for name, v in whole.items():
        np.testing.assert_array_equal(np.concatenate([part[name] for part in parts]), v)
    # and a different key gives different animals
    other = POPULATION.sample(jax.random.PRNGKey(22), N)
    assert not np.any(other["cl"] == whole["cl"])


def test_second_simulate_does_not_recompile(compile_log, options):
    def run(seed, oral_mg):
        res = vt.simulate(MODEL, regimen(oral_mg), POPULATION, times_h=TIMES, n_animals=N, seed=seed, options=options, chunk_size=N)
        return res, res.observations()

    first, _ = run(0, 2.0)
    with compile_log() as compiled:
        second, obs = run(1, 3.0)  # new animals, new dose: values only, same shapes
    assert compiled == [], f"recompiled: {compiled}"
    assert second.solution.compile_seconds == 0.0
    # and the second run really is a different simulation
    assert not np.allclose(first.solution.states, second.solution.states)
    assert obs["conc_mg_per_l"].notna().all()
