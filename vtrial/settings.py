"""Process-wide settings, set in this one place.

On import (which `import vtrial` does before anything else):
- **float64** is enabled (`jax_enable_x64`): the default precision of every solve; pass
  `SolverOptions(dtype="float32")` for single precision.
- **equinox runtime errors return NaN** (`EQX_ON_ERROR=nan`) unless the user chose
  otherwise: a host callback in the compiled solve would make it slower and keep it out
  of JAX's persistent compilation cache, while a failed animal is reported through its
  status (a NaN output marks it `nonfinite_output`). This only takes effect when vtrial
  is imported before equinox/diffrax.

For the command line (library users call these themselves, before JAX starts):
- **Compilation cache.** The first `vtrial run` of a model compiles its batched solve
  (seconds on a CPU); later runs with the same shapes load the executable from disk. The
  cache lives in `$VTRIAL_CACHE_DIR` (default `~/.cache/vtrial/jax`); `VTRIAL_CACHE_DIR=off`
  disables it. A directory the user already set for JAX (`JAX_COMPILATION_CACHE_DIR`) wins.
- **CPU cores.** XLA runs a vmapped while loop on one core. Exposing each core as a JAX
  device lets the runner's `shard_map` solve a chunk's slices on all cores at once (about
  2x on a 2-core machine). `VTRIAL_CPU_DEVICES=N` sets the count (1 disables); an
  `--xla_force_host_platform_device_count` already in `XLA_FLAGS` wins. GPU runs are
  unaffected (the flag only splits the host platform). Both must happen before JAX starts
  its backends, which is why the CLI calls them first; library users set them themselves.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("EQX_ON_ERROR", "nan")

# float64 without importing JAX here (importing it costs about a second, which `import
# vtrial` and `vtrial --help` should not pay): JAX reads JAX_ENABLE_X64 when it is first
# imported; if it already is, its configuration is updated instead.
if "jax" in sys.modules:
    sys.modules["jax"].config.update("jax_enable_x64", True)
else:
    os.environ["JAX_ENABLE_X64"] = "1"

_HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def enable_persistent_cache() -> str | None:
    """Point JAX at the cache directory; returns it (None when disabled)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    where = os.environ.get("VTRIAL_CACHE_DIR", str(Path.home() / ".cache" / "vtrial" / "jax"))
    if where.lower() in ("off", "0", "none", ""):
        return None
    try:
        Path(where).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # read-only home: run without a cache rather than fail
    # Every executable is kept: vtrial's own small functions (population sampler,
    # residual noise) and the dozens of small operations a fit runs outside its compiled
    # functions each compile in well under JAX's default 1 s threshold, but together they
    # cost seconds of every process.
    settings = {"jax_compilation_cache_dir": where, "jax_persistent_cache_min_compile_time_secs": 0.0}
    if "jax" in sys.modules:
        for name, value in settings.items():
            sys.modules["jax"].config.update(name, value)
    else:  # as for x64: JAX reads them when it is imported (`vtrial run --help` never imports it)
        for name, value in settings.items():
            os.environ[name.upper()] = str(value)
    return where


def trace_settings() -> tuple:
    """The process-wide settings that change what a traced function computes (equinox's
    error mode, x64): part of the key of a traced solve kept on disk."""
    import jax

    return os.environ.get("EQX_ON_ERROR"), bool(jax.config.jax_enable_x64)


def use_all_cpu_cores() -> int | None:
    """Expose the usable CPU cores as JAX host devices; returns the count set (None: unchanged)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _HOST_DEVICES_FLAG in flags:
        return None
    try:
        n = int(os.environ.get("VTRIAL_CPU_DEVICES", "0")) or len(os.sched_getaffinity(0))
    except (ValueError, AttributeError):
        n = os.cpu_count() or 1
    if n <= 1:
        return None
    os.environ["XLA_FLAGS"] = f"{flags} {_HOST_DEVICES_FLAG}={n}".strip()
    return n
