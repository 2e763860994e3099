"""The runner: one compiled, vmapped solve over animals, streamed in fixed-size chunks.

This is the only place that knows about batching. Every chunk has the same shape (the
last one is padded by repeating its final animal and the padding is dropped), so the
whole population reuses a single compiled function; the per-chunk Python loop only
moves data. Each animal's result depends on nothing but its own inputs, so results do
not change with the chunk size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
import time
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from vtrial.dosing import DoseRecords
from vtrial.errors import SpecError
from vtrial.models.base import Model
from vtrial.solve import STATUS_NAMES, SolverOptions, solve_animal


@dataclass(frozen=True)
class PopulationSolution:
    """Batched results (host numpy arrays).

    - `states`: `(n_animals, n_times, n_states)`;
    - `observables`: name -> `(n_animals, n_times)`, NaN where the animal failed;
    - `status`: `(n_animals,)` codes into `STATUS_NAMES` (0 = ok);
    - `n_steps`: `(n_animals,)` solver steps taken;
    - `times_h`: `(n_times,)`.
    """

    states: np.ndarray
    observables: dict[str, np.ndarray]
    status: np.ndarray
    n_steps: np.ndarray
    times_h: np.ndarray
    compile_seconds: float = 0.0
    run_seconds: float = 0.0

    @property
    def status_names(self) -> np.ndarray:
        return np.asarray(STATUS_NAMES, dtype=object)[self.status]

    @property
    def n_failed(self) -> int:
        return int(np.count_nonzero(self.status))


@lru_cache(maxsize=64)
def batched_solver(model: Model, options: SolverOptions, t0: float) -> Callable:
    """The jit-compiled, vmapped solve of `model` (cached per model, options and t0)."""

    def one(p, doses, save_times):
        sol = solve_animal(model, p, doses, save_times, t0=t0, options=options)
        obs = jax.vmap(lambda y: model.observe(y, p))(sol.states)
        return sol.states, obs, sol.status, sol.n_steps

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))


_COMPILED: dict = {}


def compiled_solver(model: Model, options: SolverOptions, t0: float, args) -> tuple[Callable, float]:
    """Ahead-of-time compiled solver for the shapes of `args`, and the seconds compiling took.

    Compiled executables are kept per (model, options, t0, shapes), so a second run
    with the same shapes compiles nothing (0 s).
    """
    shapes = tuple((tuple(a.shape), str(a.dtype)) for a in jax.tree_util.tree_leaves(args))
    key = (model, options, t0, jax.tree_util.tree_structure(args), shapes)
    if key in _COMPILED:
        return _COMPILED[key], 0.0
    start = time.perf_counter()
    compiled = batched_solver(model, options, t0).lower(*args).compile()
    _COMPILED[key] = compiled
    return compiled, time.perf_counter() - start


def check_inputs(model: Model, params: Mapping[str, np.ndarray], doses: DoseRecords, times_h, t0: float) -> int:
    """Host-side validation before anything is traced; returns the number of animals."""
    needed = set(model.parameter_names) | set(model.covariate_names)
    missing = sorted(needed - set(params))
    if missing:
        raise SpecError("parameters", f"missing {', '.join(missing)} for model {model.name}")
    unknown = sorted(set(params) - needed)
    if unknown:
        raise SpecError(f"parameters.{unknown[0]}", f"unknown parameter of model {model.name}; known: {', '.join(sorted(needed))}")
    sizes = {np.shape(v)[0] if np.ndim(v) else None for v in params.values()}
    sizes.discard(None)
    if len(sizes) > 1:
        raise SpecError("parameters", f"arrays have different numbers of animals: {sorted(sizes)}")
    n = sizes.pop() if sizes else 1
    if doses.time_h.shape[0] != n:
        raise SpecError("doses", f"{doses.time_h.shape[0]} animals of dose records for {n} animals of parameters")
    for name, v in params.items():
        if not np.all(np.isfinite(np.asarray(v, dtype=float))):
            raise SpecError(f"parameters.{name}", "contains non-finite values")
    if np.any(doses.per_kg > 0) and "bw" not in model.covariate_names:
        raise SpecError("doses", f"mg/kg doses need a body-weight covariate 'bw', which model {model.name} lacks")
    check_times(times_h, t0)
    if doses.n_records and np.any(doses.time_h < t0):
        raise SpecError("doses.time_h", f"doses must not start before the start time {t0} h")
    return n


def check_times(times_h, t0: float = 0.0) -> None:
    """Output times must be a non-empty, finite, non-decreasing 1-D list, all >= `t0`."""
    times_h = np.asarray(times_h, dtype=float)
    if times_h.ndim != 1 or times_h.size == 0:
        raise SpecError("times_h", "must be a non-empty 1-D list of times")
    if not np.all(np.isfinite(times_h)):
        raise SpecError("times_h", "must be finite")
    if np.any(np.diff(times_h) < 0):
        i = int(np.argmax(np.diff(times_h) < 0))
        raise SpecError("times_h", f"must be non-decreasing; time {times_h[i + 1]} follows {times_h[i]}")
    if times_h[0] < t0:
        raise SpecError("times_h", f"must be >= the start time {t0} h")


def simulate_population(
    model: Model,
    params: Mapping[str, np.ndarray],
    doses: DoseRecords,
    times_h,
    *,
    t0: float = 0.0,
    options: SolverOptions = SolverOptions(),
    chunk_size: int = 4096,
    on_chunk: Callable[[int, int], None] | None = None,
) -> PopulationSolution:
    """Solve every animal; `params[name]` has shape `(n_animals,)`.

    `on_chunk(done, total)` is called after each chunk (progress bars).
    """
    n = check_inputs(model, params, doses, times_h, t0)
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise SpecError("chunk_size", f"must be a whole number >= 1, got {chunk_size!r}")
    params = {k: np.broadcast_to(np.asarray(v, dtype=float), (n,)) for k, v in params.items()}
    times = np.asarray(times_h, dtype=float)
    chunk = min(chunk_size, n)
    dtype = np.float64 if options.dtype == "float64" else np.float32
    states = np.empty((n, times.size, model.n_states), dtype)
    obs = {name: np.empty((n, times.size), dtype) for name in model.observable_names}
    status = np.empty(n, np.int32)
    steps = np.empty(n, np.int64)
    save_times = jnp.asarray(times, dtype)
    compile_s, run_s, fn = 0.0, 0.0, None
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        idx = np.minimum(np.arange(lo, lo + chunk), n - 1)  # pad by repeating the last animal
        p = {k: jnp.asarray(v[idx], dtype) for k, v in params.items()}
        d = tuple(jnp.asarray(a[idx]) for a in doses.as_tuple())
        if fn is None:
            fn, compile_s = compiled_solver(model, options, float(t0), (p, d, save_times))
        start = time.perf_counter()
        s, o, st, ns = jax.block_until_ready(fn(p, d, save_times))
        run_s += time.perf_counter() - start
        m = hi - lo
        states[lo:hi] = np.asarray(s)[:m]
        for name in obs:
            obs[name][lo:hi] = np.asarray(o[name])[:m]
        status[lo:hi] = np.asarray(st)[:m]
        steps[lo:hi] = np.asarray(ns)[:m]
        if on_chunk is not None:
            on_chunk(hi, n)
    failed = status != 0
    for name in obs:
        obs[name][failed] = np.nan
    return PopulationSolution(states, obs, status, steps, times, compile_s, run_s)
