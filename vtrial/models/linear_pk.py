"""What a model declares about its linear PK: which states form it and its rate constants.

Only the declaration lives with the models; the closed-form propagation that uses it is
`vtrial.engine.linear_pk`. See there for the mathematics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import jax.numpy as jnp


class MammillaryConstants(NamedTuple):
    """Rate constants of one animal: `ka` (n_depots,) 1/h, `cl` L/h, `v1` L, `q` and `v` (n_peripherals,)."""

    ka: jnp.ndarray
    cl: jnp.ndarray
    v1: jnp.ndarray
    q: jnp.ndarray
    v: jnp.ndarray


@dataclass(frozen=True)
class LinearPK:
    """Which states are linear PK, and how to get their rate constants from parameters.

    - `depots`: state names of the absorption chain, in order (may be empty);
    - `central`: the central compartment's state name;
    - `peripherals`: peripheral compartments (0 to 2);
    - `constants(p) -> MammillaryConstants`: after covariate scaling.

    The model's own `vector_field` must give the same derivatives for these states
    (the tests check it); the closed form is then an exact replacement for them.
    """

    depots: tuple[str, ...]
    central: str
    peripherals: tuple[str, ...]
    constants: Callable[[Mapping[str, jnp.ndarray]], MammillaryConstants]

    @property
    def states(self) -> tuple[str, ...]:
        return (*self.depots, self.central, *self.peripherals)
