"""Does a model from a file compile and run as fast as the same model shipped?

The same trial (oral two-compartment PK, 2 arms) runs with `model = "two_compartment_absorption"`
(the registry) and with `model = "pk_file.py:make"` (a model file next to the config whose
factory builds the same model), each as `vtrial run` in a fresh process with a fresh
persistent compilation cache, alternately, `--repeats` times. Reads `compile_seconds`,
`run_seconds` and `wall_seconds` from each run.json and reports the best of each.

    python benchmarks/bench_model_file.py [--quick]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import ROOT, CpuMeter, base_parser, device_info, device_slug, target, wait_idle, write_result

CONFIG = """\
kind = "trial"
name = "bench_model_file"
model = "{model}"
seed = 1
[variability.cv_percent]
cl = 30
v1 = 20
ka = 40
[residual.conc_mg_per_l]
proportional = 0.1
[[arms]]
name = "10 mg"
doses = [{{ type = "bolus", route = "oral", amount = 10, every_h = 24, count = 7 }}]
[[arms]]
name = "30 mg"
doses = [{{ type = "bolus", route = "oral", amount = 30, every_h = 12, count = 14 }}]
[output]
end_h = 168
every_h = 2
"""

MODEL_FILE = '''\
"""The shipped oral two-compartment model, built from a file of the user's."""
from vtrial.models.pk import two_compartment


def make():
    return two_compartment(absorption=True)
'''


def main(argv=None) -> dict:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--animals-per-arm", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    animals = 200 if args.quick else args.animals_per_arm
    waited = wait_idle(args.wait_idle)
    runs = {"shipped": [], "file": []}
    with tempfile.TemporaryDirectory(prefix="vtrial-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "pk_file.py").write_text(MODEL_FILE)
        (tmp / "shipped.toml").write_text(CONFIG.format(model="two_compartment_absorption"))
        (tmp / "file.toml").write_text(CONFIG.format(model="pk_file.py:make"))
        for repeat in range(args.repeats):
            for label in ("shipped", "file"):
                out = tmp / f"{label}-{repeat}"
                env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp / f"cache-{label}-{repeat}")}
                cmd = [sys.executable, "-m", "vtrial", "run", str(tmp / f"{label}.toml"), "--animals-per-arm", str(animals),
                       "--out", str(out), "--no-trajectories"]
                with CpuMeter() as meter:
                    proc = subprocess.run(cmd, env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
                info = json.loads((out / "run.json").read_text())
                runs[label].append({k: info[k] for k in ("compile_seconds", "run_seconds", "wall_seconds")}
                                   | {"process_seconds": meter.wall, "interference": meter.interference})
    best = {label: {k: min(r[k] for r in rs) for k in ("compile_seconds", "run_seconds", "wall_seconds", "process_seconds")}
            for label, rs in runs.items()}
    ratio = {k: best["file"][k] / best["shipped"][k] for k in ("compile_seconds", "run_seconds", "wall_seconds")}
    report = {"question": "a model from a file compiles and runs as fast as the same model shipped",
              "command": f"vtrial run (2 arms x {animals} animals, oral 2-cpt, 168 h) with model = registry name vs file.py:factory",
              "waited_for_idle_seconds": waited, "runs": runs, "best": best, "file_over_shipped": ratio,
              "targets": {"compile_ratio": target(ratio["compile_seconds"], 1.2, "<"),
                          "run_ratio": target(ratio["run_seconds"], 1.2, "<")}}
    path = write_result(report, args.out, f"model_file_{device_slug(device_info())}" + ("_quick" if args.quick else ""))
    for label, b in best.items():
        print(f"{label:8s} compile {b['compile_seconds']:.2f} s, run {b['run_seconds']:.3f} s, wall {b['wall_seconds']:.2f} s")
    print(f"file / shipped: compile {ratio['compile_seconds']:.2f}, run {ratio['run_seconds']:.2f} -> {path}")
    return report


if __name__ == "__main__":
    main()
