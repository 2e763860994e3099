"""Resumable runs: a `vtrial run` killed (SIGKILL) mid-way and restarted with `--resume`
completes from its finished chunks and ends with the outputs of an uninterrupted run.

Also: a resume with other settings is refused (exit 2, naming what differs) and keeps the
partial run; without `--resume` an old partial folder is discarded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from vtrial.cli import app
from vtrial.io.run_folder import MANIFEST

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "cia_rat_liu2011.toml"
ARGS = ["--animals-per-arm", "25", "--seed", "5", "--chunk-size", "2"]  # 50 chunks
N_CHUNKS = 50
KILL_AFTER = 4  # chunks on disk
TIMING = {"wall_seconds", "compile_seconds", "run_seconds", "command", "chunks_computed", "chunks_resumed"}


def vtrial(out: Path, *extra: str) -> subprocess.Popen:
    env = {
        **{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(ROOT / ".jax_cache"),
    }
    cmd = [sys.executable, "-m", "vtrial.cli", "run", str(CONFIG), "--out", str(out), *ARGS, *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def finished(proc: subprocess.Popen, code: int = 0) -> str:
    try:
        text = proc.communicate(timeout=150)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, text
    return text


def chunk_files(partial: Path) -> list[Path]:
    folder = partial / "chunks"
    return sorted(folder.glob("chunk_*.npz")) if folder.is_dir() else []


def test_killed_run_resumes_to_the_same_outputs(tmp_path):
    out, partial = tmp_path / "run", tmp_path / ".run.partial"
    proc = vtrial(out)
    deadline = time.monotonic() + 120
    while len(chunk_files(partial)) < KILL_AFTER and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.communicate()[0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    kept = chunk_files(partial)
    assert KILL_AFTER <= len(kept) < N_CHUNKS and (partial / MANIFEST).is_file()

    # other settings: refused, naming the difference, and the partial run is kept
    text = finished(vtrial(out, "--resume", "--seed", "6"), code=2)
    assert "seed" in text and "--resume" in text
    assert [p.name for p in chunk_files(partial)] == [p.name for p in kept]

    finished(vtrial(out, "--resume"))
    reference = tmp_path / "reference"
    finished(vtrial(reference))

    info, ref_info = (json.loads((d / "run.json").read_text()) for d in (out, reference))
    assert info["chunks_resumed"] >= len(kept) and info["chunks_computed"] == N_CHUNKS - info["chunks_resumed"]
    assert info["chunks_computed"] < N_CHUNKS and ref_info["chunks_computed"] == N_CHUNKS and ref_info["chunks_resumed"] == 0
    assert {k: v for k, v in info.items() if k not in TIMING} == {k: v for k, v in ref_info.items() if k not in TIMING}
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    assert not partial.exists()
    for name in ("trajectories.parquet", "observations.parquet", "animals.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), pd.read_parquet(reference / name), check_exact=True)
    for name in ("summary.csv", "endpoints.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_without_resume_an_old_partial_run_is_discarded(tmp_path):
    out, partial = tmp_path / "run", tmp_path / ".run.partial"
    (partial / "chunks").mkdir(parents=True)
    (partial / MANIFEST).write_text("{}")
    np.save(partial / "chunks" / "stray.npy", np.zeros(3))
    (partial / "chunks" / "chunk_000000.npz").write_bytes(b"not a chunk")
    result = CliRunner().invoke(app, ["run", str(CONFIG), "--out", str(out), "--animals-per-arm", "1", "--chunk-size", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    assert info["chunks_resumed"] == 0 and info["chunks_computed"] == 2
    assert not partial.exists() and "chunks" not in {p.name for p in out.iterdir()}
