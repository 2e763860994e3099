"""The optax optimisation loop shared by every fit and calibration: L-BFGS in one compiled call.

Lives in the engine because it is pure JAX: estimation (curve fits, population fits) and
design (dose optimisation) build their objectives and call it under `jax.jit`, so an
optimisation is one compiled computation with no host round-trip per step.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

#: Consecutive steps without a decrease above rounding before the loop stops.
STALL_STEPS = 3
#: A decrease smaller than this (relative to max(1, |f|)) is rounding.
EPS_REL = 8 * float(np.finfo(np.float64).eps)


def minimize_lbfgs(objective: Callable, u0, max_steps, tol, learning_rate=None):
    """Minimise `objective(u)` (a flat array `u`) with L-BFGS and a zoom line search, inside
    one `lax.while_loop` (traceable: call it under `jax.jit`).

    Stops when $\\|\\nabla f\\| \\le \\mathrm{tol}\\,\\max(1, |f|)$, after `max_steps`, or
    after `STALL_STEPS` consecutive steps whose decrease is at rounding level.

    **Returns:** `(u, steps, stalls)`: the last iterate, the steps taken and the number of
    consecutive steps without progress at the end."""
    opt = optax.lbfgs(
        learning_rate=learning_rate,
        # "one": try the full quasi-Newton step first at every iteration. The default
        # ("keep") reuses the last accepted step size, which can lock in a short step
        # and turn L-BFGS into linearly converging gradient descent.
        linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=40, initial_guess_strategy="one"),
    )
    value_and_grad = optax.value_and_grad_from_state(objective)

    def small_grad(state):
        f = otu.tree_get(state, "value")
        g = otu.tree_get(state, "grad")
        return otu.tree_norm(g) <= tol * jnp.maximum(1.0, jnp.abs(f))

    def cond(carry):
        _, state, stalls = carry
        count = otu.tree_get(state, "count")
        f = otu.tree_get(state, "value")
        going = (count < max_steps) & ~small_grad(state) & (stalls < STALL_STEPS) & jnp.isfinite(f)
        return (count == 0) | going

    def body(carry):
        u, state, stalls = carry
        f, g = value_and_grad(u, state=state)
        updates, state = opt.update(g, state, u, value=f, grad=g, value_fn=objective)
        f_new = otu.tree_get(state, "value")
        progress = f - f_new > EPS_REL * jnp.maximum(1.0, jnp.abs(f))
        stalls = jnp.where(progress, 0, stalls + 1)
        return optax.apply_updates(u, updates), state, stalls

    carry = (u0, opt.init(u0), jnp.asarray(0))
    u, state, stalls = jax.lax.while_loop(cond, body, carry)
    return u, otu.tree_get(state, "count"), stalls
