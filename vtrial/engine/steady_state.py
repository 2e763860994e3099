r"""Steady state of a model that is not linear PK throughout (NONMEM's SS = 1/2 on an
ADVAN13-style model): the periodic state of a dose repeated forever.

The state just before a dose of the series, $x^*$, is the fixed point of the map over one
dosing interval, $x^* = \Phi(x^*)$: from $x$ at the record's time $t_0$ (the series'
earlier infusions still running there), the dose at $t_0 + L$ (bolus, or infusion start),
the end of the one infusion of the series that ends within the interval, integrated to
$t_0 + II$. Over an interval the input is constant between at most two events, so
$\Phi$ is three diffrax solves of every state (integrated with the solve's options). A constant infusion at steady state (II =
0) is the equilibrium under its rate, the fixed point of the map over `CONSTANT_PERIOD_H`
hours with that rate.

$x^*$ is found by simulating `N_SIMULATED` intervals from the initial state (a start in
Newton's basin for a saturable model), then `N_NEWTON` Newton steps on $\Phi(x) - x$
(Jacobian by forward mode through the solve), each kept only where it lowers the
residual (otherwise a plain interval step is taken). A residual left above
`1e3 * rtol` of the state's scale gives NaN (the animal is marked failed).

Derivatives follow the implicit function theorem, $dx^* = (I - \Phi_x)^{-1}\Phi_\theta\,
d\theta$, never through the iterations: with `SolverOptions.adjoint = "forward"` as a
custom JVP whose rule calls the steady state again, so nested forward derivatives
(population estimation's) are exact to any order; with "checkpoint" as a custom VJP
(reverse mode: $\bar\theta = \Phi_\theta^T (I - \Phi_x)^{-T}\bar x$).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from vtrial.engine.solvers import SOLVERS
from vtrial.models.base import Model

#: Dosing intervals simulated from the initial state before Newton's method.
N_SIMULATED = 12
#: Newton steps on the interval map (quadratic convergence: a few are enough).
N_NEWTON = 8
#: The interval (h) whose map a constant infusion's equilibrium is the fixed point of.
CONSTANT_PERIOD_H = 24.0


def _interval_map(model: Model, options, adjoint) -> Callable:
    """$\\Phi(x, \\theta)$: the state one dosing interval after `x` (and whether every
    solve succeeded); `theta` holds the record's parameters `q` and its dose's
    `t0, dose, rate, duration, ii, lag, e, kind, n_run` (all floats; `e` the one-hot
    dosed state, `kind` 0 bolus, 1 infusion, 2 constant infusion)."""
    import diffrax as dfx  # here: imported when a solve is traced (`vtrial.engine.solvers`)

    solver = SOLVERS[options.solver]()
    controller = options.controller()

    def integrate(q, y, a, b, rate):
        sol = dfx.diffeqsolve(
            dfx.ODETerm(lambda t, y, r: model.vector_field(t, y, q, r)), solver, a, b,
            jnp.maximum(b - a, 1e-9) * 1e-2, y, args=rate, saveat=dfx.SaveAt(t1=True),
            stepsize_controller=controller, max_steps=options.max_steps, adjoint=adjoint, throw=False,
        )
        return sol.ys[-1], sol.result == dfx.RESULTS.successful

    def phi(x, th):
        kind, e = th["kind"], th["e"]
        infusion = kind == 1
        period = jnp.where(kind == 2, CONSTANT_PERIOD_H, th["ii"])
        t_end = th["t0"] + period
        # The dose of the record, and the end of the series' infusion that ends within
        # (t0, t0 + II]: the one given n_run intervals earlier (n_run = 0: the record's own).
        t_dose = th["t0"] + th["lag"]
        t_stop = jnp.where(infusion, t_dose + th["duration"] - th["n_run"] * th["ii"], t_dose)
        dose_bolus = e * jnp.where(kind == 0, th["dose"], 0.0)
        dose_rate = e * jnp.where(infusion, th["rate"], 0.0)
        dose_first = t_dose <= t_stop
        t_a, t_b = jnp.where(dose_first, t_dose, t_stop), jnp.where(dose_first, t_stop, t_dose)
        bolus_a = jnp.where(dose_first, dose_bolus, 0.0)
        bolus_b = jnp.where(dose_first, 0.0, dose_bolus)
        rate_a = jnp.where(dose_first, dose_rate, -dose_rate)
        rate_b = jnp.where(dose_first, -dose_rate, dose_rate)
        # At t0 the series' earlier infusions still running (`n_run` of them), or the constant rate.
        rate = e * jnp.where(infusion, th["n_run"] * th["rate"], jnp.where(kind == 2, th["rate"], 0.0))
        # Three segments, each one solve under a constant input: one diffrax solve traced
        # (a scan), as compile time grows with every solve in the program.
        q = th["q"]
        starts = jnp.stack([th["t0"], t_a, t_b])
        ends = jnp.stack([t_a, t_b, t_end])
        rates = jnp.stack([rate, rate + rate_a, rate + rate_a + rate_b])
        boluses = jnp.stack([jnp.zeros_like(bolus_a), bolus_a, bolus_b])

        def segment(y, xs):
            a, b, r, bolus = xs
            y, ok = integrate(q, y + bolus, a, b, r)
            return y, ok

        y, ok = jax.lax.scan(segment, x, (starts, ends, rates, boluses))
        return y, jnp.all(ok)

    return phi


def _scaled_residual(x, g, atol):
    """Largest |Phi(x) - x| relative to the state's scale."""
    return jnp.max(jnp.abs(g)) / (jnp.max(jnp.abs(x)) + atol)


def periodic_state(model: Model, options, th: dict) -> jnp.ndarray:
    """The state $x^*$ at a steady-state record's time (before its own dose), for one
    record; NaN where no steady state was found. Differentiable (see the module docstring)."""
    import diffrax as dfx  # here: imported when a solve is traced (`vtrial.engine.solvers`)

    phi_forward = _interval_map(model, options, dfx.ForwardMode())
    tolerance = 1e3 * options.rtol

    def find(th):
        def phi(x):
            return phi_forward(x, th)[0]

        x = jax.lax.fori_loop(0, N_SIMULATED, lambda _, x: phi(x), model.initial_state(th["q"]).astype(th["t0"].dtype))

        def newton(_, x):
            jac, y = jax.jacfwd(lambda x: (lambda v: (v, v))(phi(x)), has_aux=True)(x)
            g = y - x
            x_newton = x + jnp.linalg.solve(jnp.eye(x.shape[0], dtype=x.dtype) - jac, g)
            better = _scaled_residual(x_newton, phi(x_newton) - x_newton, options.atol) < _scaled_residual(x, g, options.atol)
            return jnp.where(better & jnp.all(jnp.isfinite(x_newton)), x_newton, y)

        x = jax.lax.fori_loop(0, N_NEWTON, newton, x)
        y, ok = phi_forward(x, th)
        found = ok & (_scaled_residual(x, y - x, options.atol) <= tolerance)
        return jnp.where(found, x, jnp.nan)

    def implicit_tangent(x, th, dth):
        jac = jax.jacfwd(lambda x: phi_forward(x, th)[0])(x)
        _, dphi = jax.jvp(lambda th: phi_forward(x, th)[0], (th,), (dth,))
        return jnp.linalg.solve(jnp.eye(x.shape[0], dtype=x.dtype) - jac, dphi)

    if options.adjoint == "forward":
        @jax.custom_jvp
        def steady(th):
            return find(th)

        @steady.defjvp
        def _(primals, tangents):
            (th,), (dth,) = primals, tangents
            x = steady(th)  # recursive: a nested derivative differentiates this rule again
            return x, implicit_tangent(x, th, dth)

        return steady(th)

    phi_reverse = _interval_map(model, options, dfx.RecursiveCheckpointAdjoint())

    @jax.custom_vjp
    def steady(th):
        return find(th)

    def forward(th):
        x = find(th)
        return x, (x, th)

    def backward(residuals, x_bar):
        x, th = residuals
        # No steady state (NaN; also a record that is not steady state, whose amounts are
        # discarded): no derivative, rather than NaN leaking into shared parameters.
        found = jnp.all(jnp.isfinite(x))
        x = jnp.where(found, x, 0.0)
        jac = jax.jacfwd(lambda x: phi_forward(x, th)[0])(x)
        w = jnp.linalg.solve((jnp.eye(x.shape[0], dtype=x.dtype) - jac).T, x_bar)
        w = jnp.where(found & jnp.all(jnp.isfinite(w)), w, 0.0)
        _, pullback = jax.vjp(lambda th: phi_reverse(x, th)[0], th)
        return pullback(w)

    steady.defvjp(forward, backward)
    return steady(th)
