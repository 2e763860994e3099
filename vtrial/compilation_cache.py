"""JAX's persistent compilation cache for the command line.

The first `vtrial run` of a model compiles its batched solve (seconds on a CPU); later
runs with the same shapes load the executable from disk instead. The cache lives in
`$VTRIAL_CACHE_DIR` (default `~/.cache/vtrial/jax`); `VTRIAL_CACHE_DIR=off` disables
it. A cache directory the user already set for JAX (`JAX_COMPILATION_CACHE_DIR`) wins.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax


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
    jax.config.update("jax_compilation_cache_dir", where)
    # vtrial's own small functions (population sampler, residual noise) compile in well
    # under JAX's default 1 s threshold but still cost a cold start.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return where
