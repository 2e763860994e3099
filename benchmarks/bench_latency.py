"""How long does a user wait at the keyboard: the CLI as a subprocess, cold and warm.

Each row is one command run as a user runs it (`python -m vtrial ...` from this checkout,
Python start-up, imports, compilation, outputs and figures included), timed by this
script's clock. `cold` starts from an empty compilation cache (`VTRIAL_CACHE_DIR` set to a
fresh folder); `warm` is the same command run again with that cache. Each is the median
of `--repeats` (3) runs, every cold run with a fresh cache. Rows (issue 22's table):

- `import`: `python -c "import vtrial"` (no cache involved);
- `help`: `vtrial --help`;
- `run_cia_200`: `vtrial run configs/cia_rat_liu2011.toml --animals-per-arm 50` (200 rats);
- `fit_oral_12`: `vtrial fit configs/oral_pk_fit.toml` (the README's quick start) on 12 rats
  x 9 samples simulated by `vtrial run configs/oral_pk_study.toml --animals-per-arm 6
  --dataset` (FOCE-I, covariance step);
- `fit_bolus_2cpt_closed` / `fit_bolus_2cpt_ode`: `vtrial fit configs/bolus_2cpt_fit.toml`
  on ../shared/data/bolus_2cpt (120 subjects), closed-form PK and `[solver] pk = "ode"`.

`cpu_seconds` is the child's user + system CPU time: on a shared machine it is steadier
than the wall clock, and `interference` says how much of the machine others used.
Targets (never asserted): import <= 1 s; run <= 2 s warm, <= 8 s cold; the oral fit <= 3 s
warm, <= 8 s cold; Bolus_2CPT <= 4 s warm closed form, <= 10 s warm ODE.

    python benchmarks/bench_latency.py                   # every row, median of 3 (long on 2 cores)
    python benchmarks/bench_latency.py --rows import run_cia_200 --repeats 1
    python benchmarks/bench_latency.py --quick           # import, help and a tiny run: a smoke run
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import ROOT, SHARED_DIR, CpuMeter, base_parser, device_info, device_slug, target, wait_idle, write_result

BOLUS = SHARED_DIR / "data" / "bolus_2cpt" / "bolus_2cpt_nonmem.csv"
CONFIGS = ROOT / "configs"
ROWS = ("import", "help", "run_cia_200", "fit_oral_12", "fit_bolus_2cpt_closed", "fit_bolus_2cpt_ode")
#: (row, cold or warm) -> (threshold s, op)
TARGETS = {("import", "warm"): 1.0, ("run_cia_200", "warm"): 2.0, ("run_cia_200", "cold"): 8.0,
           ("fit_oral_12", "warm"): 3.0, ("fit_oral_12", "cold"): 8.0,
           ("fit_bolus_2cpt_closed", "warm"): 4.0, ("fit_bolus_2cpt_ode", "warm"): 10.0}


def cli_env(cache: Path | None) -> dict:
    """This checkout first on the path; the compilation cache in `cache` (None: off)."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["VTRIAL_CACHE_DIR"] = str(cache) if cache is not None else "off"
    return env


def timed(cmd: list[str], env: dict) -> dict:
    before = os.times()
    with CpuMeter() as meter:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    after = os.times()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"wall_s": round(meter.wall, 3), "cpu_s": round(cpu, 3), "interference": meter.interference}


def commands(tmp: Path, quick: bool) -> dict[str, list[str] | None]:
    """Row -> the command (its output folder under `tmp/out`, replaced at every run)."""
    py, out = [sys.executable], str(tmp / "out")
    ode = tmp / "bolus_2cpt_fit_ode.toml"
    ode.write_text((CONFIGS / "bolus_2cpt_fit.toml").read_text() + '\n[solver]\npk = "ode"\n')
    oral_data = tmp / "oral_study.csv"
    run_args = (["run", str(CONFIGS / "oral_pk_study.toml"), "--animals-per-arm", "3"] if quick else
                ["run", str(CONFIGS / "cia_rat_liu2011.toml"), "--animals-per-arm", "50"])
    return {
        "import": py + ["-c", "import vtrial"],
        "help": py + ["-m", "vtrial", "--help"],
        "run_cia_200": py + ["-m", "vtrial", *run_args, "--out", out],
        "fit_oral_12": py + ["-m", "vtrial", "fit", str(CONFIGS / "oral_pk_fit.toml"), str(oral_data), "--out", out],
        "fit_bolus_2cpt_closed": py + ["-m", "vtrial", "fit", str(CONFIGS / "bolus_2cpt_fit.toml"), str(BOLUS), "--out", out],
        "fit_bolus_2cpt_ode": py + ["-m", "vtrial", "fit", str(ode), str(BOLUS), "--out", out],
    }


def simulate_oral_study(tmp: Path) -> None:
    """The 12-subject dataset the oral fit reads (not timed)."""
    cmd = [sys.executable, "-m", "vtrial", "run", str(CONFIGS / "oral_pk_study.toml"), "--animals-per-arm", "6",
           "--out", str(tmp / "oral_run"), "--dataset", str(tmp / "oral_study.csv")]
    timed(cmd, cli_env(tmp / "oral_cache"))


def measure(row: str, cmd: list[str], tmp: Path, repeats: int) -> dict:
    import shutil

    runs = {"cold": [], "warm": []}
    for r in range(repeats):
        cache = None if row in ("import", "help") else tmp / f"cache_{row}_{r}"
        for phase in ("cold", "warm") if cache is not None else ("warm",):
            shutil.rmtree(tmp / "out", ignore_errors=True)
            runs[phase].append(timed(cmd, cli_env(cache)))
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
    result = {}
    for phase, xs in runs.items():
        if xs:
            result[phase] = {"median_wall_s": statistics.median(x["wall_s"] for x in xs),
                             "median_cpu_s": statistics.median(x["cpu_s"] for x in xs), "runs": xs}
    return result


def main(argv=None) -> dict:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--rows", nargs="+", choices=ROWS, default=None, help="rows to measure (default: all; --quick: 3)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per row and phase (the median is reported)")
    ap.add_argument("--label", default="", help="suffix of the result file (e.g. 'before')")
    args = ap.parse_args(argv)
    rows = args.rows or (["import", "help", "run_cia_200"] if args.quick else list(ROWS))
    repeats = 1 if args.quick else args.repeats
    waited = wait_idle(args.wait_idle)
    with tempfile.TemporaryDirectory(prefix="vtrial-latency-") as tmp:
        tmp = Path(tmp)
        cmds = commands(tmp, args.quick)
        if "fit_oral_12" in rows:
            simulate_oral_study(tmp)
        results = {}
        for row in rows:
            results[row] = {"command": " ".join(Path(c).name if i == 0 else c.replace(str(tmp), "$TMP") for i, c in enumerate(cmds[row])),
                            **measure(row, cmds[row], tmp, repeats)}
            print(row, {k: v["median_wall_s"] for k, v in results[row].items() if k in ("cold", "warm")}, flush=True)
    targets = {f"{row}_{phase}_s": target(results[row][phase]["median_wall_s"], limit, "<=")
               for (row, phase), limit in TARGETS.items() if row in results and phase in results[row]}
    report = {"question": "latency at the keyboard: the CLI as a subprocess, cold and warm compilation cache",
              "quick": args.quick, "repeats": repeats, "waited_for_idle_seconds": waited, "rows": results, "targets": targets}
    stem = f"latency_{device_slug(device_info())}" + ("_quick" if args.quick else "") + (f"_{args.label}" if args.label else "")
    path = write_result(report, args.out, stem)
    print(f"-> {path}")
    return report


if __name__ == "__main__":
    main()
