"""NONMEM's own predictions for every PREDPP dosing record (../shared/data/nmtests).

The model (NONMEM ADVAN2, `tests/models/nmtests_model.py`) predicts every observation
row of the 29 dosing scenarios and the time-varying-weight scenario, read with the
NONMEM dataset reader, within 2e-4 x |NONMEM| + 1e-3 (NONMEM printed 5 significant
digits): one test per scenario, named by its description, on the closed-form path and
on the ODE path (`SolverOptions(pk="ode")`), and by superposition. All scenarios of one path are one vmapped
call (records padded), so each path compiles once. Also: gradients through steady-state
doses against central differences, and the same predictions from the batched runner on
1 and on 2 devices.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from vtrial.engine.runner import simulate_population
from vtrial.engine.solve import SolverOptions, observe_animal, solve_animal
from vtrial.io.nonmem import read_nonmem

sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))
from nmtests_model import nmtests_model  # noqa: E402

from conftest import shared_data, shared_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_dir() / "data" / "nmtests"


@pytest.fixture(autouse=True)
def _reference_data():
    """Skipped without ../shared/data/nmtests, a failure with CI=true (`shared_data`)."""
    shared_data("data/nmtests")


# Without the data one placeholder scenario stands in, so that the tests are collected and
# `_reference_data` skips them (or fails them in CI) instead of pytest skipping an empty set.
SCENARIOS = (
    [(int(s.ID), str(s.descr)) for s in pd.read_csv(DATA / "dosing_1001_scenarios.csv").itertuples(index=False)]
    if DATA.is_dir() else [(0, "reference data absent")]
)
#: The closed form (events as jumps of one solve), the ODE path (one solve per segment) and
#: superposition (what the population estimator uses for a model that is linear PK alone).
PATHS = {"closed_form": SolverOptions(), "ode": SolverOptions(pk="ode"), "superposition": SolverOptions(events="superposition")}


def within_nonmem_precision(predicted: np.ndarray, nonmem: np.ndarray, where: np.ndarray) -> None:
    """Every prediction within 2e-4 x |NONMEM| + 1e-3, else the worst rows are named."""
    excess = np.abs(predicted - nonmem) - (2e-4 * np.abs(nonmem) + 1e-3)
    bad = np.flatnonzero(~(excess <= 0))
    assert bad.size == 0, "; ".join(f"{where[i]}: {predicted[i]:.6g} vs NONMEM {nonmem[i]:.6g}" for i in bad[:5])


def _predict(model, data, options):
    params = {k: np.full(data.n_subjects, v, float) for k, v in model.typical_values().items()}
    params.update(data.covariates)

    def one(p, doses, times):
        sol = solve_animal(model, p, doses, times, options=options)
        return observe_animal(model, p, doses, sol.states, times)["cp"], sol.status

    cp, status = jax.jit(jax.vmap(one))(params, data.doses, data.obs_time_h)
    return np.asarray(cp), np.asarray(status)


@functools.cache
def dosing_predictions(path: str):
    """(data, predictions (n_subjects, n_obs), status) of every dosing scenario on `path`."""
    model = nmtests_model()
    data = read_nonmem(DATA / "dosing_1001_data.csv", model, dv_required=False)
    cp, status = _predict(model, data, PATHS[path])
    return data, cp, status


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("scenario", [s for s, _ in SCENARIOS], ids=[d for _, d in SCENARIOS])
def test_dosing_scenario_matches_nonmem(path, scenario):
    data, cp, status = dosing_predictions(path)
    s = int(np.flatnonzero(np.asarray(data.ids) == scenario)[0])
    assert status[s] == 0
    nonmem = pd.read_csv(DATA / "dosing_1001_nonmem.csv")
    mask = data.obs_mask[s]
    rows = data.obs_row[s][mask]
    within_nonmem_precision(cp[s][mask], nonmem.CP.to_numpy()[rows - 1], np.array([f"row {r}" for r in rows]))


@pytest.mark.parametrize("path", ["closed_form", "ode"])
def test_time_varying_weight_matches_nonmem(path):
    """WT changes from record to record; CL = 1.1 (WT/70)^0.75 holds each record's value
    over the interval that ends at it (NONMEM's next observation carried back)."""
    model = nmtests_model(weight=True)
    data = read_nonmem(DATA / "timevarying_2001_data.csv", model, {"covariates": {"wt": "WT"}}, dv_required=False)
    assert data.doses.nonmem.changes is not None
    cp, status = _predict(model, data, PATHS[path])
    assert status.tolist() == [0]
    nonmem = pd.read_csv(DATA / "timevarying_2001_nonmem.csv")
    rows = data.obs_row[0][data.obs_mask[0]]
    within_nonmem_precision(cp[0][data.obs_mask[0]], nonmem.CP.to_numpy()[rows - 1], np.array([f"row {r}" for r in rows]))


@pytest.mark.parametrize("path", ["closed_form", pytest.param("ode", marks=pytest.mark.long)])
def test_gradients_through_steady_state_match_central_differences(path):
    """d(sum of CP)/d(CL, KA, LAGT) through SS infusions with II < duration (scenario 12),
    SS boluses with lag and F (15) and an EVID 4 SS record with lag (23)."""
    model = nmtests_model()
    data = read_nonmem(DATA / "dosing_1001_data.csv", model, dv_required=False)
    picks = [int(np.flatnonzero(np.asarray(data.ids) == s)[0]) for s in (12, 15, 23)]
    sub = data.take(np.array(picks))
    lagt = model.covariate_names.index("lagt")
    covariates = sub.doses.nonmem.covariates.copy()
    covariates[:, :, lagt] = np.nan  # the lag from p (the differentiated value)
    doses = sub.doses._replace(nonmem=sub.doses.nonmem._replace(covariates=covariates))
    times = np.array([0.5, 3.0, 7.0, 30.0])
    options = PATHS[path]

    def totals(x):
        def one(cov, doses):
            p = {**model.typical_values(), **cov, "cl": x[0], "ka": x[1], "lagt": x[2]}
            sol = solve_animal(model, p, doses, times, options=options)
            return observe_animal(model, p, doses, sol.states, times)["cp"].sum()

        return jax.vmap(one)(*jax.tree_util.tree_map(jnp.asarray, (dict(sub.covariates), doses)))

    x0 = np.array([1.1, 1.5, 2.0])
    grad = np.asarray(jax.jit(jax.jacrev(totals))(x0))  # (subjects, parameters)
    f = jax.jit(totals)
    h = 1e-5 * x0
    central = np.stack([(f(x0 + h[i] * np.eye(3)[i]) - f(x0 - h[i] * np.eye(3)[i])) / (2 * h[i]) for i in range(3)], axis=1)
    np.testing.assert_allclose(grad, central, rtol=1e-5, atol=1e-7 * np.max(np.abs(central)))


_TWO_DEVICES = """
import sys, numpy as np, jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, sys.argv[1])
import test_nmtests as t
assert jax.device_count() == 2
np.save(sys.argv[2], t.runner_predictions())
"""


def runner_predictions() -> np.ndarray:
    """CP of every dosing scenario on one shared time grid, from the batched runner (split
    over every device there is)."""
    model = nmtests_model()
    data = read_nonmem(DATA / "dosing_1001_data.csv", model, dv_required=False)
    params = {k: np.full(data.n_subjects, v, float) for k, v in model.typical_values().items()}
    params.update(data.covariates)
    grid = np.unique(data.obs_time_h[data.obs_mask])
    sol = simulate_population(model, params, data.doses, grid, chunk_size=32, states=False)
    assert np.all(sol.status == 0)
    return np.asarray(sol.observables["cp"])


@pytest.mark.slow
def test_runner_gives_the_same_predictions_on_one_and_two_devices(tmp_path):
    one = runner_predictions()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=str(ROOT))
    out = tmp_path / "two.npy"
    script = tmp_path / "two.py"
    script.write_text(_TWO_DEVICES)
    run = subprocess.run([sys.executable, str(script), str(Path(__file__).parent), str(out)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    two = np.load(out)
    np.testing.assert_allclose(two, one, rtol=1e-12, atol=1e-9)
    # and the runner agrees with the per-scenario predictions (a grid holds every time)
    data, cp, _ = dosing_predictions("closed_form")
    grid = np.unique(data.obs_time_h[data.obs_mask])
    for s in range(data.n_subjects):
        m = data.obs_mask[s]
        np.testing.assert_allclose(one[s][np.searchsorted(grid, data.obs_time_h[s][m])], cp[s][m], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", ["closed_form", "ode"])
def test_vtrial_predict_with_the_model_file_reproduces_every_scenario(path, tmp_path):
    """The user's route: a fit config naming the model file (tests/models/nmtests_fit.toml,
    values used as given) and `vtrial predict` on NONMEM's dataset as it is: every
    observation row of the 29 dosing scenarios within NONMEM's printed precision."""
    from vtrial.jobs.predict import predict

    config = ROOT / "tests" / "models" / "nmtests_fit.toml"
    if path == "ode":  # the same config on the ODE path (its model named by absolute path)
        text = config.read_text().replace('"nmtests_model.py:', f'"{config.parent / "nmtests_model.py"}:')
        config = tmp_path / "nmtests_fit_ode.toml"
        config.write_text(text + '\n[solver]\npk = "ode"\n')
    result = predict(config, DATA / "dosing_1001_data.csv")
    nonmem = pd.read_csv(DATA / "dosing_1001_nonmem.csv")
    observed = result.table["evid"].astype(int).to_numpy() == 0
    where = np.array([f"ID {i} TIME {t}" for i, t in zip(nonmem["ID"], nonmem["TIME"])])[observed]
    within_nonmem_precision(result.table["PRED"].to_numpy(float)[observed], nonmem["CP"].to_numpy(float)[observed], where)
