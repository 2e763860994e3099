"""Differentiable well read-outs: the diffrax solve behind fits and calibrations.

`vtrial.estimation.least_squares.fit_least_squares` differentiates residuals two ways: reverse mode for
the L-BFGS gradient and forward mode (`jax.jacfwd`) for the Jacobian of the standard
errors. Inlining a stiff implicit solve and its sensitivities at every place the optimiser
evaluates the objective makes one fit take a minute to compile, and diffrax's default
adjoint (`RecursiveCheckpointAdjoint`, the one `vtrial.engine.solve.solve_animal` uses) has no
forward mode at all.

`well_readout` therefore returns a `jax.custom_jvp` function of one scalar parameter
`theta` whose value and derivative come from *one* separately compiled, vmapped forward
sensitivity solve (`jax.jvp` through `diffrax.diffeqsolve` with `ForwardMode`, one
tangent), reached with `jax.pure_callback`. Its JVP is `d(readout)/d(theta) * dtheta`,
linear in the tangent, so JAX transposes it for reverse mode and batches it for
`jacfwd`; gradients always flow through the diffrax solve. The wells here have no doses
or events, so the solve is a single `diffeqsolve` from 0 to `t_end` (the segment scan
of `solve_animal` would add nothing but compile time: 2-4 s here against 20-35 s for a
reverse-mode gradient through `solve_animal`). The compiled solve is cached per model,
read-out, parameter and solver options, and the wells are padded to `bucket_size` (64,
128, ...), so plates of different sizes share one compilation.

Only `theta` is differentiable; the per-well parameters and the read-out time are data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np

from vtrial.assays.common import BINDING_SOLVER, bucket_size
from vtrial.models.base import Model
from vtrial.engine.solve import SOLVERS, SolverOptions

Readout = Callable[[jnp.ndarray, Mapping[str, jnp.ndarray]], jnp.ndarray]


@lru_cache(maxsize=32)
def _value_and_derivative(model: Model, readout: Readout, wrt: str, options: SolverOptions):
    """jit(vmap(wells)) of (read-out at `t_end`, its derivative in `wrt`) by forward sensitivities."""
    solver = SOLVERS[options.solver]()
    controller = dfx.PIDController(rtol=options.rtol, atol=options.atol)

    def term(t, y, p):
        # No arrays are created when the closure is built: it may be built while a caller
        # is being traced, and a cached array would then leak that trace's tracer.
        return model.vector_field(t, y, p, jnp.zeros_like(y))

    def one(theta, p, t_end):
        def value(th):
            q = model.derive({**p, wrt: th})  # a well model's own derived quantities, if any
            sol = dfx.diffeqsolve(
                dfx.ODETerm(term), solver, 0.0, t_end, None, model.initial_state(q), args=q,
                saveat=dfx.SaveAt(t1=True), stepsize_controller=controller, max_steps=options.max_steps,
                adjoint=dfx.ForwardMode(), throw=False,
            )
            ok = sol.result == dfx.RESULTS.successful
            return jnp.where(ok, readout(sol.ys[-1], q), jnp.nan)

        return jax.jvp(value, (theta,), (jnp.ones_like(theta),))

    return jax.jit(jax.vmap(one, in_axes=(None, 0, None)))


@lru_cache(maxsize=32)
def well_readout(model: Model, readout: Readout, wrt: str, *, options: SolverOptions = BINDING_SOLVER):
    """A differentiable map `f(theta, wells, t_end) -> (n_wells,)` read-outs.

    **Arguments:**
    - `model`: a model without dose routes (every concentration is a parameter);
    - `readout`: `readout(y, p) -> scalar` of the state `y` at `t_end`; must be a
      module-level function (it keys the compilation cache);
    - `wrt`: the parameter that `theta` sets in every well (the one differentiated);
    - `options`: solver options (Kvaerno5 by default: binding is stiff at high
      antagonist concentrations).

    The returned `f(theta, wells, t_end)` takes `theta` (scalar), `wells` (every other
    parameter of the model, each of shape `(n_wells,)`) and `t_end` (scalar, h). A well
    whose solve fails reads NaN. Usable inside `jax.jit`, `jax.grad` and `jax.jacfwd`
    with respect to `theta`. Cached: the same arguments return the same function, so
    fits that call it reuse their compilation.
    """
    fn = _value_and_derivative(model, readout, wrt, options)

    def host(theta, wells, t_end):
        n = next(iter(wells.values())).shape[0]
        idx = np.minimum(np.arange(bucket_size(n)), n - 1)
        v, g = fn(jnp.asarray(theta, jnp.float64), {k: jnp.asarray(np.asarray(a)[idx], jnp.float64) for k, a in wells.items()}, jnp.asarray(t_end, jnp.float64))
        return np.asarray(v)[:n], np.asarray(g)[:n]

    def value_and_derivative(theta, wells, t_end):
        n = next(iter(wells.values())).shape[0]
        shape = jax.ShapeDtypeStruct((n,), jnp.float64)
        return jax.pure_callback(host, (shape, shape), theta, wells, t_end, vmap_method="sequential")

    @jax.custom_jvp
    def f(theta, wells, t_end):
        return value_and_derivative(theta, wells, t_end)[0]

    @f.defjvp
    def f_jvp(primals, tangents):
        theta, wells, t_end = primals
        value, derivative = value_and_derivative(theta, wells, t_end)
        return value, derivative * tangents[0]

    return f
