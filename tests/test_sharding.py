"""Devices, processes and cost grouping: none of them changes a result.

- ordering animals by expected cost (or any order) gives bitwise the same results, and
  grouping vehicle with vehicle lowers the lockstep waste;
- one process with 4 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=4)
  writes the same outputs as 1 device (to 1e-12: the per-device batch shape differs);
- two processes on 127.0.0.1 (jax.distributed, gloo) write, from process 0, the same
  outputs as one process.

The multi-device runs are `vtrial run` subprocesses (the device count is fixed when JAX
starts) on a small CIA-1 population; the reference runs in this process (1 device).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import vtrial as vt
from vtrial.cli import app
from vtrial.io.trial_config import BuiltTrial
from vtrial.engine.runner import simulate_population
from vtrial.design.trial import prepare_trial

from conftest import free_port, trial_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "cia_rat_liu2011.toml"
ARGS = ["--animals-per-arm", "3", "--seed", "7", "--chunk-size", "6"]
TIMEOUT_S = 150


def cia(animals_per_arm: int) -> BuiltTrial:
    return BuiltTrial(trial_config(CONFIG), animals_per_arm)


@pytest.mark.long  # a validation over two animal orders of a CIA-1 population
def test_cost_order_is_bitwise_neutral_and_cuts_waste():
    built = cia(4)
    vehicle, pump = built.arms[0], built.arms[2]
    arms = [vt.Arm("v1", vehicle.regimen, 4), vt.Arm("p1", pump.regimen, 4), vt.Arm("v2", vehicle.regimen, 4), vt.Arm("p2", pump.regimen, 4)]
    inputs = prepare_trial(built.model, arms, built.population, times_h=built.times_h, seed=3)
    run = {
        order: simulate_population(built.model, inputs.params, inputs.doses, built.times_h, options=built.options, chunk_size=8, order=o)
        for order, o in (("cost", "cost"), ("input", "input"), ("shuffled", np.random.default_rng(0).permutation(16)))
    }
    ref = run["cost"]
    for other in ("input", "shuffled"):
        sol = run[other]
        np.testing.assert_array_equal(sol.states, ref.states)
        for name in ref.observables:
            np.testing.assert_array_equal(sol.observables[name], ref.observables[name])
        np.testing.assert_array_equal(sol.status, ref.status)
        np.testing.assert_array_equal(sol.n_steps, ref.n_steps)
    steps = ref.n_steps
    assert steps[inputs.animals["arm"].isin(["v1", "v2"])].max() < steps[inputs.animals["arm"].isin(["p1", "p2"])].min()
    assert ref.steps_mean == pytest.approx(steps.mean()) and ref.steps_max == steps.max()
    # cost order: [v1 v2] [p1 p2]; input order: [v1 p1] [v2 p2], where vehicle lanes wait for the pump lanes
    vehicle_max, pump_max = max(steps[:4].max(), steps[8:12].max()), max(steps[4:8].max(), steps[12:].max())
    assert ref.lockstep_waste == pytest.approx(1 - steps.sum() / (8 * vehicle_max + 8 * pump_max))
    assert 0 <= ref.lockstep_waste < run["input"].lockstep_waste < 1


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The outputs of one process on one device."""
    assert jax.device_count() == 1
    out = tmp_path_factory.mktemp("ref") / "one"
    result = CliRunner().invoke(app, ["run", str(CONFIG), "--out", str(out), *ARGS], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def vtrial_run(out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    env = {
        **{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(ROOT / ".jax_cache"),
        "VTRIAL_CPU_DEVICES": "1",  # one device per process unless a test asks for more
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "vtrial.cli", "run", str(CONFIG), "--out", str(out), *ARGS, *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def finish(*procs: subprocess.Popen) -> list[str]:
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, text
    return outputs


def assert_same_outputs(got: Path, ref: Path):
    """Every output file of `got` equals `ref`'s: exactly where nothing is computed on a
    device, to 1e-10 of the largest value where the per-device batch shape may differ (the
    integrated AUC states of the exposure endpoints take part in the step-size control, so
    a rounding difference moves the steps and the PD states by up to ~1e-10)."""
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in ref.iterdir())
    a, b = pd.read_parquet(got / "animals.parquet"), pd.read_parquet(ref / "animals.parquet")
    pd.testing.assert_frame_equal(a, b)  # parameters, status, n_steps: exact
    for name in ("trajectories.parquet", "observations.parquet", "summary.csv", "endpoints.csv"):
        read = pd.read_parquet if name.endswith(".parquet") else pd.read_csv
        x, y = read(got / name), read(ref / name)
        assert list(x.columns) == list(y.columns) and len(x) == len(y)
        for col in x.columns:
            if x[col].dtype.kind == "f":
                scale = np.nanmax(np.abs(y[col].to_numpy())) or 1.0
                np.testing.assert_allclose(x[col], y[col], rtol=1e-10, atol=1e-10 * scale, err_msg=f"{name}:{col}")
            else:
                np.testing.assert_array_equal(x[col], y[col], err_msg=f"{name}:{col}")


def test_four_devices_equal_one(reference, tmp_path):
    out = tmp_path / "four"
    finish(vtrial_run(out, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}))
    assert_same_outputs(out, reference)
    info = json.loads((out / "run.json").read_text())
    assert info["devices"] == 4 and info["processes"] == 1 and info["chunk_size"] == 6 and info["n_chunks"] == 2


@pytest.mark.long  # starts two JAX processes (multi-process runtime): a validation
def test_two_processes_equal_one(reference, tmp_path):
    out = tmp_path / "two"
    coordinator = f"127.0.0.1:{free_port()}"
    procs = [vtrial_run(out, "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i)) for i in (0, 1)]
    finish(*procs)
    assert_same_outputs(out, reference)
    info = json.loads((out / "run.json").read_text())
    assert info["devices"] == 2 and info["processes"] == 2 and info["chunks_computed"] == 2
    assert not any(p.name.startswith(".two") for p in tmp_path.iterdir())


def test_multiprocess_options_are_checked(tmp_path):
    result = CliRunner().invoke(app, ["run", str(CONFIG), "--out", str(tmp_path / "x"), "--num-processes", "2", "--process-id", "1"])
    assert result.exit_code == 2 and "--coordinator" in result.output
    result = CliRunner().invoke(app, ["run", str(CONFIG), "--out", str(tmp_path / "x"), "--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"])
    assert result.exit_code == 2 and "HOST:PORT" in result.output
    assert not (tmp_path / "x").exists()


def test_lapack_safe_chunks_in_the_runner_change_nothing(monkeypatch):
    """The runner takes the animals of one device in LAPACK-safe chunks on the CPU
    (`vtrial.engine.lapack`: a larger batch of CIA-1's 4 x 4 mode factorisations hung
    `vtrial run` at 10,000 animals per device). With the work bound lowered to 4 animals,
    batches of 10 go in three chunks (the last one padded); every number is the one-batch one."""
    from vtrial.engine import lapack, runner

    built = cia(3)
    inputs = prepare_trial(built.model, [vt.Arm(a.name, a.regimen, 3) for a in built.arms], built.population, times_h=built.times_h, seed=5)
    reference = simulate_population(built.model, inputs.params, inputs.doses, built.times_h, options=built.options, chunk_size=10)
    n_pk = len(built.model.linear_pk.states)
    seen = []
    real = lapack.map_in_chunks
    # The chunking is decided at trace time: a solve read back from the export cache (an
    # earlier run of this test) is not traced, so the spy would see nothing.
    monkeypatch.setenv("VTRIAL_EXPORT_CACHE", "0")
    monkeypatch.setattr(lapack, "LAPACK_PARALLEL_WORK", 5 * n_pk**3)
    monkeypatch.setattr(lapack, "map_in_chunks", lambda fn, n, most, *a: seen.append((n, most)) or real(fn, n, most, *a))
    runner.clear_compiled()
    chunked = simulate_population(built.model, inputs.params, inputs.doses, built.times_h, options=built.options, chunk_size=10)
    runner.clear_compiled()
    assert seen and all(call == (10, 4) for call in seen)
    np.testing.assert_allclose(chunked.states, reference.states, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(chunked.status, reference.status)
