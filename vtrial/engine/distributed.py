"""Devices and processes: the mesh the runner spreads animals over, and multi-process setup.

Only the runner (`vtrial.engine.runner`) uses this module; model code never sees a device.

- **One process** (the default): every local device (all GPUs of a node, or the CPU
  devices made with `XLA_FLAGS=--xla_force_host_platform_device_count=N`) forms a 1-D
  mesh whose axis is `"animals"`; each chunk of animals is split evenly over it.
- **Several processes** (one per host, or one per GPU): call `initialize` before any
  JAX work (the CLI does, from `--coordinator HOST:PORT --num-processes N
  --process-id I` or the `VTRIAL_*` environment variables). `jax.devices()` then
  lists every process's devices, the mesh spans them all, every process runs the same
  program on the same (deterministic) inputs and computes its own shard of each chunk,
  results are gathered to every process, and process 0 writes the outputs.

Randomness is keyed per animal index, so none of this changes any result.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vtrial.errors import SpecError

#: The mesh axis animals are sharded over.
AXIS = "animals"
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = "VTRIAL_COORDINATOR", "VTRIAL_NUM_PROCESSES", "VTRIAL_PROCESS_ID"


def _int_or_none(value, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SpecError(name, f"must be a whole number, got {value!r}") from None


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> bool:
    """Join a multi-process run through `jax.distributed` when one is asked for.

    Arguments fall back to the environment variables `VTRIAL_COORDINATOR`,
    `VTRIAL_NUM_PROCESSES` and `VTRIAL_PROCESS_ID`. With no coordinator this does
    nothing (a single-process run). `coordinator="auto"` lets JAX detect the cluster
    (SLURM, Open MPI, Cloud TPU). Must run before any JAX computation.

    **Returns:** whether this process is part of a multi-process run.
    """
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _int_or_none(os.environ.get(ENV_NUM_PROCESSES), "--num-processes")
    process_id = process_id if process_id is not None else _int_or_none(os.environ.get(ENV_PROCESS_ID), "--process-id")
    if coordinator is None:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise SpecError("--coordinator", "a multi-process run needs the coordinator's HOST:PORT")
        return False
    if jax.distributed.is_initialized():
        return True
    # CPU processes exchange results through gloo (JAX's default in recent versions; set
    # explicitly for older ones). GPUs use NCCL whatever this says.
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError):  # pragma: no cover - very old or very new JAX
        pass
    if coordinator == "auto":
        jax.distributed.initialize()
        return True
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise SpecError("--coordinator", f"must be HOST:PORT (or 'auto'), got {coordinator!r}")
    if num_processes is None or num_processes < 1:
        raise SpecError("--num-processes", "a multi-process run needs the number of processes (>= 1)")
    if process_id is None or not 0 <= process_id < num_processes:
        raise SpecError("--process-id", f"must lie in 0..{num_processes - 1}, got {process_id!r}")
    jax.distributed.initialize(coordinator, num_processes, process_id)
    return True


def process_count() -> int:
    return jax.process_count()


def is_writer() -> bool:
    """Whether this process writes outputs (process 0; the only one when not distributed)."""
    return jax.process_index() == 0


def animal_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process) with axis `"animals"`."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise SpecError("devices", "no devices to run on")
    return Mesh(np.asarray(devices, dtype=object), (AXIS,))


def shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """(split over animals along the leading axis, replicated)."""
    return NamedSharding(mesh, PartitionSpec(AXIS)), NamedSharding(mesh, PartitionSpec())


def to_global(tree, sharding: NamedSharding):
    """Host numpy arrays (the same on every process) -> global arrays laid out by `sharding`.

    Each process materialises only its own devices' slices.
    """
    return jax.tree_util.tree_map(lambda a: jax.make_array_from_callback(a.shape, sharding, lambda i: a[i]), tree)


def to_host(tree):
    """Global arrays -> numpy on every process (gathered across processes when needed)."""

    def one(x):
        if getattr(x, "is_fully_addressable", True):
            return np.asarray(x)
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree_util.tree_map(one, tree)


def broadcast(x: np.ndarray) -> np.ndarray:
    """Process 0's `x` on every process (a no-op in a single process)."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(x)))


def describe(mesh: Mesh | None = None) -> dict:
    """Devices and processes, for run.json."""
    devices = list(mesh.devices.flat) if mesh is not None else jax.devices()
    d = devices[0]
    return {
        "devices": len(devices),
        "device_kind": f"{d.platform}:{getattr(d, 'device_kind', d.platform)}",
        "processes": jax.process_count(),
    }


def device_summary() -> str:
    """The devices in one line, e.g. `gpu:NVIDIA H200 x1` or `cpu:cpu x2` (for run.json)."""
    d = jax.devices()[0]
    return f"{d.platform}:{getattr(d, 'device_kind', d.platform)} x{jax.device_count()}"
