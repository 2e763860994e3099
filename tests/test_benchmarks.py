"""The benchmark script runs end to end (`--quick`) and writes a complete, finite JSON."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_cia.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_cia", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    report = _load_bench().main(["--quick", "--out", str(out)])
    return out, report


def test_quick_writes_json_and_png(quick_report):
    out, report = quick_report
    jsons = list(out.glob("cia_*_float64.json"))
    assert len(jsons) == 1 and jsons[0].with_suffix(".png").is_file()
    on_disk = json.loads(jsons[0].read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files


def test_quick_report_has_every_measurement(quick_report):
    _, r = quick_report
    for key in ("device", "settings", "sizes", "lsoda", "accuracy", "headline", "targets", "date"):
        assert key in r, key
    assert r["quick"] is True and r["cold_start"] is None and r["float32_vs_float64"] is None
    assert {"platform", "device_kind", "jax", "cpu_count"} <= set(r["device"])
    assert [s["animals_per_arm"] for s in r["sizes"]] == [2, 4]
    for s in r["sizes"]:
        for key in ("compile_seconds", "run_seconds", "run_ms_per_animal", "run_ms_per_treated_animal",
                    "steps_mean", "lockstep_waste", "speedup_vs_ode", "speedup_vs_split"):
            assert _finite(s[key]), (s["animals_per_arm"], key, s[key])
        assert s["n_animals"] == 4 * s["animals_per_arm"] and s["n_treated"] == 3 * s["animals_per_arm"]
        assert s["compile_seconds"] > 0 and s["run_seconds"] > 0 and s["steps_max"] >= s["steps_mean"] > 0
        assert 0.0 <= s["lockstep_waste"] < 1.0 and s["n_failed"] == 0
        assert s["ode"]["same_animals"] and _finite(s["ode"]["run_ms_per_animal"])
        assert _finite(s["split"]["run_ms_per_animal"]) and s["split"]["paw_volume_max_rel_vs_default"] < 1e-5
    assert r["lsoda"]["n_animals"] == 8 and _finite(r["lsoda"]["ms_per_animal"])
    for key in ("speedup_vs_lsoda", "speedup_vs_ode", "run_ms_per_animal_at_largest"):
        assert _finite(r["headline"][key]), key
    assert r["headline"]["run_ms_per_treated_animal_at_10000"] is None  # size not run
    for key, value in r["accuracy"]["paw_rel"].items():
        assert _finite(value) and value < 1e-4, key
    assert r["accuracy"]["within_tolerance"] in (True, False)
    for name, t in r["targets"].items():
        assert set(t) == {"value", "threshold", "op", "pass"}, name
        assert t["pass"] in (True, False, None)
    assert r["targets"]["speedup_vs_lsoda"]["pass"] is not None


def test_lockstep_waste_formula():
    bench = _load_bench()
    assert bench.lockstep_waste([10, 10, 10, 10], 2) == 0.0
    # chunks [10, 30] and [20, padding]: 2*30 + 2*20 = 100 lane-steps spent, 60 used by animals
    assert bench.lockstep_waste([10, 30, 20], 2) == pytest.approx(1 - 60 / 100)
