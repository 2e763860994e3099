"""The runner: one compiled, vmapped solve over animals, streamed in fixed-size chunks.

This is the only place that knows about batching, chunking and devices:

- **Cost grouping.** Before chunking, animals are put in order of a cheap cost proxy
  (`expected_cost`: the number of dose events, each of which restarts the step-size
  controller from small steps; a CIA-1 vehicle animal takes about 150 solver steps, a
  treated one about 210), so the lanes of a chunk, which advance in lockstep, do similar work. Results
  are scattered back to the original order and do not depend on the ordering.
- **Chunks.** Every chunk has the same shape (the last one is padded by repeating its
  final animal and the padding is dropped), so the whole population reuses a single
  compiled function; the per-chunk Python loop only moves data.
- **Devices.** Inside a chunk the animal axis is split over a mesh of every device of
  every process (`vtrial.engine.distributed`) with `shard_map`: each device runs the while
  loops of its own lanes with no communication until the results are gathered.
- **Streaming.** `iter_population_chunks` yields one `ChunkResult` per chunk, so a
  caller can reduce results as they come with memory bounded by the chunk size;
  `simulate_population` collects them into whole-population arrays.
- **Resume.** Given a chunk `store` (`vtrial.io.chunks.ChunkStore`), finished chunks
  are read back instead of being computed, and fresh ones are saved as they finish.

Each animal's result depends on nothing but its own inputs, so results do not change
with the chunk size, the order or the number of devices (up to rounding where the
per-device batch shape changes).

Lockstep accounting: the lanes on one device advance together until the slowest is
done, so a chunk costs `lanes_per_device x max steps` on each device. The reported
`lockstep_waste = 1 - sum_i steps_i / sum_(chunks, devices) lanes_per_device x max
steps` (padding lanes count as waste). It is exact when each animal is one solve
(`SolverOptions(events="jumps")`, the default with closed-form PK) and a lower bound
with `events="split"`, whose event segments are themselves in lockstep across lanes.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from vtrial.engine import distributed, export_cache, lapack
from vtrial.engine.events import DoseRecords
from vtrial.engine.exposure import ExposureSpec, exposure_model, exposure_solver, result_name
from vtrial.errors import SpecError
from vtrial.models.base import Model
from vtrial.engine.inputs import check_inputs, check_times  # noqa: F401  (check_times: re-exported)
from vtrial.engine.solve import IMPLICIT_SOLVERS, STATUS_NAMES, SolverOptions, observe_animal, solve_animal


@dataclass(frozen=True)
class PopulationSolution:
    """Batched results (host numpy arrays), in the order the animals were given.

    - `states`: `(n_animals, n_times, n_states)`, or None when not kept (`states=False`);
    - `observables`: name -> `(n_animals, n_times)`, NaN where the animal failed;
    - `status`: `(n_animals,)` codes into `STATUS_NAMES` (0 = ok);
    - `n_steps`: `(n_animals,)` solver steps taken;
    - `times_h`: `(n_times,)`;
    - `lockstep_waste`: share of the lane-steps paid for that did no work (see the
      module docstring); `chunk_size`, `n_chunks`, `n_devices`, `n_processes`: how the
      run was laid out.
    """

    states: np.ndarray | None
    observables: dict[str, np.ndarray]
    status: np.ndarray
    n_steps: np.ndarray
    times_h: np.ndarray
    compile_seconds: float = 0.0
    run_seconds: float = 0.0
    lockstep_waste: float = 0.0
    chunk_size: int = 0
    n_chunks: int = 0
    n_devices: int = 1
    n_processes: int = 1

    @property
    def status_names(self) -> np.ndarray:
        return np.asarray(STATUS_NAMES, dtype=object)[self.status]

    @property
    def n_failed(self) -> int:
        return int(np.count_nonzero(self.status))

    @property
    def steps_mean(self) -> float:
        return float(np.mean(self.n_steps)) if self.n_steps.size else 0.0

    @property
    def steps_max(self) -> int:
        return int(np.max(self.n_steps)) if self.n_steps.size else 0


@dataclass(frozen=True)
class ChunkResult:
    """The results of one chunk, in simulation order (see `ChunkPlan`).

    - `index`: the chunk's number in the plan;
    - `animals`: `(m,)` indices of its animals in the caller's arrays;
    - `observables`: name -> `(m, n_times)`, NaN where the animal failed;
    - `status`, `n_steps`: `(m,)`;
    - `lockstep_steps`: lane-steps the devices paid for (sum over devices of lanes x
      the slowest lane's steps);
    - `states`: `(m, n_times, n_states)`, or None when not asked for;
    - `seconds`: solve time (0 when `resumed`, i.e. read back from a store);
    - `extras`: the runner's `lane_outputs` per animal (name -> `(m, ...)`), NaN where
      the animal failed.
    """

    index: int
    animals: np.ndarray
    observables: dict[str, np.ndarray]
    status: np.ndarray
    n_steps: np.ndarray
    lockstep_steps: int
    states: np.ndarray | None = None
    seconds: float = 0.0
    resumed: bool = False
    extras: dict[str, np.ndarray] = field(default_factory=dict)


class AbstractChunkStore(Protocol):
    """Where finished chunks are kept for a resumable run (`vtrial.io.chunks.ChunkStore`)."""

    def finished(self) -> set[int]: ...

    def load(self, index: int) -> ChunkResult: ...

    def save(self, result: ChunkResult) -> None: ...


def expected_cost(doses: DoseRecords) -> np.ndarray:
    """A cheap per-animal proxy of solver work: the number of dose events with a non-zero
    amount (a bolus is one event, an infusion two: start and stop). Every event restarts
    the step-size controller from small steps, so animals with more events take more
    steps (CIA-1: about 150 steps for vehicle, 210 for a pump)."""
    amount = np.asarray(doses.amount)
    events = 1 + (np.asarray(doses.duration_h) > 0)
    return np.sum((amount != 0) * events, axis=-1).astype(np.int64)


@dataclass(frozen=True)
class ChunkPlan:
    """Which animals form which chunk.

    - `order`: `(n_animals,)` the animals in simulation order (a stable sort by cost,
      so animals of equal cost keep their original order);
    - `chunk_size`: animals per chunk (the last may have fewer);
    - `n_devices`: devices each chunk is split over; `lanes` (the batch actually
      computed) is `chunk_size` rounded up to a multiple of it.
    """

    order: np.ndarray
    chunk_size: int
    n_devices: int = 1

    @property
    def n_animals(self) -> int:
        return int(self.order.size)

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_animals / self.chunk_size)

    @property
    def lanes(self) -> int:
        return math.ceil(self.chunk_size / self.n_devices) * self.n_devices

    def animals(self, index: int) -> np.ndarray:
        return self.order[index * self.chunk_size : (index + 1) * self.chunk_size]


def plan_chunks(n_animals: int, chunk_size: int, *, cost=None, n_devices: int = 1) -> ChunkPlan:
    """Chunks of `chunk_size` animals taken in order of `cost` (ascending, stable), or in
    the given order when `cost` is None."""
    if not (isinstance(chunk_size, int | np.integer) and chunk_size >= 1):
        raise SpecError("chunk_size", f"must be a whole number >= 1, got {chunk_size!r}")
    if cost is None:
        order = np.arange(n_animals, dtype=np.int64)
    else:
        cost = np.asarray(cost)
        if cost.shape != (n_animals,):
            raise SpecError("order", f"a cost per animal is needed: shape ({n_animals},), got {cost.shape}")
        order = np.argsort(cost, kind="stable").astype(np.int64)
    return ChunkPlan(order, int(max(1, min(chunk_size, n_animals))), int(n_devices))


class AbstractLaneOutputs(Protocol):
    """Per-animal outputs computed inside the compiled solve, after it (e.g. observations
    with residual error): `outputs(observables, status, lane, shared) -> {name: array}`
    for ONE animal, where `observables[name]` is `(n_times,)`, `lane` holds this animal's
    entries of the runner's `lane_data` and `shared` the runner's `shared` inputs.

    It must be hashable by value (a frozen dataclass), because the compiled solve is
    cached on it; everything that changes between runs (keys, numbers) belongs in `lane`
    or `shared`, so a new seed or new values do not recompile."""

    def __call__(self, observables, status, lane, shared) -> dict: ...


@lru_cache(maxsize=64)
def batched_solver(
    model: Model, options: SolverOptions, t0: float, mesh: Mesh | None = None, states: bool = True,
    lane_outputs: AbstractLaneOutputs | None = None, exposure: ExposureSpec | None = None,
) -> Callable:
    """The jit-compiled, vmapped solve of `model` (cached per model, options, t0, mesh,
    `lane_outputs`, `exposure`): `f(params, doses, save_times, lane, shared)`. With an
    `exposure` spec its endpoints are computed in the solve (`vtrial.engine.exposure`).

    With a `mesh`, the vmapped solve runs under `shard_map`: every device solves its
    own slice of the animal axis independently.
    """

    solve_exposure = None if exposure is None else exposure_solver(model, exposure)

    def one(p, doses, save_times, lane, shared):
        if exposure is None:
            sol, exact = solve_animal(model, p, doses, save_times, t0=t0, options=options), {}
        else:
            sol, exact = solve_exposure(p, doses, save_times, t0, options)
            exact = {result_name(name): v for name, v in exact.items()}
        obs = observe_animal(model, p, doses, sol.states, save_times)
        extras = (lane_outputs(obs, sol.status, lane, shared) if lane_outputs is not None else {}) | exact
        return (sol.states if states else None), obs, sol.status, sol.n_steps, extras

    vmapped = jax.vmap(one, in_axes=(0, 0, None, 0, None))
    # The LAPACK bound counts the integrated AUC states an implicit solver's Jacobian carries too.
    flops = lapack_flops_per_animal(model if exposure is None else exposure_model(model, exposure), options)
    devices = mesh.devices.flat if mesh is not None else None
    per_device = 1 if mesh is None or options.solver not in IMPLICIT_SOLVERS else mesh.size

    def batched(p, doses, save_times, lane, shared):
        # On the CPU, animals in LAPACK-safe chunks (`vtrial.engine.lapack`: a larger batch
        # of factorisations can hang the process when the devices are the cores).
        n = jax.tree_util.tree_leaves(doses)[0].shape[0]
        if flops is None or not lapack.on_cpu(devices):
            return vmapped(p, doses, save_times, lane, shared)
        most = lapack.items_per_chunk(flops) * per_device
        return lapack.map_in_chunks(
            lambda p, doses, lane, save_times, shared: vmapped(p, doses, save_times, lane, shared),
            n, most, (p, doses, lane), (save_times, shared),
        )

    if mesh is None or mesh.size == 1 or options.solver in IMPLICIT_SOLVERS:
        # One device needs no shard_map. Implicit solvers' linear solves (lineax) reject
        # shard_map's per-device types, so there the sharded inputs are partitioned by
        # jit itself (GSPMD): still correct, with a cross-device check per solver step.
        return jax.jit(batched)
    split, whole = PartitionSpec(distributed.AXIS), PartitionSpec()
    return jax.jit(jax.shard_map(batched, mesh=mesh, in_specs=(split, split, whole, split, whole), out_specs=split, check_vma=False))


def lapack_flops_per_animal(model: Model, options: SolverOptions) -> int | None:
    """A bound on one animal's batched LAPACK work in the solve, or None when it has none:
    the closed-form PK takes its (n_pk x n_pk) mode matrices apart (eigh, inverse), and
    implicit solvers factorise the (n_states x n_states) Jacobian."""
    sizes = []
    if model.linear_pk is not None:
        sizes.append(len(model.linear_pk.states))
    if options.solver in IMPLICIT_SOLVERS:
        sizes.append(model.n_states)
    return max(sizes) ** 3 if sizes else None


#: Compiled executables, most recently used last. Bounded: each holds its machine code
#: and buffers, and a long session (a dose search, a test suite) meets many shapes; an
#: evicted entry recompiles from JAX's persistent cache in a fraction of a second.
_COMPILED: OrderedDict = OrderedDict()
_COMPILED_MAX = 32


def compiled_solver(
    model: Model, options: SolverOptions, t0: float, args, *, mesh: Mesh | None = None, states: bool = True,
    lane_outputs: AbstractLaneOutputs | None = None, exposure: ExposureSpec | None = None,
) -> tuple[Callable, float]:
    """Ahead-of-time compiled solver for the shapes of `args`, and the seconds compiling took.

    Compiled executables are kept per (model, options, t0, mesh, lane outputs, shapes), so
    a second run with the same shapes compiles nothing (0 s); a new process reads the
    traced solve from `export_cache` (no tracing) and its executable from JAX's
    persistent cache.
    """
    shapes = tuple((tuple(a.shape), str(a.dtype)) for a in jax.tree_util.tree_leaves(args))
    key = (model, options, t0, mesh, states, lane_outputs, exposure, jax.tree_util.tree_structure(args), shapes)
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key], 0.0
    start = time.perf_counter()
    mesh_key = None if mesh is None else (mesh.size, mesh.devices.flat[0].platform, mesh.axis_names)
    # The LAPACK work bound decides the solve's chunking at trace time (`batched_solver`).
    path = export_cache.entry_path(
        model, ("batched_solver", options, float(t0), mesh_key, states, lane_outputs, exposure, lapack.LAPACK_PARALLEL_WORK), args
    )
    compiled = export_cache.compile_exported(
        lambda: batched_solver(model, options, t0, mesh, states, lane_outputs, exposure), path, args
    )
    _COMPILED[key] = compiled
    while len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
    return compiled, time.perf_counter() - start


def clear_compiled() -> None:
    """Forget every compiled solver this module keeps (with `jax.clear_caches()`, this frees
    their machine code). A process that compiles thousands of executables (a test suite)
    otherwise runs out of memory mappings: XLA's CPU code lives in its own mappings, and
    Linux allows 65,530 per process by default."""
    _COMPILED.clear()
    batched_solver.cache_clear()
    export_cache.forget_compiled()  # a fit's per-subject functions too


class PopulationChunks:
    """The chunks of one population solve, computed (or read back) as they are iterated.

    Made by `iter_population_chunks`; iterate once. While and after iterating:
    `plan`, `compile_seconds`, `run_seconds`, `chunks_computed`, `chunks_resumed`,
    `lockstep_waste`, `mesh`.

    The next chunk is dispatched before the current one is handed over, so the devices
    solve it while the caller reduces or writes the current one. `run_seconds` is the
    wall time the computed chunks took from dispatch to collection, compilation
    excluded; what the caller does with a chunk in the meantime overlaps with it.
    """

    def __init__(self, model, params, doses, times_h, *, t0, options, chunk_size, order, states, devices, store,
                 lane_data=None, shared=None, lane_outputs=None, exposure=None):
        n = check_inputs(model, params, doses, times_h, t0)
        if isinstance(order, str):
            if order not in ("cost", "input"):
                raise SpecError("order", f"must be 'cost', 'input' or a cost per animal, got {order!r}")
            cost = expected_cost(doses) if order == "cost" else None
        else:
            cost = order
        self.mesh = distributed.animal_mesh(devices)
        self.plan = plan_chunks(n, chunk_size, cost=cost, n_devices=self.mesh.size)
        self.model, self.options, self.t0, self.states, self.store = model, options, float(t0), states, store
        self.dtype = np.float64 if options.dtype == "float64" else np.float32
        self.params = {k: np.broadcast_to(np.asarray(v, dtype=float), (n,)) for k, v in params.items()}
        self.doses = DoseRecords(*doses).map(np.asarray)
        self.times_h = np.asarray(times_h, dtype=float)
        self._split, replicated = distributed.shardings(self.mesh)
        self._save_times = distributed.to_global(self.times_h.astype(self.dtype), replicated)
        self.lane_data = {k: np.asarray(v) for k, v in (lane_data or {}).items()}
        for name, v in self.lane_data.items():
            if v.shape[:1] != (n,):
                raise SpecError(f"lane_data.{name}", f"needs one entry per animal: shape ({n}, ...), got {v.shape}")
        self.lane_outputs, self.exposure = lane_outputs, exposure
        self._shared = distributed.to_global(jax.tree_util.tree_map(np.asarray, shared or {}), replicated)
        self._fn = None
        self.compile_seconds = self.run_seconds = 0.0
        self._last_collected = -math.inf
        self.chunks_computed = self.chunks_resumed = 0
        self._steps = self._lockstep = 0
        self._iterated = False

    @property
    def lockstep_waste(self) -> float:
        return 1.0 - self._steps / self._lockstep if self._lockstep else 0.0

    def _finished(self) -> np.ndarray:
        """Which chunks the store already holds (process 0 decides for everyone)."""
        done = np.zeros(self.plan.n_chunks, dtype=np.int32)
        if self.store is not None and distributed.is_writer():
            for k in self.store.finished():
                if 0 <= k < done.size:
                    done[k] = 1
        return distributed.broadcast(done) if distributed.process_count() > 1 else done

    def __iter__(self) -> Iterator[ChunkResult]:
        if self._iterated:
            raise RuntimeError("the chunks of a population solve can be iterated only once")
        self._iterated = True
        done = self._finished()
        writer = distributed.is_writer()
        todo = iter([k for k in range(self.plan.n_chunks) if not done[k]])
        in_flight: dict[int, tuple] = {}

        def launch():  # dispatch the next chunk to compute; JAX runs it while we go on
            k = next(todo, None)
            if k is not None:
                in_flight[k] = self._dispatch(k)

        launch()
        for k in range(self.plan.n_chunks):
            if done[k]:
                if not writer:  # only process 0 reads the store; the others skip ahead
                    continue
                result = self.store.load(k)
                if not np.array_equal(result.animals, self.plan.animals(k)):
                    raise SpecError("--resume", f"stored chunk {k} holds other animals than this run's chunk {k}; start afresh")
                self.chunks_resumed += 1
            else:
                launch()  # the following chunk runs on the devices while this one is consumed
                result = self._collect(*in_flight.pop(k))
                self.chunks_computed += 1
                if self.store is not None and writer:
                    self.store.save(result)
            self._steps += int(np.sum(result.n_steps))
            self._lockstep += int(result.lockstep_steps)
            yield result

    def _dispatch(self, k: int) -> tuple:
        start = time.perf_counter()
        idx = self.plan.animals(k)
        take = idx[np.minimum(np.arange(self.plan.lanes), idx.size - 1)]  # pad by repeating the last animal
        p = distributed.to_global({name: v[take].astype(self.dtype) for name, v in self.params.items()}, self._split)
        d = distributed.to_global(self.doses.take(take), self._split)
        lane = distributed.to_global({name: v[take] for name, v in self.lane_data.items()}, self._split)
        args = (p, d, self._save_times, lane, self._shared)
        if self._fn is None:
            self._fn, self.compile_seconds = compiled_solver(
                self.model, self.options, self.t0, args, mesh=self.mesh, states=self.states, lane_outputs=self.lane_outputs,
                exposure=self.exposure,
            )
            start += self.compile_seconds
        return k, idx, self._fn(*args), start  # the solve runs asynchronously

    def _collect(self, k: int, idx: np.ndarray, out, dispatched_at: float) -> ChunkResult:
        s, o, st, ns, ex = distributed.to_host(out)
        now = time.perf_counter()
        seconds = now - max(dispatched_at, self._last_collected)  # wall time this chunk added
        self._last_collected = now
        self.run_seconds += seconds
        m = idx.size
        per_device = ns.reshape(self.plan.n_devices, -1)
        lockstep = int(per_device.max(axis=1).sum()) * per_device.shape[1]
        failed = st[:m] != 0
        obs = {name: np.where(failed[:, None], np.nan, v[:m]) for name, v in o.items()}
        extras = {name: _mask_failed(v[:m], failed) for name, v in ex.items()}
        return ChunkResult(k, idx, obs, st[:m].astype(np.int32), ns[:m].astype(np.int64), lockstep, None if s is None else s[:m], seconds,
                           extras=extras)


def _mask_failed(values: np.ndarray, failed: np.ndarray) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.floating):
        return values
    return np.where(failed.reshape((-1,) + (1,) * (values.ndim - 1)), np.nan, values)


def iter_population_chunks(
    model: Model,
    params: Mapping[str, np.ndarray],
    doses: DoseRecords,
    times_h,
    *,
    t0: float = 0.0,
    options: SolverOptions = SolverOptions(),
    chunk_size: int = 4096,
    order="cost",
    states: bool = True,
    devices=None,
    store: AbstractChunkStore | None = None,
    lane_data: Mapping[str, np.ndarray] | None = None,
    shared=None,
    lane_outputs: AbstractLaneOutputs | None = None,
    exposure: ExposureSpec | None = None,
) -> PopulationChunks:
    """Solve a population chunk by chunk; iterate the result for `ChunkResult`s.

    **Arguments:** as `simulate_population`, plus
    - `states`: also return the states (off saves the transfer when only the
      observables are used);
    - `store`: finished chunks are read from it instead of being computed, and newly
      computed ones are saved to it (process 0 only in a multi-process run; the other
      processes skip finished chunks and yield only the ones they computed);
    - `lane_outputs`, `lane_data` (name -> `(n_animals, ...)`), `shared` (a pytree):
      per-animal outputs computed inside the compiled solve (see `AbstractLaneOutputs`),
      returned in `ChunkResult.extras`;
    - `exposure`: endpoints computed from the solver (`vtrial.engine.exposure`), returned
      in `ChunkResult.extras` under `exposure.result_name(name)`.

    Inputs are checked now, before anything is compiled; chunks are solved lazily.
    """
    return PopulationChunks(
        model, params, doses, times_h, t0=t0, options=options, chunk_size=chunk_size, order=order, states=states,
        devices=devices, store=store, lane_data=lane_data, shared=shared, lane_outputs=lane_outputs, exposure=exposure,
    )


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
    order="cost",
    devices=None,
    states: bool = True,
) -> PopulationSolution:
    """Solve every animal; `params[name]` has shape `(n_animals,)`.

    - `chunk_size`: animals per compiled batch (per chunk over all devices);
    - `states`: keep every state at every time (`False`: only the observables, which
      saves the device-to-host transfer and `n_animals x n_times x n_states` of memory);
    - `order`: "cost" (default: chunk animals of similar expected cost together, see
      `expected_cost`), "input" (as given), or a cost per animal (e.g. the `n_steps`
      of an earlier run); results are the same whatever the order;
    - `devices`: the devices to split each chunk over (default: all of them);
    - `on_chunk(done, total)` is called after each chunk (progress bars).
    """
    chunks = iter_population_chunks(
        model, params, doses, times_h, t0=t0, options=options, chunk_size=chunk_size, order=order, devices=devices,
        states=states,
    )
    n = chunks.plan.n_animals
    parts = ((c.animals, {"states": c.states, "observables": c.observables, "status": c.status, "n_steps": c.n_steps}) for c in chunks)
    got = gather(n, parts, on_chunk)
    times = chunks.times_h
    states, obs = got.get("states"), got.get("observables", {})
    status, steps = got.get("status", np.empty(0, np.int32)), got.get("n_steps", np.empty(0, np.int64))
    return PopulationSolution(
        states, obs, status, steps, times, chunks.compile_seconds, chunks.run_seconds,
        lockstep_waste=chunks.lockstep_waste, chunk_size=chunks.plan.chunk_size, n_chunks=chunks.plan.n_chunks,
        n_devices=chunks.mesh.size, n_processes=distributed.process_count(),
    )


def gather(n: int, parts, on_chunk: Callable[[int, int], None] | None = None) -> dict:
    """Scatter per-chunk arrays into whole-population arrays: `parts` yields `(rows,
    arrays)` with `arrays` a dict of `(m, ...)` arrays (or of such dicts, one level deep;
    None values are skipped); the result has the same structure with `n` rows each.
    `on_chunk(done, n)` is called after each part."""
    out: dict = {}
    done = 0

    def put(target: dict, name, value, rows):
        if value is None:
            return
        if name not in target:
            target[name] = np.empty((n, *np.shape(value)[1:]), np.asarray(value).dtype)
        target[name][rows] = value

    for rows, arrays in parts:
        for name, value in arrays.items():
            if isinstance(value, dict):
                sub = out.setdefault(name, {})
                for k, v in value.items():
                    put(sub, k, v, rows)
            else:
                put(out, name, value, rows)
        done += len(rows)
        if on_chunk is not None:
            on_chunk(done, n)
    return out
