"""Benchmark: the CIA-1 reference study (configs/cia_rat_liu2011.toml) at growing populations.

For each population size (animals per arm) it measures, in one process:

- the default path (closed-form linear PK + one diffrax Tsit5 solve of the PD states per
  animal, events as jumps of its right-hand side): AOT
  compile seconds and run seconds as the runner reports them (run = execution of the
  compiled, chunked, vmapped solve, blocked on its results; best of a few repeats when
  a run is short), run ms per animal and per treated animal, solver steps per animal
  (mean, max) and the lockstep waste of the vmapped chunks;
- baseline (a), the plain ODE path (`SolverOptions(pk="ode", events="split")`: Tsit5
  over all 10 states, one solve per event segment) on exactly the same animals, at
  sizes up to `--ode-baseline-max` animals per arm, and its paw volume against the
  default path's on every animal;
- for reference, the closed-form path with one solve per event segment
  (`events="split"`), which shows what solving each animal in one piece gains;

then, on the first `--baseline-sample` animals of each arm of the largest population:

- baseline (b), scipy's LSODA in a per-animal Python loop (tests/cia_reference.py, an
  independent numpy implementation of the model card) at rtol 1e-8, atol 1e-10;
- accuracy: max relative difference in paw volume between the closed-form path, the
  ODE path and LSODA (flagged above 1e-5), and concentration relative to its Cmax;
- with `--dtype float32`, the error of float32 against float64 on the same animals;

and, unless `--no-cold-start`, runs `vtrial run CONFIG --animals-per-arm 10` twice as
subprocesses sharing a fresh JAX persistent compilation cache (cold, then warm).

It writes `<out>/cia_<platform>_<device-kind>_<dtype>.json` and a `.png` beside it.
Targets are recorded as pass/fail flags, never asserted: this is a measurement.

    python benchmarks/bench_cia.py                       # 10 100 1000 10000 per arm
    python benchmarks/bench_cia.py --dtype float32       # single precision (+ error vs float64)
    python benchmarks/bench_cia.py --quick               # seconds-long smoke run (tests)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "cia_rat_liu2011.toml"
ACCURACY_RTOL = 1e-5
LSODA_RTOL, LSODA_ATOL = 1e-8, 1e-10
#: name -> (threshold, "<=" or ">=" or "<"); see benchmarks/README.md.
TARGETS = {
    "run_ms_per_treated_animal_at_10000": (0.3, "<="),
    "speedup_vs_lsoda": (30.0, ">="),
    "speedup_vs_ode": (10.0, ">="),
    "cold_compile_seconds": (10.0, "<"),
    "warm_compile_seconds": (2.0, "<"),
    "run_seconds_1m_animals": (1.0, "<"),  # the GPU target (H100, float64): 250,000 per arm
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=CONFIG, help="trial config (default: the CIA-1 reference study)")
    ap.add_argument("--animals-per-arm", type=int, nargs="+", default=[10, 100, 1000, 10000], metavar="N")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    ap.add_argument("--rtol", type=float, default=None, help="override the config's rtol")
    ap.add_argument("--atol", type=float, default=None, help="override the config's atol")
    ap.add_argument("--baseline-sample", type=int, default=20, metavar="K", help="animals per arm for LSODA and the accuracy check")
    ap.add_argument("--ode-baseline-max", type=int, default=10000, metavar="N", help="largest animals-per-arm at which the pk='ode' path is timed")
    ap.add_argument("--f32-check-per-arm", type=int, default=250, metavar="K", help="animals per arm re-run in float64 to measure the float32 error")
    ap.add_argument("--chunk-size", type=int, default=None, help="animals per compiled batch (default: the config's)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per size (best is reported) while within --repeat-budget-s")
    ap.add_argument("--repeat-budget-s", type=float, default=20.0, help="no further repeats once a size's runs have taken this long")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--no-cold-start", action="store_true", help="skip the two `vtrial run` subprocesses")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S", help="before each measurement wait up to S seconds for other processes to go quiet")
    ap.add_argument("--busy-retries", type=int, default=0, metavar="R",
                    help="redo a timing up to R times while other processes used more than --busy-threshold of the CPU (the least disturbed is kept)")
    ap.add_argument("--busy-threshold", type=float, default=0.1, metavar="F")
    ap.add_argument("--cpu-devices", type=int, default=None, metavar="N",
                    help="on a CPU, split the host into N JAX devices as `vtrial run` does (default: every core; "
                         "1 = one device). No effect on GPUs or once JAX has started its backends")
    ap.add_argument("--quick", action="store_true", help="sizes 2 and 4, sample 2, no cold start (smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.animals_per_arm, args.baseline_sample, args.no_cold_start = [2, 4], 2, True
        args.f32_check_per_arm, args.repeats = 2, 1
    args.animals_per_arm = sorted(set(args.animals_per_arm))
    if args.animals_per_arm[0] < 1 or args.baseline_sample < 1:
        ap.error("--animals-per-arm and --baseline-sample must be >= 1")
    return args


# ----------------------------------------------------------------------------- helpers


def _reference_module():
    """tests/cia_reference.py (numpy/scipy only), loaded by path: tests/ is no package."""
    spec = importlib.util.spec_from_file_location("cia_reference", ROOT / "tests" / "cia_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_built(config: Path, animals_per_arm: int):
    from vtrial.io.config import read_toml, validate
    from vtrial.io.trial_config import BuiltTrial, TrialConfig

    data, _ = read_toml(config)
    data.pop("kind", None)
    return BuiltTrial(validate(TrialConfig, data), animals_per_arm)


def arm_pumps(built) -> dict[str, tuple[float | None, float, float]]:
    """Arm name -> (pump start h, duration h, mg/kg/day) for the scipy reference."""
    pumps = {}
    for arm in built.cfg.arms:
        if not arm.doses:
            pumps[arm.name] = (None, 0.0, 0.0)
            continue
        (d,) = arm.doses if len(arm.doses) == 1 else (None,)
        if d is None or d.type != "infusion" or d.route != "sc" or d.unit != "mg/kg/day" or d.rate is None or d.count != 1:
            raise ValueError(f"arm {arm.name!r}: the LSODA baseline handles one s.c. pump given as a rate in mg/kg/day")
        pumps[arm.name] = (d.start_h, d.duration_h, d.rate)
    return pumps


def lockstep_waste(n_steps: np.ndarray, chunk: int) -> float:
    """1 - sum(steps) / sum over chunks of (chunk width x max steps in the chunk).

    Every chunk is compiled `chunk` wide (the last one padded with copies of its final
    animal), and a vmapped adaptive solve runs each chunk until its slowest animal is
    done. Computed from total steps per animal, so it is a lower bound: the solve
    re-synchronises at every event segment, where the waste is per segment.
    """
    n_steps = np.asarray(n_steps, dtype=float)
    spent = sum(chunk * n_steps[lo : lo + chunk].max() for lo in range(0, n_steps.size, chunk))
    return float(1.0 - n_steps.sum() / spent) if spent > 0 else 0.0


def animal_table(result, per_arm: int | None = None):
    """The `animals=` table of the first `per_arm` animals of each arm of `result`."""
    df = result.animals
    if per_arm is not None:
        df = df.groupby("arm_index", sort=True).head(per_arm)
    return df.drop(columns=[c for c in ("arm_index", "status", "n_steps") if c in df.columns]).reset_index(drop=True)


def rows_of(result, table) -> np.ndarray:
    """Row indices in `result` of the (arm, animal) pairs of `table`, in its order."""
    index = {(a, int(i)): r for r, (a, i) in enumerate(zip(result.animals["arm"], result.animals["animal"]))}
    return np.array([index[(a, int(i))] for a, i in zip(table["arm"], table["animal"])])


def max_rel(a, b, scale=None) -> float:
    """max |a - b| / |b| (or / scale, per row) over finite cells; NaN if none."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    den = np.abs(b) if scale is None else np.broadcast_to(np.asarray(scale, float)[:, None], b.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(a - b) / den
    r = r[np.isfinite(r)]
    return float(r.max()) if r.size else float("nan")


def load_average() -> float | None:
    """1-minute load average (other processes share the CPU: record it with every timing)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def wait_idle(limit_s: float, window_s: float = 3.0, busy_fraction: float = 0.1) -> float:
    """Wait (at most `limit_s`) until other processes use under `busy_fraction` of one
    core over a `window_s` window; returns the seconds waited."""
    start = time.monotonic()
    while limit_s > 0 and time.monotonic() - start < limit_s:
        with CpuMeter() as meter:
            time.sleep(window_s)
        if meter.seconds is None or meter.seconds < busy_fraction * window_s:
            break
    return time.monotonic() - start


class CpuMeter:
    """CPU seconds used by other processes while a block runs (from /proc/stat minus
    this process's own user+system time): a direct measure of interference, since
    timings on a shared machine are only as good as it was quiet."""

    def __enter__(self):
        self.seconds = None
        self._start = (self._busy(), self._own())
        return self

    def __exit__(self, *exc):
        busy, own = self._busy(), self._own()
        if busy is not None and self._start[0] is not None:
            self.seconds = max(0.0, (busy - self._start[0]) - (own - self._start[1]))
        return False

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
        return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


def interference(other_cpu_seconds: float | None, wall_seconds: float) -> float | None:
    """Share of the machine's CPU capacity other processes used during a phase (0 = the
    machine was ours; 0.5 on 2 cores = another process kept one core busy)."""
    if other_cpu_seconds is None or wall_seconds <= 0:
        return None
    return round(other_cpu_seconds / (wall_seconds * (os.cpu_count() or 1)), 3)


def least_disturbed(measure, args) -> tuple:
    """Run `measure()` -> (result, timing with "interference"); while the machine was
    busier than `args.busy_threshold`, wait for quiet and measure again (at most
    `args.busy_retries` more times). Returns the least disturbed measurement and the
    seconds spent waiting."""
    best, waited = None, 0.0
    for attempt in range(1 + max(0, args.busy_retries)):
        waited += wait_idle(args.wait_idle)
        result, timing = measure()
        busy = timing.get("interference") or 0.0
        if best is None or busy < (best[1].get("interference") or 0.0):
            best = (result, timing)
        if busy <= args.busy_threshold:
            break
    best[1]["attempts"] = attempt + 1
    return best[0], best[1], waited


def _clear_compiled():
    """Forget the runner's in-memory compiled executables so compile time is measured
    afresh at each size (guarded: these are the runner's private caches)."""
    runner = importlib.import_module("vtrial.engine.runner")  # `vtrial.engine.runner` the attribute is the function
    cache = getattr(runner, "_COMPILED", None)
    if isinstance(cache, dict):
        cache.clear()
    clear = getattr(getattr(runner, "batched_solver", None), "cache_clear", None)
    if callable(clear):
        clear()


def timed_simulate(built, options, chunk_size, *, animals=None, repeats=1, budget_s=20.0, fresh=True):
    """`vt.simulate` of the study; the first call compiles, further calls only run.

    Returns the first result and the timings: `compile_seconds` (runner's AOT compile
    of the first call), `run_seconds` (best post-compile run), `run_seconds_all`,
    `wall_seconds` (first call, end to end, host work included).
    """
    import vtrial as vt

    if fresh:
        _clear_compiled()
    runs, result, wall = [], None, None
    phase_start = time.perf_counter()
    with CpuMeter() as meter:
        for i in range(max(1, repeats)):
            t = time.perf_counter()
            res = vt.simulate(  # observables only, as `vtrial run` does
                built.model, built.arms, built.population, times_h=built.times_h, seed=built.cfg.seed,
                animals=animals, options=options, chunk_size=chunk_size, states=False,
            )
            if i == 0:
                result, wall, compile_s = res, time.perf_counter() - t, res.solution.compile_seconds
            runs.append(res.solution.run_seconds)
            del res  # a repeat's outputs are not kept (host memory at large sizes)
            if sum(runs) >= budget_s:
                break
    phase = time.perf_counter() - phase_start
    return result, {
        "compile_seconds": float(compile_s),
        "run_seconds": float(min(runs)),
        "run_seconds_all": [float(r) for r in runs],
        "wall_seconds": float(wall),
        "other_processes_cpu_seconds": meter.seconds,
        "interference": interference(meter.seconds, phase),
    }


def step_stats(result, n_animals: int, chunk_size: int) -> dict:
    """Steps per animal and lockstep waste. The runner's own accounting is used when it
    reports one (it knows how it ordered animals into chunks and over devices);
    otherwise the waste is computed from `n_steps` in table order."""
    sol = result.solution
    steps = np.asarray(sol.n_steps)
    chunk = int(getattr(sol, "chunk_size", 0) or min(chunk_size, n_animals))
    runner_waste = getattr(sol, "lockstep_waste", None)
    return {
        "chunk_size": chunk,
        "n_chunks": int(getattr(sol, "n_chunks", 0) or math.ceil(n_animals / chunk)),
        "steps_mean": float(steps.mean()),
        "steps_max": int(steps.max()),
        "lockstep_waste": float(runner_waste) if runner_waste is not None else lockstep_waste(steps, chunk),
        "lockstep_waste_source": "runner" if runner_waste is not None else "bench (table order)",
        "lockstep_waste_table_order": lockstep_waste(steps, chunk),
        "n_failed": int(sol.n_failed),
    }


def lsoda_baseline(ref, built, table, pumps) -> tuple[dict[str, np.ndarray], dict]:
    """Time the scipy LSODA per-animal loop on the animals of `table`; returns its
    outputs (paw volume, concentration: `(n_animals, n_times)`) and the timing."""
    names = list(ref.CIA_TYPICAL)
    for col, value in (("allo_cl", 0.75), ("allo_v", 1.0)):
        if col in table.columns and not np.allclose(table[col], value):
            raise ValueError(f"the scipy reference fixes {col} = {value}; these animals differ")
    paw, conc, per_animal = [], [], []
    t_all = time.perf_counter()
    with CpuMeter() as meter:
        for row in table.itertuples(index=False):
            row = row._asdict()
            start, duration, rate = pumps[row["arm"]]
            t = time.perf_counter()
            out = ref.simulate_cia_scipy(
                {k: float(row[k]) for k in names}, float(row["bw"]), start, duration, rate, built.times_h,
                rtol=LSODA_RTOL, atol=LSODA_ATOL, method="LSODA",
            )
            per_animal.append(time.perf_counter() - t)
            paw.append(out["paw_volume_ml"])
            conc.append(out["conc_mg_per_l"])
    total = time.perf_counter() - t_all
    n = len(per_animal)
    timing = {
        "n_animals": n,
        "rtol": LSODA_RTOL,
        "atol": LSODA_ATOL,
        "seconds_total": total,
        "ms_per_animal": 1e3 * total / n,
        "ms_per_animal_max": 1e3 * max(per_animal),
        "ms_per_animal_median": 1e3 * float(np.median(per_animal)),
        "other_processes_cpu_seconds": meter.seconds,
        "interference": interference(meter.seconds, total),
        "ms_per_animal_by_arm": {
            a: 1e3 * float(np.mean([s for s, arm in zip(per_animal, table["arm"]) if arm == a])) for a in pumps
        },
    }
    return {"paw_volume_ml": np.array(paw), "conc_mg_per_l": np.array(conc)}, timing


def _cli_command() -> list[str]:
    exe = Path(sys.executable).with_name("vtrial")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("vtrial")
    return [found] if found else [sys.executable, "-m", "vtrial.cli"]


def cold_start(config: Path) -> dict:
    """`vtrial run CONFIG --animals-per-arm 10` twice, sharing a fresh persistent cache."""
    import jax

    env = dict(os.environ)
    known = set(jax.config.values)
    with tempfile.TemporaryDirectory(prefix="vtrial-bench-") as tmp:
        env["JAX_COMPILATION_CACHE_DIR"] = str(Path(tmp) / "jax_cache")
        settings = {"JAX_ENABLE_COMPILATION_CACHE": "true", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
        used = {k: v for k, v in settings.items() if k.lower() in known}
        env.update(used)
        runs = []
        for label in ("cold", "warm"):
            out = Path(tmp) / f"run_{label}"
            cmd = [*_cli_command(), "run", str(config), "--animals-per-arm", "10", "--out", str(out)]
            t = time.perf_counter()
            child0 = _children_cpu()
            with CpuMeter() as meter:
                proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
            child = _children_cpu() - child0
            elapsed = time.perf_counter() - t
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
            info = json.loads((out / "run.json").read_text())
            runs.append({
                "run": label,
                "compile_seconds": float(info["compile_seconds"]),
                "run_seconds": float(info.get("run_seconds", float("nan"))),
                "wall_seconds": float(info["wall_seconds"]),
                "process_seconds": elapsed,
                # the child's CPU is not this process's: it is counted here, so subtract it
                "other_processes_cpu_seconds": None if meter.seconds is None else max(0.0, meter.seconds - child),
            })
            runs[-1]["interference"] = interference(runs[-1]["other_processes_cpu_seconds"], elapsed)
        n_entries = sum(1 for f in (Path(tmp) / "jax_cache").rglob("*") if f.is_file())
    return {"command": " ".join(["vtrial", "run", config.name, "--animals-per-arm", "10"]), "env": {"JAX_COMPILATION_CACHE_DIR": "<fresh temp dir>", **used, "EQX_ON_ERROR (inherited)": os.environ.get("EQX_ON_ERROR")},
            "cache_entries": n_entries, "cold": runs[0], "warm": runs[1]}


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def device_info() -> dict:
    import diffrax
    import jax
    import jaxlib

    d = jax.devices()[0]
    cpu_model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "platform": d.platform,
        "device_kind": getattr(d, "device_kind", d.platform),
        "devices": [str(x) for x in jax.devices()],
        "device_count": jax.device_count(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_count_usable": affinity,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "diffrax": diffrax.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def _git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if rev.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "unknown"


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; results are for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# ----------------------------------------------------------------------------- report


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = report["sizes"]
    n = np.array([s["animals_per_arm"] for s in sizes], float)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    ax1.loglog(n, [s["run_seconds"] for s in sizes], "o-", color="C0", label="vtrial run (closed-form PK)")
    ax1.loglog(n, [max(s["compile_seconds"], 1e-3) for s in sizes], "s--", color="C7", label="vtrial compile (separate)")
    ode = [(s["animals_per_arm"], s["ode"]) for s in sizes if s.get("ode")]
    split = [(s["animals_per_arm"], s["split"]) for s in sizes if s.get("split")]
    if ode:
        ax1.loglog([a for a, _ in ode], [o["run_seconds"] for _, o in ode], "^-", color="C1", label="baseline: pk='ode' Tsit5 run")
    if split:
        ax1.loglog([a for a, _ in split], [o["run_seconds"] for _, o in split], "v:", color="C2", label="closed-form PK, split at events")
    lsoda = report.get("lsoda")
    n_arms = report["settings"]["n_arms"]
    if lsoda:
        ax1.loglog(n, lsoda["ms_per_animal"] * 1e-3 * n * n_arms, ":", color="C3",
                   label=f"baseline: LSODA loop ({lsoda['n_animals']} timed animals) x N")
    ax1.set_xlabel("animals per arm")
    ax1.set_ylabel("time (s)")
    ax1.set_title(f"CIA-1 study, {n_arms} arms")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)

    ax2.loglog(n, [s["run_ms_per_animal"] for s in sizes], "o-", color="C0", label="vtrial per animal")
    ax2.loglog(n, [s["run_ms_per_treated_animal"] for s in sizes], "o--", color="C9", label="vtrial per treated animal")
    if ode:
        ax2.loglog([a for a, _ in ode], [o["run_ms_per_animal"] for _, o in ode], "^-", color="C1", label="pk='ode' per animal")
    if split:
        ax2.loglog([a for a, _ in split], [o["run_ms_per_animal"] for _, o in split], "v:", color="C2", label="split at events per animal")
    if lsoda:
        ax2.axhline(lsoda["ms_per_animal"], color="C3", ls=":", label="LSODA per animal")
    ax2.axhline(TARGETS["run_ms_per_treated_animal_at_10000"][0], color="k", lw=0.8, ls="-.", label="target 0.3 ms / treated animal")
    ax2.set_xlabel("animals per arm")
    ax2.set_ylabel("run time per animal (ms)")
    dev = report["device"]
    kind = dev["device_kind"] if dev["device_kind"] != dev["platform"] else f"{dev.get('cpu_model', '')} x{dev.get('cpu_count', '?')} cores"
    ax2.set_title(f"{dev['platform']}: {kind}, {report['settings']['dtype']}")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    _atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def _busy(*phases) -> str:
    """Largest interference of the phases, as a percentage of the machine."""
    shares = [p["interference"] for p in phases if p and p.get("interference") is not None]
    return f"{100 * max(shares):.0f}%" if shares else "-"


def print_table(report: dict) -> None:
    head = ["per arm", "busy", "animals", "compile s", "run s", "ms/animal", "ms/treated", "steps mean", "steps max", "waste",
            "split ms/animal", "ode ms/animal", "x vs ode"]
    rows = []
    for s in report["sizes"]:
        o = s.get("ode") or {}
        rows.append([
            f"{s['animals_per_arm']}", _busy(s, o), f"{s['n_animals']}", f"{s['compile_seconds']:.2f}", f"{s['run_seconds']:.3f}",
            f"{s['run_ms_per_animal']:.4f}", f"{s['run_ms_per_treated_animal']:.4f}", f"{s['steps_mean']:.1f}",
            f"{s['steps_max']}", f"{s['lockstep_waste']:.3f}",
            f"{s['split']['run_ms_per_animal']:.4f}" if s.get("split") else "-",
            f"{o['run_ms_per_animal']:.3f}" if o else "-", f"{s['speedup_vs_ode']:.1f}" if s.get("speedup_vs_ode") else "-",
        ])
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"CIA-1 benchmark ({report['device']['platform']}, {report['settings']['dtype']})")
        for h in head:
            table.add_column(h, justify="right")
        for r in rows:
            table.add_row(*r)
        Console(width=max(Console().width, 150)).print(table)
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
        for r in rows:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    lines = []
    lines.append("busy = CPU share other processes used during the size's timings (vtrial and pk='ode'); above ~10% they are inflated")
    if report.get("lsoda"):
        lines.append(f"LSODA: {report['lsoda']['ms_per_animal']:.2f} ms/animal on {report['lsoda']['n_animals']} animals (busy {_busy(report['lsoda'])})")
    h = report["headline"]
    lines.append("speed-up vs LSODA: " + (f"{h['speedup_vs_lsoda']:.1f}x" if h["speedup_vs_lsoda"] else "-")
                 + ", vs pk='ode': " + (f"{h['speedup_vs_ode']:.1f}x" if h["speedup_vs_ode"] else "-"))
    acc = report["accuracy"]
    lines.append(f"paw volume max rel diff: closed-form vs LSODA {acc['paw_rel']['closed_form_vs_lsoda']:.2e}, "
                 f"ode vs LSODA {acc['paw_rel']['ode_vs_lsoda']:.2e}, closed-form vs ode {acc['paw_rel']['closed_form_vs_ode']:.2e}"
                 + (f" (every animal: {acc['closed_form_vs_ode_all_animals']:.2e})" if acc.get("closed_form_vs_ode_all_animals") is not None else "")
                 + ("" if acc["within_tolerance"] else f"  ** above {ACCURACY_RTOL:g} **"))
    if report.get("float32_vs_float64"):
        f = report["float32_vs_float64"]
        lines.append(f"float32 vs float64: paw {f['paw_volume_max_rel']:.2e}, conc/Cmax {f['conc_max_rel_to_cmax']:.2e}")
    if report.get("cold_start"):
        c = report["cold_start"]
        lines.append(f"vtrial run cold: compile {c['cold']['compile_seconds']:.2f} s (wall {c['cold']['wall_seconds']:.1f} s); "
                     f"warm cache: compile {c['warm']['compile_seconds']:.2f} s (wall {c['warm']['wall_seconds']:.1f} s)")
    for name, t in report["targets"].items():
        mark = "n/a" if t["pass"] is None else ("PASS" if t["pass"] else "MISS")
        value = "-" if t["value"] is None else f"{t['value']:.4g}"
        lines.append(f"target {name} {t['op']} {t['threshold']:g}: {value} [{mark}]")
    print("\n".join(lines))


def _target(value, threshold, op):
    if value is None or not math.isfinite(value):
        return {"value": None, "threshold": threshold, "op": op, "pass": None}
    ok = value <= threshold if op == "<=" else value >= threshold if op == ">=" else value < threshold
    return {"value": float(value), "threshold": threshold, "op": op, "pass": bool(ok)}


# ----------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.cpu_devices is not None:
        os.environ["VTRIAL_CPU_DEVICES"] = str(args.cpu_devices)
    from vtrial.settings import use_all_cpu_cores

    use_all_cpu_cores()  # as the CLI does; must precede JAX's first use of a device
    import jax

    if not args.quick:
        # Compile times are only honest without a persistent cache in this process
        # (the cold-start check sets up its own in the subprocesses).
        jax.config.update("jax_enable_compilation_cache", False)
    import vtrial  # noqa: F401  (enables float64)

    ref = _reference_module()
    sizes = args.animals_per_arm
    largest = load_built(args.config, sizes[-1])
    options = largest.options
    overrides = {"dtype": args.dtype}
    if args.rtol is not None:
        overrides["rtol"] = args.rtol
    if args.atol is not None:
        overrides["atol"] = args.atol
    options = dataclasses.replace(options, **overrides)
    ode_options = dataclasses.replace(options, pk="ode", events="split")
    split_options = dataclasses.replace(options, events="split")
    chunk_size = args.chunk_size or largest.cfg.chunk_size
    treated = [a.name for a in largest.cfg.arms if a.doses]
    pumps = arm_pumps(largest)
    n_arms = len(largest.arms)

    load_at_start = load_average()
    waited = 0.0
    big, per_size = None, []
    for n in sizes:
        big = None  # free the previous population before solving the next
        built = load_built(args.config, n)
        load_before = load_average()
        print(f"[{n} animals/arm] closed-form PK path ...", flush=True)
        res, t, w = least_disturbed(lambda: timed_simulate(built, options, chunk_size, repeats=args.repeats, budget_s=args.repeat_budget_s), args)
        waited += w
        n_animals = len(res.animals)
        n_treated = int(res.animals["arm"].isin(treated).sum())
        entry = {"animals_per_arm": n, "n_animals": n_animals, "n_treated": n_treated, **t, **step_stats(res, n_animals, chunk_size),
                 "load_avg_1min_before": load_before, "load_avg_1min_after": load_average()}
        entry["run_ms_per_animal"] = 1e3 * t["run_seconds"] / n_animals
        entry["run_ms_per_treated_animal"] = 1e3 * t["run_seconds"] / max(n_treated, 1)
        entry["animals_per_second"] = n_animals / t["run_seconds"] if t["run_seconds"] > 0 else None
        entry["ode"], entry["speedup_vs_ode"], entry["split"], entry["speedup_vs_split"] = None, None, None, None
        if n <= args.ode_baseline_max:
            print(f"[{n} animals/arm] closed-form PK, one solve per event segment ...", flush=True)
            split_res, st, w = least_disturbed(lambda: timed_simulate(
                built, split_options, chunk_size, animals=animal_table(res), repeats=args.repeats, budget_s=args.repeat_budget_s), args)
            waited += w
            entry["split"] = {**st, **step_stats(split_res, n_animals, chunk_size), "run_ms_per_animal": 1e3 * st["run_seconds"] / n_animals,
                              "paw_volume_max_rel_vs_default": max_rel(
                                  res.solution.observables["paw_volume_ml"], split_res.solution.observables["paw_volume_ml"])}
            entry["speedup_vs_split"] = st["run_seconds"] / t["run_seconds"] if t["run_seconds"] > 0 else None
            del split_res
            print(f"[{n} animals/arm] pk='ode' baseline on the same animals ...", flush=True)
            ode_res, ot, w = least_disturbed(lambda: timed_simulate(
                built, ode_options, chunk_size, animals=animal_table(res), repeats=args.repeats, budget_s=args.repeat_budget_s), args)
            waited += w
            same = animal_table(ode_res).equals(animal_table(res))
            entry["ode"] = {**ot, **step_stats(ode_res, n_animals, chunk_size), "run_ms_per_animal": 1e3 * ot["run_seconds"] / n_animals,
                            "same_animals": bool(same)}
            entry["ode"]["paw_volume_max_rel_vs_closed_form"] = max_rel(
                res.solution.observables["paw_volume_ml"], ode_res.solution.observables["paw_volume_ml"])
            entry["speedup_vs_ode"] = ot["run_seconds"] / t["run_seconds"] if t["run_seconds"] > 0 else None
            del ode_res
        per_size.append(entry)
        big = res  # only the largest population is kept (host memory: states are n x times x 10)
        del res

    # Baselines and accuracy on the first K animals of each arm of the largest population.
    sample = animal_table(big, min(args.baseline_sample, sizes[-1]))
    rows = rows_of(big, sample)
    print(f"LSODA baseline on {len(sample)} animals ...", flush=True)
    lsoda_out, lsoda, w = least_disturbed(lambda: lsoda_baseline(ref, largest, sample, pumps), args)
    waited += w
    print("pk='ode' on the sampled animals (accuracy) ...", flush=True)
    ode_sample, _ = timed_simulate(largest, ode_options, chunk_size, animals=sample, fresh=False)
    cf = {k: big.solution.observables[k][rows] for k in ("paw_volume_ml", "conc_mg_per_l")}
    od = {k: ode_sample.solution.observables[k] for k in ("paw_volume_ml", "conc_mg_per_l")}
    cmax = np.nanmax(lsoda_out["conc_mg_per_l"], axis=1)
    cmax = np.where(cmax > 0, cmax, np.nan)  # vehicle animals: no drug, concentration identically 0
    paw_rel = {
        "closed_form_vs_lsoda": max_rel(cf["paw_volume_ml"], lsoda_out["paw_volume_ml"]),
        "ode_vs_lsoda": max_rel(od["paw_volume_ml"], lsoda_out["paw_volume_ml"]),
        "closed_form_vs_ode": max_rel(cf["paw_volume_ml"], od["paw_volume_ml"]),
    }
    accuracy = {
        "n_animals": len(sample),
        "tolerance": ACCURACY_RTOL,
        "paw_rel": paw_rel,
        "conc_rel_to_cmax": {
            "closed_form_vs_lsoda": max_rel(cf["conc_mg_per_l"], lsoda_out["conc_mg_per_l"], cmax),
            "ode_vs_lsoda": max_rel(od["conc_mg_per_l"], lsoda_out["conc_mg_per_l"], cmax),
        },
        # Every animal of every size counts, not only the LSODA sample: a rare animal off
        # by more than the tolerance is exactly what a sample misses.
        "closed_form_vs_ode_all_animals": max(
            (s["ode"]["paw_volume_max_rel_vs_closed_form"] for s in per_size if s["ode"]), default=None),
        "within_tolerance": bool(
            all(v <= ACCURACY_RTOL for v in paw_rel.values())
            and all(s["ode"]["paw_volume_max_rel_vs_closed_form"] <= ACCURACY_RTOL for s in per_size if s["ode"])
        ),
    }
    vt_ms = per_size[-1]["run_ms_per_animal"]
    lsoda["speedup_vs_vtrial_at_largest"] = lsoda["ms_per_animal"] / vt_ms if vt_ms > 0 else None

    f32 = None
    if args.dtype == "float32":
        check = animal_table(big, min(args.f32_check_per_arm, sizes[-1]))
        print(f"float64 re-run of {len(check)} animals (float32 error) ...", flush=True)
        ref64, t64 = timed_simulate(largest, dataclasses.replace(options, dtype="float64"), chunk_size, animals=check, fresh=False)
        r = rows_of(big, check)
        o32, o64 = big.solution.observables, ref64.solution.observables
        c64 = np.nanmax(o64["conc_mg_per_l"], axis=1)
        f32 = {
            "n_animals": len(check),
            "paw_volume_max_rel": max_rel(o32["paw_volume_ml"][r], o64["paw_volume_ml"]),
            "conc_max_rel_to_cmax": max_rel(o32["conc_mg_per_l"][r], o64["conc_mg_per_l"], np.where(c64 > 0, c64, np.nan)),
            "float64_run_ms_per_animal": 1e3 * t64["run_seconds"] / len(check),
            "float64_steps_mean": float(np.mean(ref64.solution.n_steps)),
        }

    cold = None
    if not args.no_cold_start:
        waited += wait_idle(args.wait_idle)
        print("cold start: `vtrial run` twice with a fresh persistent compilation cache ...", flush=True)
        cold = cold_start(args.config)

    with_ode = [s for s in per_size if s["speedup_vs_ode"]]
    at_10000 = next((s for s in per_size if s["animals_per_arm"] == 10000), None)
    at_1m = next((s for s in per_size if s["n_animals"] == 1_000_000), None)
    headline = {
        "run_ms_per_treated_animal_at_10000": at_10000["run_ms_per_treated_animal"] if at_10000 else None,
        "run_ms_per_animal_at_largest": vt_ms,
        "speedup_vs_lsoda": lsoda["speedup_vs_vtrial_at_largest"],
        "speedup_vs_ode": with_ode[-1]["speedup_vs_ode"] if with_ode else None,
        "speedup_vs_ode_at_animals_per_arm": with_ode[-1]["animals_per_arm"] if with_ode else None,
        "cold_compile_seconds": cold["cold"]["compile_seconds"] if cold else None,
        "warm_compile_seconds": cold["warm"]["compile_seconds"] if cold else None,
        "run_seconds_1m_animals": at_1m["run_seconds"] if at_1m else None,
    }
    dev = device_info()
    report = {
        "benchmark": "cia_rat_liu2011",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": _git_revision(),
        "quick": bool(args.quick),
        "device": dev,
        "settings": {
            "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
            "animals_per_arm": sizes, "n_arms": n_arms, "treated_arms": treated, "dtype": options.dtype,
            "solver": options.solver, "rtol": options.rtol, "atol": options.atol, "chunk_size": chunk_size,
            "baseline_sample_per_arm": min(args.baseline_sample, sizes[-1]), "ode_baseline_max": args.ode_baseline_max,
            "repeats": args.repeats, "n_times": int(len(largest.times_h)), "end_h": float(largest.times_h[-1]),
            "load_avg_1min_at_start": load_at_start, "load_avg_1min_at_end": load_average(), "seconds_waited_for_idle": waited,
            "persistent_cache_in_process": bool(jax.config.values.get("jax_enable_compilation_cache") and jax.config.values.get("jax_compilation_cache_dir")),
        },
        "sizes": per_size,
        "lsoda": lsoda,
        "accuracy": accuracy,
        "float32_vs_float64": f32,
        "cold_start": cold,
        "headline": headline,
        "targets": {name: _target(headline.get(name), *TARGETS[name]) for name in TARGETS},
    }
    report = _jsonable(report)
    stem = f"cia_{slug(dev['platform'])}_{slug(dev['device_kind'])}_{options.dtype}"
    if chunk_size != largest.cfg.chunk_size:
        stem += f"_chunk{chunk_size}"
    out_json = args.out / f"{stem}.json"
    _atomic_write(out_json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
    plot(report, args.out / f"{stem}.png")
    print_table(report)
    print(f"wrote {out_json} and {stem}.png")
    return report


if __name__ == "__main__":
    main()
