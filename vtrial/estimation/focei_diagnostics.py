"""Per-observation diagnostics of a population objective (`vtrial.estimation.focei.Problem`):
PRED (at eta = 0), IPRED (at the EBE), the residual SD at IPRED and NONMEM's CWRES
(Hooker et al. 2007: the model linearised around the EBEs, decorrelated with the
symmetric inverse square root of its covariance, as NONMEM 7 does)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vtrial.estimation.population_spec import unpack


class Diagnostics(NamedTuple):
    pred: jnp.ndarray
    ipred: jnp.ndarray
    ipred_sd: jnp.ndarray
    cwres: jnp.ndarray
    status: jnp.ndarray


def diagnostics_per_subject(problem):
    """`run(x, constants, data, eta) -> Diagnostics` of `problem` (a `Problem`), per
    subject: to be compiled over the subjects (`Problem.diagnostics`)."""

    def one(x, constants, s, eta):
        u = unpack(problem.layout, constants, x)
        k = problem.layout.n_eta
        pred, _ = problem.predict(u, constants, s, jnp.zeros(k))
        ipred, g, status = problem.fg(u, constants, s, eta)
        v_ipred = jnp.where(s.mask > 0, problem.variance(u, s, ipred), 1.0)
        # CWRES (NONMEM's FOCE definition): the model linearised around the EBE,
        # E[y] ~ f(eta*) - G eta*, Cov[y] ~ G Omega G^T + V (V at eta = 0 for FOCE).
        if problem.method in ("foce", "fo"):
            v = jnp.where(s.mask > 0, problem.variance(u, s, pred), 1.0)
            lin_eta = jnp.zeros(k) if problem.method == "fo" else eta
        else:
            v, lin_eta = v_ipred, eta
        if problem.method == "fo":
            ipred_lin, g_lin = pred, problem.fg(u, constants, s, jnp.zeros(k))[1]
        else:
            ipred_lin, g_lin = ipred, g
        # Censored rows have no residual: left out of the linearised joint distribution
        # (their CWRES is reported as missing, `population_tables.predictions_frame`).
        quantified = s.mask * (s.cens == 0)
        g_lin = g_lin * quantified[:, None]
        chol = problem.omega_chol(u, s)
        cov = g_lin @ chol @ chol.T @ g_lin.T + jnp.diag(v)
        r = quantified * (s.dv - (ipred_lin - g_lin @ lin_eta))
        return (pred, ipred, jnp.sqrt(v_ipred), status), (cov, r)

    def cwres(cov_r):
        # NONMEM decorrelates with the symmetric inverse square root Cov^(-1/2) (from
        # the eigendecomposition), not a Cholesky factor: the two agree on a subject's
        # first observation only (pharmpy's pheno: median relative difference 6e-6 from
        # NONMEM's table this way, 0.29 with the Cholesky factor). Padded rows have no
        # coupling to the others (zero rows of G), so they change nothing.
        cov, r = cov_r
        w, u = jnp.linalg.eigh(cov)
        return u @ ((u.T @ r) / jnp.sqrt(w))

    def run(x, constants, data, eta):
        (pred, ipred, sd, status), cov_r = jax.vmap(lambda s, e: one(x, constants, s, e))(data, eta)
        # One subject's (n_obs x n_obs) factorisation at a time (vtrial.engine.lapack).
        return Diagnostics(pred, ipred, sd, jax.lax.map(cwres, cov_r), status)

    return run
