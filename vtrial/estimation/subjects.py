"""The subject axis of a population fit: a dataset's per-subject JAX arrays (padded to
shared shapes), the devices they are split over, and per-subject functions compiled
over them.

Subjects are independent: with several devices (GPUs, or the CPU cores
`vtrial.settings.use_all_cpu_cores` exposes) a per-subject function runs under
`shard_map`, each device on its own slice of subjects, and on each device in chunks that
keep jaxlib's batched linear algebra on the calling thread (`vtrial.engine.lapack`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vtrial.engine import distributed, export_cache, lapack
from vtrial.engine.events import DoseRecords
from vtrial.engine.solve import IMPLICIT_SOLVERS, SolverOptions
from vtrial.estimation.censoring import censored_rows
from vtrial.estimation.occasions import occasion_arrays
from vtrial.models.base import Model


class SubjectArrays(NamedTuple):
    """Per-subject data as JAX arrays (leading axis: subject)."""

    doses: DoseRecords
    times: jnp.ndarray  # (n, n_obs) sorted
    observable: jnp.ndarray  # (n, n_obs) int
    dv: jnp.ndarray
    mask: jnp.ndarray  # (n, n_obs) float 1/0
    covariates: jnp.ndarray  # (n, n_model_covariates)
    cens: jnp.ndarray  # (n, n_obs) float: 1 below a lower limit, -1 above an upper one (dv: the limit), 0 quantified
    # With occasions (`vtrial.estimation.occasions`): the occasion in effect from each of
    # `doses.changes` on, (n, n_changes) int, and the occasion levels each subject has,
    # (n, n_occasions) 1/0; None without.
    occasion_level: jnp.ndarray | None = None
    occasion_present: jnp.ndarray | None = None


export_cache.serializable(SubjectArrays)


def in_lapack_safe_chunks(fn, flops_per_subject: Callable[[SubjectArrays], int]):
    """`fn(x, constants, data, *per_subject)` over the subjects in chunks (a `lax.map`)
    whose batched LAPACK calls stay under jaxlib's parallel threshold
    (`vtrial.engine.lapack`: above it, one device per core hangs), when there are more
    subjects than that allows (`flops_per_subject(data)`: a bound on one subject's work)."""

    def chunked(x, constants, data, *rest):
        n = data.times.shape[0]
        most = lapack.items_per_chunk(flops_per_subject(data))
        return lapack.map_in_chunks(lambda *per_subject: fn(x, constants, *per_subject), n, most, (data, *rest))

    return chunked


def compile_over_subjects(fn, mesh: Mesh | None, flops_per_subject: Callable[[SubjectArrays], int], exported=None):
    """jit of `fn(x, constants, data, *per_subject)` (every output per subject), split over
    the subjects across `mesh`'s devices, each device's subjects in LAPACK-safe chunks.
    `exported=(model, key)`: compiled through `export_cache` (`key`: what besides the model
    and the arguments' shapes decides `fn`'s trace), so a new process does not trace it."""
    fn = in_lapack_safe_chunks(fn, flops_per_subject)

    def jit(f):
        if exported is None:
            return jax.jit(f)
        model, key = exported
        mesh_key = None if mesh is None else (mesh.size, mesh.devices.flat[0].platform, mesh.axis_names)
        return export_cache.Exported(jax.jit(f), model, (*key, mesh_key, lapack.LAPACK_PARALLEL_WORK))

    if mesh is None or mesh.size == 1:
        return OverSubjects(jit(fn), None)
    whole, split = PartitionSpec(), PartitionSpec(distributed.AXIS)

    def sharded(x, constants, *per_subject):
        mapped = jax.shard_map(
            lambda x, constants, per_subject: fn(x, constants, *per_subject),
            mesh=mesh, in_specs=(whole, whole, split), out_specs=split, check_vma=False,
        )
        return mapped(x, constants, per_subject)

    return OverSubjects(jit(sharded), mesh)


class OverSubjects:
    """A function compiled over the subjects (`compile_over_subjects`), called like `fn`.

    Besides the call: `compile(*args)` compiles it (or reads it from the caches) for
    arguments laid out as `args` without running it, and `output_shapes(*args)` gives its
    outputs' shapes, dtypes and shardings without computing them (from its export when
    there is one: no tracing). So a caller compiles the pieces it needs later in a
    background thread, a piece from the output shapes of the one before it, while it
    computes. Arguments may be arrays or `jax.ShapeDtypeStruct`s."""

    def __init__(self, jitted, mesh: Mesh | None):
        self._jitted = jitted  # a jax.jit function or an export_cache.Exported
        self._split = None if mesh is None else NamedSharding(mesh, PartitionSpec(distributed.AXIS))
        self._replicated = None if mesh is None else NamedSharding(mesh, PartitionSpec())

    def _place(self, x, constants, *per_subject):
        """Inputs laid out as the outputs are (a no-op for those), so that fresh host
        arrays and earlier results hit the same executable."""
        if self._split is None:
            return (x, constants, *per_subject)
        return (*_put((x, constants), self._replicated), *_put(per_subject, self._split))

    def __call__(self, *args):
        return self._jitted(*self._place(*args))

    def compile(self, *args):
        args = self._place(*args)
        if isinstance(self._jitted, export_cache.Exported):
            return self._jitted.compile(*args)
        return self._jitted.lower(*args).compile()

    def output_shapes(self, *args):
        args = self._place(*args)
        if isinstance(self._jitted, export_cache.Exported):
            shapes = self._jitted.output_shapes(*args)
        else:
            shapes = jax.eval_shape(self._jitted, *args)
        # Every output is per subject: split as the inputs are, or on the inputs' device.
        sharding = self._split if self._split is not None else getattr(args[0], "sharding", None)
        return jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding, weak_type=s.weak_type), shapes)


def _put(tree, sharding):
    """`jax.device_put(tree, sharding)`; `jax.ShapeDtypeStruct`s get `sharding` as theirs."""
    if not any(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree_util.tree_leaves(tree)):
        return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding, weak_type=a.weak_type)
        if isinstance(a, jax.ShapeDtypeStruct) else jax.device_put(a, sharding), tree)


def subject_sharding(mesh: Mesh | None) -> NamedSharding | None:
    """How per-subject arrays are laid out over `mesh` (None: one device)."""
    return None if mesh is None or mesh.size == 1 else distributed.shardings(mesh)[0]


def subject_mesh(options: SolverOptions) -> Mesh | None:
    """The devices a fit splits its subjects over: every local device (None when there is
    one). Implicit solvers' linear solves (lineax) reject `shard_map`'s per-device types
    (as in the runner): they run on one device."""
    devices = jax.local_devices()
    if len(devices) < 2 or options.solver in IMPLICIT_SOLVERS:
        return None
    return distributed.animal_mesh(devices)


#: The subject axis is padded to a multiple of this (see `subject_arrays`).
SUBJECT_BUCKET = 8


def size_bucket(n: int) -> int:
    """The smallest of 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (powers of two and 1.5 times them)
    that is >= `n`: the sizes the axes of a fit's arrays are padded to, so that datasets of
    similar size share compiled functions (at most 50% padding, 33% on average)."""
    size = 1
    while size < n:
        size = size * 3 // 2 if size >= 2 and (size & (size - 1)) == 0 else (size * 4 // 3 if size > 2 else size + 1)
    return size


def _pad_last_axis(a: np.ndarray, size: int, value) -> np.ndarray:
    """`a` (axes: subject, item, ...) padded along its item axis to `size` with `value`."""
    width = [(0, 0)] * a.ndim
    width[1] = (0, size - a.shape[1])
    return np.pad(a, width, constant_values=value)


def _bucketed_doses(doses: DoseRecords) -> DoseRecords:
    """Dose records padded to `size_bucket(n_records)` with records that change nothing
    (zero-amount boluses at t = 0, plain items, as the dataset readers pad)."""
    size = size_bucket(doses.n_records)
    if size == doses.n_records:
        return doses
    pad = lambda a, value=0: _pad_last_axis(np.asarray(a), size, value)  # noqa: E731
    items = doses.nonmem
    if items is not None:
        items = items._replace(**{f: pad(getattr(items, f)) for f in ("rate", "modelled", "ss", "ii_h", "reset")},
                               covariates=pad(items.covariates, np.nan))
    return doses._replace(**{f: pad(getattr(doses, f)) for f in DoseRecords._fields[:5]}, nonmem=items)


def subject_arrays(model: Model, data, devices: int = 1, occasions: bool = False,
                   sharding: NamedSharding | None = None) -> tuple[SubjectArrays, np.ndarray, float]:
    """JAX arrays of a `PopulationData`, observations sorted by time within each subject,
    the subject axis padded to `size_bucket` and to a multiple of `SUBJECT_BUCKET` and of
    `devices` (the mesh's size: each device gets as many subjects; per-subject results:
    take the first `data.n_subjects`), observations and dose records per subject to
    `size_bucket` too (padding: masked observations, doses that change nothing; results
    per observation: take the first `data.obs_time_h.shape[1]`). `occasions`: with the
    data's occasions (`data.occasions`) as parameter changes
    (`vtrial.estimation.occasions.occasion_arrays`). `sharding`: where the arrays are
    put (`subject_sharding`: split over the mesh's devices, as the compiled functions take
    them; default: the default device).

    Returns the arrays, the sorting permutation `(n, n_obs)` and the solve's start time.
    """
    times = np.asarray(data.obs_time_h, float)
    mask = np.asarray(data.obs_mask, bool)
    # Padding sorts last (its time is the last real time); a stable sort keeps ties in
    # file order.
    key = np.where(mask, times, np.inf)
    order = np.argsort(key, axis=1, kind="stable")
    cov_cols = []
    for name in model.covariate_names:
        if name in data.covariates:
            cov_cols.append(np.asarray(data.covariates[name], float))
        else:
            ref = next(c.reference for c in model.covariates if c.name == name)
            cov_cols.append(np.full(times.shape[0], ref))
    covariates = np.stack(cov_cols, axis=1) if cov_cols else np.zeros((times.shape[0], 0))
    doses = _bucketed_doses(DoseRecords(*data.doses).map(np.asarray))
    t0 = float(min(0.0, np.min(times), np.min(np.asarray(doses.time_h)) if doses.time_h.size else 0.0))
    occasion_level = occasion_present = None
    if occasions:
        doses, occasion_level, occasion_present = occasion_arrays(model, doses, data.occasions, t0)
        occasion_level, occasion_present = np.asarray(occasion_level, np.int32), np.asarray(occasion_present, float)
    n_obs = size_bucket(times.shape[1])
    take = lambda a, value=0: _pad_last_axis(np.take_along_axis(np.asarray(a), order, axis=1), n_obs, value)  # noqa: E731
    sorted_times = take(times)
    sorted_mask = take(mask, False)
    # Padding repeats the subject's last real time, so save times stay non-decreasing.
    last = np.max(np.where(sorted_mask, sorted_times, -np.inf), axis=1, initial=-np.inf)
    last = np.where(np.isfinite(last), last, 0.0)
    sorted_times = np.where(sorted_mask, sorted_times, last[:, None])
    arrays = SubjectArrays(
        doses=doses.map(lambda a: np.asarray(a, np.int32 if np.issubdtype(a.dtype, np.integer) else float)),
        times=sorted_times,
        observable=np.asarray(take(data.obs_observable), np.int32),
        dv=np.where(sorted_mask, take(np.asarray(data.dv, float)), 0.0),
        mask=np.asarray(sorted_mask, float),
        covariates=covariates,
        cens=np.asarray(take(censored_rows(data)), float),
        occasion_level=occasion_level,
        occasion_present=occasion_present,
    )
    # Pad the subject axis with subjects that have no observations (they contribute
    # exactly 0): datasets of nearby sizes then share compiled functions. In numpy, then
    # on the devices once, as the compiled functions take them: no small compiled
    # operations (converting, or slicing a one-device array for each device at each call).
    n = times.shape[0]
    multiple = math.lcm(SUBJECT_BUCKET, devices)
    pad = -(-size_bucket(n) // multiple) * multiple - n
    if pad:
        arrays = jax.tree_util.tree_map(lambda a: np.concatenate([a, np.repeat(a[:1], pad, axis=0)]), arrays)
        arrays = arrays._replace(mask=np.concatenate([arrays.mask[:n], np.zeros((pad, arrays.mask.shape[1]))]))
    return jax.device_put(arrays, sharding), order, t0
