"""`vtrial.run_config`, the one run call, tested as a library (the CLI only parses and prints).

- a run returns a record of what it wrote; bad input raises before anything is written;
- an interrupted run keeps its finished chunks, and `resume=True` completes it to the
  outputs of an uninterrupted run; other settings are refused, naming the difference;
- two processes calling `run_config` with JAX's distributed runtime write, from process 0,
  the outputs of one process.

A one-compartment oral PK trial keeps it cheap (closed form: no ODE steps).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import vtrial as vt
from vtrial.io.run_folder import MANIFEST, output_folder, partial_folder

from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"wall_seconds", "compile_seconds", "run_seconds", "command", "chunks_computed", "chunks_resumed"}

CONFIG = {
    "kind": "trial",
    "name": "pk_lib",
    "model": "one_compartment_absorption",
    "seed": 11,
    "animals_per_arm": 12,
    "chunk_size": 4,
    "variability": {"cv_percent": {"cl": 30, "v": 20}},
    "covariates": {"bw": {"median": 0.25, "cv_percent": 10}},
    "residual": {"conc_mg_per_l": {"proportional": 0.1, "additive": 0.01}},
    "arms": [
        {"name": "vehicle", "doses": []},
        {"name": "oral", "doses": [{"type": "bolus", "route": "oral", "amount": 5, "unit": "mg/kg", "every_h": 12, "count": 2}]},
    ],
    "output": {"end_h": 36, "every_h": 2},
    "sampling": {"conc_mg_per_l": {"times_h": [1, 4, 8, 24]}},
}


def same_outputs(got: Path, ref: Path, ignore=()):
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in ref.iterdir())
    for name in ("trajectories.parquet", "observations.parquet", "animals.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(got / name), pd.read_parquet(ref / name), check_exact=True)
    assert (got / "summary.csv").read_bytes() == (ref / "summary.csv").read_bytes(), "summary.csv"
    # AUCs and peaks are integrated in the vmapped solve (`vtrial.engine.exposure`): where the
    # per-device batch shape changes they may differ by rounding, as the runner documents.
    pd.testing.assert_frame_equal(pd.read_csv(got / "endpoints.csv"), pd.read_csv(ref / "endpoints.csv"), check_exact=False, rtol=1e-12)
    info, ref_info = (json.loads((d / "run.json").read_text()) for d in (got, ref))
    skip = TIMING | set(ignore)
    assert {k: v for k, v in info.items() if k not in skip} == {k: v for k, v in ref_info.items() if k not in skip}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("lib") / "reference"
    return vt.run_config(CONFIG, out=out)


def test_the_record_names_what_was_written(reference):
    assert reference.kind == "trial" and reference.out_dir.is_dir()
    assert reference.files == ("animals.parquet", "endpoints.csv", "observations.parquet", "report.png", "run.json",
                               "summary.csv", "trajectories.parquet")
    assert reference.info == json.loads((reference.out_dir / "run.json").read_text())
    assert reference.facts["n_animals"] == 24 and reference.facts["n_chunks"] == 6
    assert reference.info["config"] == "(in memory)" and not partial_folder(reference.out_dir).exists()


def test_bad_input_writes_nothing(tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(vt.SpecError, match=r"arms\.1\.doses\.0\.route"):
        vt.run_config({**CONFIG, "arms": [CONFIG["arms"][0], {"name": "x", "doses": [{"type": "bolus", "route": "nasal", "amount": 1}]}]}, out=out)
    with pytest.raises(vt.SpecError, match="--chunk-size"):
        vt.run_config(CONFIG, out=out, chunk_size=0)
    assert list(tmp_path.iterdir()) == []


def test_a_job_without_out_writes_into_runs_named_by_the_time():
    """The default output folder of the jobs that name one (bootstrap, covariates,
    fit-curve, predict): `runs/<name>-<YYYYmmdd-HHMMSS>`; a given `--out` as it is."""
    assert output_folder("elsewhere/mine", "bootstrap-pheno_fit") == Path("elsewhere/mine")
    default = output_folder(None, "bootstrap-pheno_fit")
    assert default.parent == Path("runs") and re.fullmatch(r"bootstrap-pheno_fit-\d{8}-\d{6}", default.name), default


def test_existing_output_folder_is_refused(tmp_path, reference):
    with pytest.raises(vt.SpecError, match="exists and is not empty"):
        vt.run_config(CONFIG, out=reference.out_dir)


def test_interrupted_run_resumes_to_the_same_outputs(tmp_path, reference):
    out = tmp_path / "run"
    calls = []

    def interrupt_after_two(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        vt.run_config(CONFIG, out=out, progress=interrupt_after_two)
    partial = partial_folder(out)
    assert not out.exists() and (partial / MANIFEST).is_file()
    kept = sorted((partial / "chunks").glob("chunk_*.npz"))
    assert len(kept) >= 2

    with pytest.raises(vt.SpecError, match=r"seed \(partial run: 11, now: 12\)"):
        vt.run_config(CONFIG, out=out, seed=12, resume=True)
    assert sorted((partial / "chunks").glob("chunk_*.npz")) == kept  # refused, and kept

    record = vt.run_config(CONFIG, out=out, resume=True)
    assert record.resumed_chunks == len(kept) and record.facts["chunks_resumed"] == len(kept)
    assert record.facts["chunks_computed"] == 6 - len(kept)
    assert not partial.exists()
    same_outputs(out, reference.out_dir)


@pytest.mark.long  # starts two JAX processes (multi-process runtime): a validation
def test_two_processes_calling_the_library_equal_one(tmp_path, reference):
    out = tmp_path / "two"
    coordinator = f"127.0.0.1:{free_port()}"
    script = (
        "import json, sys; import vtrial as vt; "
        "r = vt.run_config(json.loads(sys.argv[1]), out=sys.argv[2], coordinator=sys.argv[3], num_processes=2, "
        "process_id=int(sys.argv[4])); print('OUT', r.out_dir)"
    )
    env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "JAX_PLATFORMS": "cpu",
           "JAX_COMPILATION_CACHE_DIR": str(ROOT / ".jax_cache")}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, json.dumps(CONFIG), str(out), coordinator, str(i)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        for i in (0, 1)
    ]
    texts = []
    try:
        texts = [p.communicate(timeout=150)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], texts
    assert f"OUT {out}" in texts[0] and "OUT None" in texts[1]  # only process 0 writes
    # lockstep_waste depends on the lanes per device (the AUC integration takes solver steps).
    same_outputs(out, reference.out_dir, ignore={"processes", "devices", "device", "lockstep_waste"})
    info = json.loads((out / "run.json").read_text())
    assert info["processes"] == 2 and info["devices"] == 2
