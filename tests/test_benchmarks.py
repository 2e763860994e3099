"""Every benchmark script runs end to end (`--quick`) and writes a complete, finite JSON.

The scripts measure and never assert; this only checks that they work and report what
their docstrings promise. Each is loaded by path (benchmarks/ is no package). Benchmark
runs are long validations (`python -m pytest -m long`, CI's second step)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from conftest import shared_data

pytestmark = pytest.mark.long

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
PK_CONFIG = """
kind = "trial"
model = "one_compartment_absorption"
animals_per_arm = 10
[[arms]]
name = "oral"
doses = [{ type = "bolus", route = "oral", amount = 1 }]
[output]
end_h = 24
every_h = 4
"""


def run(script: str, *args: str) -> dict:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(script, BENCH / f"{script}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main(list(args))
    finally:
        sys.path.remove(str(BENCH))


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def written(out: Path, prefix: str) -> dict:
    (path,) = out.glob(f"{prefix}_*.json")
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files
    report = json.loads(path.read_text())
    assert {"device", "date", "git_revision", "question"} <= set(report)
    assert {"platform", "device_kind", "jax", "cpu_count"} <= set(report["device"])
    return report


def test_speed(tmp_path):
    report = run("bench_speed", "--quick", "--out", str(tmp_path))
    assert report == {k: v for k, v in written(tmp_path, "speed").items() if k in report}
    assert [s["animals_per_arm"] for s in report["sizes"]] == [3]
    for s in report["sizes"]:
        for key in ("compile_seconds", "run_seconds", "run_ms_per_treated_animal", "steps_mean", "lockstep_waste", "speedup_vs_ode"):
            assert finite(s[key]), key
        assert s["n_failed"] == 0 and 0 <= s["lockstep_waste"] < 1 and s["ode"]["n_failed"] == 0
    assert set(report["targets"]["speedup_vs_ode_at_largest"]) == {"value", "threshold", "op", "pass"}


def test_accuracy(tmp_path):
    report = run("bench_accuracy", "--quick", "--out", str(tmp_path))
    written(tmp_path, "accuracy")
    assert report["vs_lsoda"]["n_animals"] == 4
    for part in ("vs_ode_all_animals", "vs_lsoda"):
        for key, value in report[part].items():
            if "max_rel" in key:
                assert finite(value) and value < 1e-4, (part, key)
    assert report["within_card_bar_1e-5"] in (True, False)


def test_pipeline(tmp_path):
    report = run("bench_pipeline", "--quick", "--out", str(tmp_path))
    written(tmp_path, "pipeline")
    pv = report["pipeline_vs_solve"]
    assert pv["n_animals"] == 12 and finite(pv["ratio"]) and pv["ratio"] > 0
    assert finite(report["peers_one_core"]["scipy_lsoda"]["ms_per_animal"])
    assert report["peers_one_core"]["scipy_lsoda"]["paw_volume_max_rel_vs_vtrial"] < 1e-4


def test_compile(tmp_path):
    config = tmp_path / "pk.toml"
    config.write_text(PK_CONFIG)
    report = run("bench_compile", "--quick", "--config", str(config), "--out", str(tmp_path))
    written(tmp_path, "compile")
    assert report["cold"]["compile_seconds"] > 0 and finite(report["warm"]["compile_seconds"])
    assert report["targets"]["cold_compile_seconds"]["pass"] in (True, False)


def test_latency(tmp_path):
    report = run("bench_latency", "--quick", "--out", str(tmp_path))
    written(tmp_path, "latency")
    assert set(report["rows"]) == {"import", "help", "run_cia_200"}
    assert set(report["rows"]["run_cia_200"]) >= {"command", "cold", "warm"}
    for row in report["rows"].values():
        for phase in ("cold", "warm"):
            if phase in row:
                assert finite(row[phase]["median_wall_s"]) and finite(row[phase]["median_cpu_s"]), row
    assert report["targets"]["import_warm_s"]["pass"] in (True, False)


def test_foce(tmp_path):
    shared_data("data/bolus_2cpt/bolus_2cpt_nonmem.csv")  # the benchmark's dataset (skips without it)
    report = run("bench_foce", "--quick", "--paths", "closed", "--repeats", "1", "--out", str(tmp_path))
    written(tmp_path, "foce")
    first = report["paths"]["closed"]["first"]
    assert finite(first["wall_s"]) and finite(first["ofv"]) and first["iterations"] <= 4
    assert report["targets"]["closed_compiled_fit_s"]["pass"] in (True, False)


def test_import_nonmem(tmp_path):
    pytest.importorskip("pharmpy", reason="pharmpy-core (the nonmem extra) is not installed")
    shared_data("data/pheno/pheno_nonmem.csv")  # the hand-written model's dataset
    report = run("bench_import_nonmem", "--quick", "--out", str(tmp_path))
    written(tmp_path, "import_nonmem")
    assert report["targets"]["same_ofv"]["pass"] is True  # the imported model is the hand-written one
    assert finite(report["imported_over_hand_written"]) and report["targets"]["run_ratio"]["pass"] in (True, False)


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCH.glob("*.py")))
def test_scripts_are_short_and_use_public_names(script):
    text = (BENCH / f"{script}.py").read_text()
    assert len(text.splitlines()) < 300, script
    for line in text.splitlines():
        if line.lstrip().startswith(("from vtrial", "import vtrial")):
            assert " _" not in line and "._" not in line, line


def test_bootstrap(tmp_path):
    shared_data("data/pheno/pheno_nonmem.csv")
    report = run("bench_bootstrap", "--quick", "--out", str(tmp_path))
    written(tmp_path, "bootstrap")
    pheno = report["problems"]["pheno"]
    assert pheno["samples"] == 4 and finite(pheno["batched"]["wall_s"]) and finite(pheno["ratio"])
