"""How long does a user wait for compilation: a cold `vtrial run`, then a warm one?

`vtrial run configs/cia_rat_liu2011.toml --animals-per-arm 10` twice, as subprocesses
sharing a fresh persistent compilation cache (the first compiles, the second loads the
executables from disk). Reads `compile_seconds` and `wall_seconds` from each run.json;
`process_seconds` is this script's clock around the whole command (Python start-up too).

    python benchmarks/bench_compile.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import CIA_CONFIG, ROOT, CpuMeter, base_parser, device_info, device_slug, target, wait_idle, write_result


def main(argv=None) -> dict:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=CIA_CONFIG)
    args = ap.parse_args(argv)
    waited = wait_idle(args.wait_idle)
    runs = []
    with tempfile.TemporaryDirectory(prefix="vtrial-bench-") as tmp:
        env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(Path(tmp) / "cache")}
        for label in ("cold", "warm"):
            out = Path(tmp) / label
            cmd = [sys.executable, "-m", "vtrial.cli", "run", str(args.config), "--animals-per-arm", "10", "--out", str(out)]
            with CpuMeter() as meter:
                proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
            info = json.loads((out / "run.json").read_text())
            runs.append({"run": label, "compile_seconds": info["compile_seconds"], "wall_seconds": info["wall_seconds"],
                         "process_seconds": meter.wall, "interference": meter.interference})
    cold, warm = runs
    report = {"question": "compilation a user waits for: cold and warm `vtrial run`", "config": args.config.name,
              "command": f"vtrial run {args.config.name} --animals-per-arm 10", "waited_for_idle_seconds": waited,
              "cold": cold, "warm": warm,
              "targets": {"cold_compile_seconds": target(cold["compile_seconds"], 10.0, "<"),
                          "warm_compile_seconds": target(warm["compile_seconds"], 2.0, "<")}}
    path = write_result(report, args.out, f"compile_{device_slug(device_info())}" + ("_quick" if args.quick else ""))
    print(f"cold compile {cold['compile_seconds']:.1f} s ({cold['process_seconds']:.1f} s in all), warm "
          f"{warm['compile_seconds']:.1f} s ({warm['process_seconds']:.1f} s) -> {path}")
    return report


if __name__ == "__main__":
    main()
