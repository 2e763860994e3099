"""Branch predicates that stay scalar under an outer `vmap`.

`jax.lax.cond` under `vmap` with a batched predicate computes both branches and selects.
A batched computation that uses `cond` to skip work when every item can skip it (the
EBE iteration of `vtrial.estimation.focei`: all subjects optimal, or all taking the full
Newton step) loses that saving when an outer `vmap` adds a batch axis (the replicates of
`vtrial.estimation.batched_fit`). `all_in_batch(p)` is `p` for one item and, under
`vmap`, the conjunction over the batch, unbatched: the branch is skipped only when every
item of every batch can skip it, as for one flat batch. Only for predicates whose branch
choice does not change any item's result (a saving, never a different answer).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import custom_batching


@custom_batching.custom_vmap
def all_in_batch(predicate):
    """`predicate` (a boolean scalar); under `vmap`, True only where it holds for every item."""
    return predicate


@all_in_batch.def_vmap
def _all_in_batch_vmap(axis_size, in_batched, predicate):
    (batched,) = in_batched
    return (jnp.all(predicate, axis=0) if batched else predicate), False
