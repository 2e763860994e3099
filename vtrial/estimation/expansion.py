"""One subject's predictions as a Taylor polynomial in its log individual parameters, and
what the population objective keeps of a subject at its EBE (`vtrial.estimation.focei`,
whose docstring says why the objective is evaluated on the polynomial)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Expansion(NamedTuple):
    r"""One subject's predictions as a Taylor polynomial in its log individual parameters
    $\phi$ (`Problem.varying`) around the point `log_p`:
    $f(\phi) \approx f + D_1\delta + \frac12 D_2[\delta,\delta] + \frac16 D_3[\delta,\delta,\delta]$,
    $\delta = \phi - \phi_s$. At $\delta = 0$ its value and derivatives up to its order are
    the model's, exactly (module docstring)."""

    log_p: jnp.ndarray  # (m,)
    f: jnp.ndarray  # (n_obs,)
    d1: jnp.ndarray  # (n_obs, m)
    d2: jnp.ndarray  # (n_obs, m, m)
    d3: jnp.ndarray | None  # (n_obs, m, m, m), order 3 only
    status: jnp.ndarray

    def at(self, log_p):
        d = log_p - self.log_p
        f = self.f + self.d1 @ d + 0.5 * jnp.einsum("nij,i,j->n", self.d2, d, d)
        if self.d3 is not None:
            f = f + jnp.einsum("nijk,i,j,k->n", self.d3, d, d, d) / 6.0
        return f


class Local(NamedTuple):
    """What the objective of one subject needs from its model at its EBE (no derivatives
    carried): the exact Hessian of L there, the expansion there, and (FOCE) the
    expansion at eta = 0 that gives the residual variances without interaction."""

    hess: jnp.ndarray | None
    expansion: Expansion
    expansion0: Expansion | None


def taylor(fun, x, order):
    """Value and derivatives 1..`order` of `fun: R^m -> (R^n, aux)` at `x`, by nested
    forward mode: `([f, D1, ..., D_order], aux)`."""

    def level(x):
        y, aux = fun(x)
        return y, ((y,), aux)

    def lift(level):
        def lifted(x):
            d, (tensors, aux) = jax.jacfwd(level, has_aux=True)(x)
            return d, ((*tensors, d), aux)

        return lifted

    for _ in range(order):
        level = lift(level)
    _, (tensors, aux) = level(x)
    return list(tensors), aux


def logdet_pd(a):
    """log|A| of a symmetric matrix, +inf when it is not positive definite."""
    c = jnp.linalg.cholesky(a)
    ok = jnp.all(jnp.isfinite(c))
    return jnp.where(ok, 2.0 * jnp.sum(jnp.log(jnp.abs(jnp.diagonal(c)))), jnp.inf)
