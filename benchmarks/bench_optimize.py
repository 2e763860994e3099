"""Benchmark: dose optimisation of CIA-1, 1,000 candidate regimens x 1,000 animals.

The problem is `configs/cia_dose_optimization.toml` (the least anakinra halving paw
swelling in 80% of rats, with a trough and a Cmax constraint) with its 5 regimen shapes at
`--grid-points` daily doses each (200: 1,000 candidates). It answers two questions:

1. **Cost of the grid per animal-regimen.** The grid sweep (`vt.optimize(methods=["grid"])`)
   solves candidates x animals (plus the animals untreated) through the trial pipeline;
   `grid_ms_per_animal_regimen` is its run time (compilation excluded) per solve. The
   reference is the cost per animal of `vtrial run` on the same regimens (one arm per
   shape at the grid's answer dose, `--reference-per-arm` animals in all, the same
   population and output times), timed the same way in the same process: a regimen's
   dosing events set the solver's work (14 boluses cost more steps than one pump), so
   only the same regimens compare like for like. Target: the grid costs no more. The
   CIA-1 reference study (`configs/cia_rat_liu2011.toml`) is timed too, for context.
2. **Animal-regimens of the gradient search.** `vt.optimize(methods=["gradient"])` on the
   same animals; counted are the animal-regimens it solved (each also differentiated in
   reverse mode) until its dose for the grid's chosen shape stayed within one grid step
   of the grid's answer, and in all (to the exact answer, verification on fresh animals
   included). Target: at least 10x fewer than the grid's.

Writes `<out>/optimize_<platform>_<device>.json`. Measures, never asserts.

    python benchmarks/bench_optimize.py                  # the full run (minutes on 2 CPU cores)
    python benchmarks/bench_optimize.py --quick          # 2 doses x 5 shapes x 8 animals, a smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "cia_dose_optimization.toml"
REFERENCE = ROOT / "configs" / "cia_rat_liu2011.toml"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--animals", type=int, default=1000, help="animals every candidate is simulated on")
    ap.add_argument("--grid-points", type=int, default=200, help="daily doses per shape (5 shapes)")
    ap.add_argument("--reference-per-arm", type=int, default=1000, help="animals per arm of the `vtrial run` reference")
    ap.add_argument("--chunk-size", type=int, default=None, help="animal-regimens per batch (default: the config's)")
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    return ap.parse_args(argv)


def device_info() -> dict:
    import jax

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    d = jax.devices()[0]
    return {"platform": d.platform, "device_kind": d.device_kind, "device_count": jax.device_count(), "cpu_model": cpu,
            "cpu_count": os.cpu_count(), "jax": jax.__version__, "python": platform.python_version()}


def git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def reference_cost(vt, per_arm: int) -> dict:
    """Run seconds per animal of the CIA-1 reference study, as `vtrial run` solves it."""
    from vtrial.io.config import read_toml, validate
    from vtrial.io.trial_config import BuiltTrial, TrialConfig

    data, _ = read_toml(REFERENCE)
    data.pop("kind")
    built = BuiltTrial(validate(TrialConfig, data), per_arm)
    best = None
    for _ in range(2):  # the first includes compilation (reported apart by the runner)
        r = vt.simulate(built.model, built.arms, built.population, times_h=built.times_h, seed=data["seed"], options=built.options,
                        chunk_size=data["chunk_size"], states=False)
        best = r.solution.run_seconds if best is None else min(best, r.solution.run_seconds)
    n = len(r.animals)
    return {"animals": n, "run_seconds": best, "ms_per_animal": 1e3 * best / n, "steps_mean": float(np.mean(r.solution.n_steps))}


def same_regimens_cost(vt, built, daily_dose_mg_per_kg: float, per_arm: int, times_h, chunk_size: int) -> dict:
    """Run seconds per animal of a `vtrial run` of the grid's own regimens: one arm per
    regimen shape at one daily dose, the optimisation's population and output times. The
    like-for-like reference: a shape's dosing events set the solver's work, so the grid
    must cost no more per animal-regimen than a trial of the same regimens per animal."""
    arms = [vt.Arm(s.label, s.regimen(daily_dose_mg_per_kg), per_arm) for s in built.space.shapes()]
    best = None
    for _ in range(2):  # the first includes compilation (reported apart by the runner)
        r = vt.simulate(built.model, arms, built.population, times_h=times_h, seed=built.cfg.seed, options=built.options,
                        chunk_size=chunk_size, states=False)
        best = r.solution.run_seconds if best is None else min(best, r.solution.run_seconds)
    n = len(r.animals)
    return {"animals": n, "daily_dose_mg_per_kg": daily_dose_mg_per_kg, "run_seconds": best, "ms_per_animal": 1e3 * best / n,
            "steps_mean": float(np.mean(r.solution.n_steps))}


def reached_at(history, shape: int, answer: float, step: float) -> int | None:
    """Animal-regimens solved until the dose of `shape` stayed within one grid step of `answer`."""
    doses = history[f"dose_{shape}"].to_numpy()
    inside = (doses <= answer * step * (1 + 1e-9)) & (doses >= answer / step * (1 - 1e-9))
    if not inside[-1]:
        return None
    last_out = np.flatnonzero(~inside)
    first = 0 if last_out.size == 0 else int(last_out[-1]) + 1
    return int(history["lanes"].to_numpy()[: first + 1].sum())


def main(argv=None) -> dict:
    args = parse_args(argv)
    from vtrial.settings import use_all_cpu_cores

    use_all_cpu_cores()  # as the CLI does; before JAX starts
    import vtrial as vt
    from vtrial.io.config import read_toml, validate
    from vtrial.io.optimize_config import BuiltOptimization, OptimizeConfig

    if args.quick:
        args.animals, args.grid_points, args.reference_per_arm = 8, 2, 4
    data, _ = read_toml(CONFIG)
    data.pop("kind")
    data["space"]["grid_points"] = args.grid_points
    cfg = validate(OptimizeConfig, data)
    built = BuiltOptimization(cfg)
    chunk = args.chunk_size or cfg.chunk_size
    common = dict(population=built.population, n_animals=args.animals, seed=cfg.seed, every_h=cfg.output.every_h,
                  options=built.options, chunk_size=chunk, gradient=built.gradient)
    load_start = load_average()
    started = time.perf_counter()
    grid = vt.optimize(built.model, built.space, built.target, built.constraints, methods=["grid"], **common)
    grid_seconds = time.perf_counter() - started
    started = time.perf_counter()
    gradient = vt.optimize(built.model, built.space, built.target, built.constraints, methods=["gradient"], **common)
    gradient_seconds = time.perf_counter() - started
    reference = reference_cost(vt, args.reference_per_arm)
    from vtrial.design.targets import requirement_times

    lo, hi = built.space.daily_dose_range
    dose = grid.chosen["daily_dose_mg_per_kg"] if grid.chosen else float(np.sqrt(lo * hi))
    times = requirement_times((built.target, *built.constraints), cfg.output.every_h)
    same = same_regimens_cost(vt, built, dose, max(args.reference_per_arm // 5, 1) if not args.quick else 4, times, chunk)
    gf, df = grid.facts, gradient.facts
    grid_cost_ms = 1e3 * gf["grid_run_seconds"] / gf["grid_animal_regimens"]
    gradient_total = df["gradient_animal_regimens"] + df.get("vehicle_animal_regimens", 0)
    verification = (gradient.chosen or {}).get("verification", {}).get("animal_regimens", 0)
    step = built.space.grid_step_ratio
    to_answer = None
    if grid.chosen is not None:
        shape = [s.label for s in built.space.shapes()].index(grid.chosen["shape"])
        to_answer = reached_at(gradient.gradient["history"], shape, grid.chosen["daily_dose_mg_per_kg"], step)
    agreement = None
    if grid.chosen and gradient.chosen:
        ratio = gradient.chosen["total_mg_per_kg"] / grid.chosen["total_mg_per_kg"]
        agreement = {"total_drug_ratio_gradient_to_grid": ratio, "agree": bool(1 / step - 1e-9 <= ratio <= step + 1e-9),
                     "grid": grid.chosen["regimen"], "gradient": gradient.chosen["regimen"]}
    fewer = gf["grid_animal_regimens"] / to_answer if to_answer else None
    report = {
        "benchmark": "optimize_cia", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": git_revision(), "quick": args.quick, "device": device_info(),
        "settings": {"config": str(CONFIG.relative_to(ROOT)), "animals": args.animals, "shapes": len(built.space.shapes()),
                     "grid_points": args.grid_points, "candidates": len(built.space.candidates()), "grid_step_ratio": step,
                     "chunk_size": chunk, "solver": cfg.solver.method, "rtol": cfg.solver.rtol, "atol": cfg.solver.atol,
                     "load_avg_1min_at_start": load_start, "load_avg_1min_at_end": load_average()},
        "grid": {"animal_regimens": gf["grid_animal_regimens"], "compile_seconds": gf["grid_compile_seconds"],
                 "run_seconds": gf["grid_run_seconds"], "wall_seconds": grid_seconds, "ms_per_animal_regimen": grid_cost_ms,
                 "failed": gf["grid_failed"], "steps_mean": gf.get("grid_steps_mean"), "answer": grid.chosen and grid.chosen["regimen"], "feasible": grid.feasible},
        "gradient": {"animal_regimens": gradient_total, "animal_regimens_with_verification": gradient_total + verification,
                     "animal_regimens_to_grid_answer": to_answer, "evaluations": df["gradient_evaluations"],
                     "seconds": df["gradient_seconds"], "compile_seconds": df["gradient_compile_seconds"], "wall_seconds": gradient_seconds,
                     "ms_per_animal_regimen": 1e3 * (df["gradient_seconds"] - df["gradient_compile_seconds"]) / df["gradient_animal_regimens"],
                     "answer": gradient.chosen and gradient.chosen["regimen"], "feasible": gradient.feasible},
        "vtrial_run_reference": reference,
        "vtrial_run_same_regimens": same,
        "agreement": agreement,
        "targets": {
            "grid_cost_per_animal_regimen_le_run_cost_per_animal": {"value": grid_cost_ms, "threshold": same["ms_per_animal"],
                                                                    "pass": grid_cost_ms <= same["ms_per_animal"],
                                                                    "reference": "vtrial_run_same_regimens"},
            "gradient_at_least_10x_fewer_animal_regimens": {"value": fewer, "threshold": 10.0, "pass": None if fewer is None else fewer >= 10.0},
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    dev = report["device"]
    name = f"optimize_{dev['platform']}_{dev['device_kind'].lower().replace(' ', '-')}{'_quick' if args.quick else ''}.json"
    (args.out / name).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps({k: report[k] for k in ("grid", "gradient", "agreement", "targets")}, indent=2, default=str))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
