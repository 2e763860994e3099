"""The outer optimiser of a population fit: optax's L-BFGS with its zoom line search, one
jitted step at a time, and the convergence measure (`fit_population`).

The step's line search calls the objective back on the host (the objective's pieces are
compiled on their own, `vtrial.estimation.focei`), so the step compiles in a fraction of
a second, in a background thread while the fit's first evaluation runs (`compile_step`).
"""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import optax


def lbfgs():
    return optax.lbfgs(
        # Try the full quasi-Newton step first (see vtrial.engine.optimize).
        linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=30, initial_guess_strategy="one"),
    )


@lru_cache(maxsize=32)
def step_function(pr):
    """jit: one L-BFGS update from (x, value, grad) with optax's zoom line search.

    The line search's objective calls back to the host, which runs the separately
    compiled objective and gradient (`Problem.evaluate`, EBEs warm-started from the
    current ones): the step itself then compiles in a second and the objective is
    compiled once, not once more inside the line search. One per `Problem`, so later fits
    of the same shapes compile nothing.

    The optimiser works on `z = x * scale` (`context["scale"]`, a curvature per
    parameter: see `fit_population`), so that a unit step means about as much for
    every parameter (a disease-onset time and a variance differ in curvature by 1e5).

    Returns `(optimizer, step(z, state, value, grad_z), context)`: the caller puts the
    current `eta`, `constants`, `arrays` and `scale` in `context` before each step; the
    callback leaves the last point it evaluated there (`z`, `result`), usually the
    accepted one.
    The step sees only host arrays of the few outer parameters: the subjects' arrays
    (split over devices) never enter it, so it is a one-device program whose callback
    may run the multi-device objective."""

    context = {}

    def host(z):
        scale = context["scale"]
        result = pr.evaluate(jnp.asarray(np.asarray(z) / scale), context["constants"], context["arrays"], context["eta"])
        context["z"], context["result"] = np.array(z), result
        return np.asarray(result[0], np.float64), np.asarray(result[1], np.float64) / scale

    def value_and_grad(x):
        shapes = (jax.ShapeDtypeStruct((), jnp.float64), jax.ShapeDtypeStruct(x.shape, jnp.float64))
        return jax.pure_callback(host, shapes, x)

    @jax.custom_vjp
    def ofv(x):
        return value_and_grad(x)[0]

    def ofv_fwd(x):
        return value_and_grad(x)

    def ofv_bwd(grad, ct):
        return (ct * grad,)

    ofv.defvjp(ofv_fwd, ofv_bwd)
    opt = lbfgs()

    def step(x, state, value, grad):
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=ofv)
        return optax.apply_updates(x, updates), state

    return opt, jax.jit(step), context


def typed_state(state):
    """The optimiser's state strongly typed, as the step returns it: else the step compiles
    twice (its host callback keeps it out of the persistent cache, so every process
    compiles it)."""
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.asarray(a).dtype), state)


def compile_step(opt, step, x):
    """Compile `step` (`step_function`) for `x`'s size, as the fit calls it, without running it."""
    z = np.zeros(np.shape(x))
    return step.lower(z, typed_state(opt.init(z)), np.asarray(0.0), z).compile()


def curvature(subject_gradients) -> np.ndarray:
    """The OFV's curvature in each parameter, $R_{ii}$, estimated without a Hessian: half
    the spread of the subjects' OFV gradients (S/2, the information), floored at 1."""
    jac = np.asarray(subject_gradients)
    return np.maximum(np.sum((jac - jac.mean(axis=0)) ** 2, axis=0) / 2.0, 1.0)


def distance_in_se(grad, subject_gradients) -> float:
    r"""The largest $|g_i| / \sqrt{2 R_{ii}}$ (see `fit_population`'s `tolerance`)."""
    g = np.abs(np.asarray(grad))
    return float(np.max(g / np.sqrt(2.0 * curvature(subject_gradients)))) if g.size else 0.0
