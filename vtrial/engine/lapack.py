"""Batched linear algebra that cannot hang: per-item functions mapped in LAPACK-safe chunks.

jaxlib 0.10's CPU LAPACK kernels (Cholesky, LU, eigh, triangular solves, ...) split a
batch whose estimated work exceeds `LAPACK_PARALLEL_WORK` flops over XLA's intra-op thread
pool and block until the pieces are done. When every thread of that pool is itself such a
kernel (one per device when the devices are the CPU cores, as `vtrial.settings
.use_all_cpu_cores` sets them up) nobody is left to run the pieces and the process hangs
for good (seen: the CWRES of 20 subjects of 50 observations per device in a fit; `vtrial
run` of CIA-1 with 10,000 animals per device, whose closed-form PK takes each animal's
4 x 4 mode matrices apart). jaxlib 0.11.1 drops that parallel path; until it is the floor,
every batched computation that may call LAPACK on the CPU goes through `map_in_chunks`,
which takes the batch in a `lax.map` of chunks small enough to stay on the calling thread.

Results do not change: every item is computed on its own, whatever chunk it lands in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

#: jaxlib's threshold (flops of one batched call) above which it parallelises the batch.
LAPACK_PARALLEL_WORK = 200_000


def items_per_chunk(flops_per_item: int) -> int:
    """The most items whose batched LAPACK calls, of `flops_per_item` each, stay under
    `LAPACK_PARALLEL_WORK`."""
    return max(1, (LAPACK_PARALLEL_WORK - 1) // max(int(flops_per_item), 1))


def map_in_chunks(fn: Callable, n: int, most: int, batched: tuple, unbatched: tuple = ()):
    """`fn(*batched, *unbatched)` for a `fn` vmapped over the leading axis (size `n`) of
    every leaf of `batched`, computed in a `lax.map` over equal chunks of at most `most`
    items when `n > most`. The last chunk is filled up with copies of the first item (a
    valid input, so padding never produces NaN or a failure) and the padding is dropped.
    """
    if n <= most:
        return fn(*batched, *unbatched)
    n_chunks = math.ceil(n / most)
    size = math.ceil(n / n_chunks)
    pad = n_chunks * size - n

    def split(a):
        if pad:
            a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)])
        return a.reshape((n_chunks, size) + a.shape[1:])

    chunks = jax.tree_util.tree_map(split, batched)
    out = jax.lax.map(lambda chunk: fn(*chunk, *unbatched), chunks)
    return jax.tree_util.tree_map(lambda a: a.reshape((n_chunks * size,) + a.shape[2:])[:n], out)


def on_cpu(devices=None) -> bool:
    """Whether the computation runs on CPU devices (the only backend with the hang)."""
    if devices is not None:
        return all(d.platform == "cpu" for d in devices)
    return jax.default_backend() == "cpu"
