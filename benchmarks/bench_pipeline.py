"""What does `vtrial run` cost on top of the compiled solve, and per animal on one core?

The CIA-1 study (configs/cia_rat_liu2011.toml) at 2,500 animals per arm:

- **pipeline vs solve**: `vtrial.run_config` (what `vtrial run` calls: draw the animals,
  solve, residual error, summaries, endpoints, Parquet rows, report) reports
  `run_seconds`, the wall time of its chunk loop with compilation excluded. The compiled
  solve alone is the runner over the same animals (`iter_population_chunks`, observables
  only). They are measured alternately, `--repeats` times each; `ratio` = best pipeline /
  best solve (target <= 1.25), and the ratio of each adjacent pair is recorded too.
- **one core**: `vtrial run` in a child pinned to one core (`taskset -c 0`,
  `VTRIAL_CPU_DEVICES=1`), cost per animal from its run.json, next to numbalsoda (LSODA
  compiled with numba, the whole loop over animals in machine code) and scipy LSODA on the
  same animals at the config's tolerances (benchmarks/cia_peers.py).

    python benchmarks/bench_pipeline.py                 # 2,500 per arm (~5 min on a quiet 2-core CPU)
    python benchmarks/bench_pipeline.py --quick --out /tmp/b
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from cia_peers import animal_inputs, max_rel, numbalsoda_available, time_numbalsoda, time_scipy_lsoda
from harness import (CIA_CONFIG, CpuMeter, base_parser, cia_pumps, device_info, device_slug, load_trial, target,
                     use_cores_like_vtrial_run, wait_idle, write_result)


def pipeline_vs_solve(per_arm: int, repeats: int, scratch: Path) -> dict:
    import vtrial as vt
    from vtrial.design.trial import prepare_trial

    cfg, built = load_trial(CIA_CONFIG, per_arm)
    inputs = prepare_trial(built.model, built.arms, built.population, times_h=built.times_h, seed=cfg.seed)
    vt.run_config(CIA_CONFIG, animals_per_arm=per_arm, out=scratch / "warm")  # compiles both shapes' functions
    pipeline, solve = [], []
    for r in range(repeats):
        with CpuMeter() as meter:
            record = vt.run_config(CIA_CONFIG, animals_per_arm=per_arm, out=scratch / f"run{r}")
        pipeline.append({"run_seconds": record.facts["run_seconds"], "wall_seconds": record.info["wall_seconds"],
                         "interference": meter.interference})
        with CpuMeter() as meter:
            chunks = vt.iter_population_chunks(built.model, inputs.params, inputs.doses, built.times_h, options=built.options,
                                               chunk_size=cfg.chunk_size, states=False)
            for _ in chunks:
                pass
        solve.append({"run_seconds": chunks.run_seconds, "compile_seconds": chunks.compile_seconds, "interference": meter.interference})
    best_pipe = min(p["run_seconds"] for p in pipeline)
    best_solve = min(s["run_seconds"] for s in solve)
    n = len(inputs.animals)
    return {
        "animals_per_arm": per_arm, "n_animals": n, "repeats": repeats, "pipeline": pipeline, "solve_only": solve,
        "pipeline_run_seconds": best_pipe, "solve_run_seconds": best_solve, "ratio": best_pipe / best_solve,
        "pair_ratios": [p["run_seconds"] / s["run_seconds"] for p, s in zip(pipeline, solve)],
        "pipeline_ms_per_animal": 1e3 * best_pipe / n, "solve_ms_per_animal": 1e3 * best_solve / n,
    }


def one_core(per_arm: int, scratch: Path) -> dict:
    """`vtrial run` pinned to one core, twice (the second is warm); cost from run.json."""
    cmd = [sys.executable, "-m", "vtrial.cli", "run", str(CIA_CONFIG), "--animals-per-arm", str(per_arm)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    env = {**os.environ, "VTRIAL_CPU_DEVICES": "1", "JAX_COMPILATION_CACHE_DIR": str(scratch / "cache")}
    env.pop("XLA_FLAGS", None)
    runs = []
    for label in ("cold", "warm"):
        out = scratch / f"one_core_{label}"
        with CpuMeter() as meter:
            proc = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        info = json.loads((out / "run.json").read_text())
        runs.append({"run": label, "run_seconds": info["run_seconds"], "devices": info["devices"], "interference": meter.interference})
    n = 4 * per_arm
    return {"command": " ".join(cmd[cmd.index("-m") + 1:]), "pinned": cmd[0] == "taskset", "n_animals": n, "runs": runs,
            "ms_per_animal": 1e3 * runs[-1]["run_seconds"] / n}


def peers(per_arm: int, lsoda_per_arm: int) -> dict:
    import vtrial as vt

    cfg, built = load_trial(CIA_CONFIG, per_arm)
    res = vt.simulate(built.model, built.arms, built.population, times_h=built.times_h, seed=cfg.seed, options=built.options,
                      chunk_size=cfg.chunk_size, states=False)
    rtol, atol = built.options.rtol, built.options.atol
    pumps = cia_pumps(cfg)
    vtrial_paw = res.solution.observables["paw_volume_ml"]
    out = {"rtol": rtol, "atol": atol}
    if numbalsoda_available():
        params, pump = animal_inputs(res.animals, pumps)
        paw, out["numbalsoda"] = time_numbalsoda(params, pump, built.times_h, rtol, atol)
        out["numbalsoda"]["paw_volume_max_rel_vs_vtrial"] = max_rel(vtrial_paw, paw)
    else:
        out["numbalsoda"] = None
    sample = res.animals.groupby("arm_index", sort=True).head(lsoda_per_arm)
    paw, out["scipy_lsoda"] = time_scipy_lsoda(sample, pumps, built.times_h, rtol, atol)
    out["scipy_lsoda"]["paw_volume_max_rel_vs_vtrial"] = max_rel(vtrial_paw[sample.index.to_numpy()], paw)
    return out


def main(argv=None) -> dict:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--animals-per-arm", type=int, default=2500)
    ap.add_argument("--one-core-per-arm", type=int, default=500, help="animals per arm of the one-core run and its peers")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    use_cores_like_vtrial_run()
    if args.quick:
        args.animals_per_arm, args.one_core_per_arm, args.repeats = 3, 2, 1
    waited = wait_idle(args.wait_idle)
    with tempfile.TemporaryDirectory(prefix="vtrial-bench-") as tmp:
        scratch = Path(tmp)
        report = {"question": "pipeline cost on top of the compiled solve; one-core cost per animal against the peers",
                  "config": CIA_CONFIG.name, "quick": args.quick, "waited_for_idle_seconds": waited,
                  "pipeline_vs_solve": pipeline_vs_solve(args.animals_per_arm, args.repeats, scratch),
                  "one_core": None if args.quick else one_core(args.one_core_per_arm, scratch),
                  "peers_one_core": peers(args.one_core_per_arm, 10 if not args.quick else 1)}
    one, nb = (report["one_core"] or {}).get("ms_per_animal"), report["peers_one_core"]["numbalsoda"]
    if report["one_core"] is not None:
        report["one_core"]["numbalsoda_ms_over_vtrial_ms"] = nb["ms_per_animal"] / one if nb else None
    report["targets"] = {"pipeline_over_solve_ratio": target(report["pipeline_vs_solve"]["ratio"], 1.25, "<=")}
    path = write_result(report, args.out, f"pipeline_{device_slug(device_info())}" + ("_quick" if args.quick else ""))
    pv = report["pipeline_vs_solve"]
    print(f"pipeline {pv['pipeline_run_seconds']:.2f} s vs solve {pv['solve_run_seconds']:.2f} s: ratio {pv['ratio']:.2f} "
          f"({pv['n_animals']} animals); one core " + (f"{one:.3f} ms/animal" if one else "not measured")
          + (f", numbalsoda {nb['ms_per_animal']:.3f} ms/animal" if nb else "") + f" -> {path}")
    return report


if __name__ == "__main__":
    main()
