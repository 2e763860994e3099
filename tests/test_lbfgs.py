"""The population fit's host L-BFGS (`vtrial.estimation.lbfgs`) takes optax's steps:
the same iterates as `optax.lbfgs` with the zoom line search the fit used before, up to
rounding, on problems whose line searches go through every branch (interval search,
cubic and quadratic zoom, bisection)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu
import pytest

from vtrial.estimation.lbfgs import HostLBFGS


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2) + 0.1 * jnp.sum(jnp.exp(0.3 * x))


@pytest.mark.parametrize("fn, x0, steps", [
    (rosenbrock, [-1.2, 1.0, 0.5, -0.3, 2.0, 0.1, -0.5, 1.5], 40),
    (rosenbrock, [3.0, -3.0, 3.0, -3.0], 25),
])
def test_host_lbfgs_takes_optax_steps(fn, x0, steps):
    value_and_grad = jax.jit(jax.value_and_grad(fn))
    opt = optax.lbfgs(linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=30, initial_guess_strategy="one"))

    @jax.jit
    def optax_step(x, state, value, grad):
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fn)
        return optax.apply_updates(x, updates), state

    x = jnp.asarray(x0)
    state = opt.init(x)
    value, grad = value_and_grad(x)
    host = HostLBFGS(len(x0))
    z, host_value, host_grad = np.asarray(x0, float), float(value), np.asarray(grad)
    calls = []

    def host_value_and_grad(point):
        calls.append(point)
        v, g = value_and_grad(jnp.asarray(point))
        return float(v), np.asarray(g)

    for _ in range(steps):
        x, state = optax_step(x, state, value, grad)
        value, grad = otu.tree_get(state, "value"), otu.tree_get(state, "grad")
        z, host_value, host_grad = host.step(z, host_value, host_grad, host_value_and_grad)
        np.testing.assert_allclose(z, np.asarray(x), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(host_value, float(value), rtol=1e-9)
    assert len(calls) > steps  # some line searches took more than the full step
    assert host_value < float(value_and_grad(jnp.asarray(x0))[0])


def test_host_lbfgs_first_step_is_capped_and_a_zero_gradient_stays():
    """The first direction is the gradient scaled to length <= 1 (optax's trust region);
    at a stationary point the step is 0 and nothing is divided by zero."""
    host = HostLBFGS(2)
    direction = host.direction(np.zeros(2), np.array([30.0, 40.0]))
    np.testing.assert_allclose(direction, [0.6, 0.8])
    still = HostLBFGS(2)
    z, value, _ = still.step(np.ones(2), 1.0, np.zeros(2), lambda p: (1.0, np.zeros(2)))
    np.testing.assert_array_equal(z, np.ones(2))
    assert value == 1.0
