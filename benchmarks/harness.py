"""What every benchmark script shares: the study, the device, interference, results on disk.

Benchmarks measure and never assert. Each script answers one question and writes
`results/<question>_<device>[_<variant>].json` (and a PNG where a picture helps). Timings
on a shared machine are only as good as it was quiet, so every phase records the CPU
time other processes used meanwhile (`interference`: 0 = the machine was ours).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import re
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CIA_CONFIG = ROOT / "configs" / "cia_rat_liu2011.toml"
#: The reference data kept outside the repository (public datasets): `$VTRIAL_SHARED_DIR`,
#: or `shared/` next to the repository, as the tests find them (tests/conftest.py).
SHARED_DIR = Path(os.environ.get("VTRIAL_SHARED_DIR") or ROOT.parent / "shared")
RESULTS = Path(__file__).resolve().parent / "results"


def use_cores_like_vtrial_run(cpu_devices: int | None = None) -> None:
    """Expose the CPU cores as JAX devices as `vtrial run` does (before JAX starts)."""
    if cpu_devices is not None:
        os.environ["VTRIAL_CPU_DEVICES"] = str(cpu_devices)
    from vtrial.settings import use_all_cpu_cores

    use_all_cpu_cores()


def base_parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON (and PNG) results")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, seconds (what the tests run)")
    ap.add_argument("--wait-idle", type=float, default=0.0, help="wait up to S seconds for a quiet machine first")
    return ap


def load_trial(config: Path, animals_per_arm: int | None = None):
    """The trial a config describes, built exactly as `vtrial run` builds it: (cfg, built)."""
    from vtrial.io.config import read_toml, validate
    from vtrial.io.trial_config import BuiltTrial, TrialConfig

    data, _ = read_toml(config)
    data.pop("kind", None)
    cfg = validate(TrialConfig, data)
    return cfg, BuiltTrial(cfg, animals_per_arm)


def cia_reference():
    """tests/cia_reference.py: the independent numpy/scipy implementation of card CIA-1."""
    spec = importlib.util.spec_from_file_location("cia_reference", ROOT / "tests" / "cia_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cia_pumps(cfg) -> dict[str, tuple[float | None, float, float]]:
    """Arm name -> (pump start h, duration h, mg/kg/day) of a CIA-1 config (one s.c. pump per arm)."""
    pumps = {}
    for arm in cfg.arms:
        if not arm.doses:
            pumps[arm.name] = (None, 0.0, 0.0)
            continue
        (d,) = arm.doses
        if d.type != "infusion" or d.route != "sc" or d.unit != "mg/kg/day" or d.rate is None or d.count != 1:
            raise ValueError(f"arm {arm.name!r}: the peer baselines handle one s.c. pump given in mg/kg/day")
        pumps[arm.name] = (d.start_h, d.duration_h, d.rate)
    return pumps


class CpuMeter:
    """CPU seconds other processes used while a block ran (/proc/stat minus this process)."""

    def __enter__(self):
        self.seconds = None
        self._start, self._wall = (self._busy(), self._own()), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy, own = self._busy(), self._own()
        self.wall = time.perf_counter() - self._wall
        if busy is not None and self._start[0] is not None:
            self.seconds = max(0.0, (busy - self._start[0]) - (own - self._start[1]))
        return False

    @property
    def interference(self) -> float | None:
        """Share of the machine's capacity others used (0.5 on 2 cores: one core busy)."""
        if self.seconds is None or self.wall <= 0:
            return None
        return round(self.seconds / (self.wall * (os.cpu_count() or 1)), 3)

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        guest = sum(fields[8:10]) if len(fields) > 9 else 0
        return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


def wait_idle(limit_s: float, window_s: float = 3.0, busy_fraction: float = 0.1) -> float:
    """Wait (at most `limit_s`) until others use under `busy_fraction` of a core; seconds waited."""
    start = time.monotonic()
    while limit_s > 0 and time.monotonic() - start < limit_s:
        with CpuMeter() as meter:
            time.sleep(window_s)
        if meter.seconds is None or meter.seconds < busy_fraction * window_s:
            break
    return time.monotonic() - start


def device_info() -> dict:
    import diffrax
    import jax
    import jaxlib

    d = jax.devices()[0]
    cpu_model = platform.processor() or ""
    try:
        cpu_model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "platform": d.platform, "device_kind": getattr(d, "device_kind", d.platform), "device_count": jax.device_count(),
        "devices": [str(x) for x in jax.devices()], "cpu_model": cpu_model, "cpu_count": os.cpu_count(),
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "diffrax": diffrax.__version__,
        "python": platform.python_version(), "os": platform.platform(),
    }


def device_slug(info: dict) -> str:
    name = info["device_kind"] if info["platform"] != "cpu" else "cpu"
    return f"{info['platform']}_{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}"


def git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if rev.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def write_result(report: dict, out: Path, stem: str) -> Path:
    """Add device, date and revision; write `out/<stem>.json` atomically; return the path."""
    report = {"device": device_info(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "git_revision": git_revision(), **report}
    path = Path(out) / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        Path(tmp).write_text(json.dumps(jsonable(report), indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def target(value, threshold, op: str) -> dict:
    """A target recorded as pass/fail (never asserted)."""
    ok = None if value is None else (value <= threshold if op == "<=" else value >= threshold if op == ">=" else value < threshold)
    return {"value": value, "threshold": threshold, "op": op, "pass": ok}
