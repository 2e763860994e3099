r"""Exact solution of linear PK: sequential first-order absorption into a mammillary model.

A model may declare (`Model.linear_pk`) that some of its states form the system

$$\dot A = K A + r, \qquad K = \begin{pmatrix} K_a & 0 \\ B & K_d \end{pmatrix},$$

with a chain of depots $A_{d,1} \to \dots \to A_{d,n}$ (rate constants $k_{a,i}$)
feeding the central compartment, and a 1- to 3-compartment mammillary disposition $K_d$
(clearance $CL$ from the central volume $V_1$, exchange $Q_j$ with peripheral volumes
$V_j$). Within a segment the input $r$ is constant, so
$A(a + \tau) = S\,[e^{\Lambda\tau}\alpha + \varphi(\Lambda,\tau)\beta]$ with
$\alpha = S^{-1}A(a)$, $\beta = S^{-1}r$ and $\varphi(\lambda,\tau) = (e^{\lambda\tau}-1)/\lambda$
(evaluated stably with `expm1`; $\tau$ at $\lambda = 0$).

The eigen-decomposition $K = S\Lambda S^{-1}$ uses the structure, not a general `eig`
(which JAX lacks on GPU): $K_d = -Q\,\mathrm{diag}(V)^{-1}$ with $Q$ the symmetric
clearance matrix, so $\mathrm{diag}(V)^{-1/2} K_d\, \mathrm{diag}(V)^{1/2}$ is symmetric and
`eigh` gives its eigenpairs; the depot eigenvalues are $-k_{a,i}$ and their eigenvectors
follow by forward substitution.

Assumption (documented): when a depot rate constant coincides with another depot's or
with a disposition eigenvalue to within a relative `2e-8` (e.g. `ka1 = ka2` set by hand),
it is moved apart by a few times that so the decomposition stays well conditioned;
the error this introduces is of the same relative order, far below solver tolerances.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from vtrial.models.linear_pk import MammillaryConstants

_SEPARATION = 2e-8


class Modes(NamedTuple):
    """Eigen-decomposition $K = S \\Lambda S^{-1}$ of one animal's linear PK."""

    lam: jnp.ndarray
    s: jnp.ndarray
    s_inv: jnp.ndarray


def rate_matrix(c: MammillaryConstants) -> jnp.ndarray:
    """The matrix K (states ordered depots, central, peripherals)."""
    n_d, n_p = c.ka.shape[0], c.q.shape[0]
    n = n_d + 1 + n_p
    k = jnp.zeros((n, n), dtype=jnp.result_type(c.cl))
    for i in range(n_d):
        k = k.at[i, i].set(-c.ka[i]).at[i + 1, i].set(c.ka[i])
    ic = n_d
    k = k.at[ic, ic].set(-(c.cl + jnp.sum(c.q)) / c.v1)
    for j in range(n_p):
        ip = ic + 1 + j
        k = k.at[ic, ip].set(c.q[j] / c.v[j]).at[ip, ic].set(c.q[j] / c.v1).at[ip, ip].set(-c.q[j] / c.v[j])
    return k


def _disposition_modes(c: MammillaryConstants):
    vols = jnp.concatenate([c.v1[None], c.v])
    m = vols.shape[0]
    qmat = jnp.zeros((m, m), dtype=vols.dtype).at[0, 0].set(c.cl + jnp.sum(c.q))
    for j in range(m - 1):
        qmat = qmat.at[0, j + 1].set(-c.q[j]).at[j + 1, 0].set(-c.q[j]).at[j + 1, j + 1].set(c.q[j])
    root = jnp.sqrt(vols)
    lam, w = jnp.linalg.eigh(-qmat / root[:, None] / root[None, :])
    return lam, root[:, None] * w, w.T / root[None, :]


def _separate(ka: jnp.ndarray, lam_d: jnp.ndarray) -> jnp.ndarray:
    """Move depot rate constants that (nearly) coincide with an earlier eigenvalue."""
    out = []
    for i in range(ka.shape[0]):
        others = jnp.concatenate([-lam_d, jnp.stack(out)]) if out else -lam_d
        close = jnp.any(jnp.abs(ka[i] - others) <= _SEPARATION * (jnp.abs(ka[i]) + jnp.abs(others)))
        out.append(jnp.where(close, ka[i] * (1.0 + 3.0 * _SEPARATION) + 3.0 * _SEPARATION * jnp.finfo(ka.dtype).tiny, ka[i]))
    return jnp.stack(out) if out else ka


def modes(c: MammillaryConstants) -> Modes:
    """Eigenvalues and eigenvectors of K, built from its block structure."""
    lam_d, u, u_inv = _disposition_modes(c)
    ka = _separate(c.ka, lam_d)
    n_d, m = ka.shape[0], lam_d.shape[0]
    dtype = lam_d.dtype
    cols = []
    for k in range(n_d):
        mu = -ka[k]
        w = [jnp.zeros((), dtype)] * k + [jnp.ones((), dtype)]
        for i in range(k + 1, n_d):
            w.append(ka[i - 1] * w[-1] / (mu + ka[i]))
        w = jnp.stack(w)
        inflow = jnp.zeros(m, dtype).at[0].set(ka[n_d - 1] * w[n_d - 1])  # B w: last depot into central
        z = u @ ((u_inv @ inflow) / (mu - lam_d))
        cols.append(jnp.concatenate([w, z]))
    disposition_cols = jnp.concatenate([jnp.zeros((n_d, m), dtype), u], axis=0)
    s = jnp.concatenate([jnp.stack(cols, axis=1), disposition_cols], axis=1) if cols else disposition_cols
    lam = jnp.concatenate([-ka, lam_d])
    return Modes(lam, s, jnp.linalg.inv(s))


def phi(lam: jnp.ndarray, tau) -> jnp.ndarray:
    """$(e^{\\lambda\\tau} - 1)/\\lambda$, exact at $\\lambda\\tau = 0$ and gradient-safe."""
    x = lam * tau
    safe = jnp.where(x == 0, 1.0, x)
    return tau * jnp.where(x == 0, 1.0, jnp.expm1(safe) / safe)


def mode_coordinates(m: Modes, a0: jnp.ndarray, rate: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """$(\alpha, \beta) = (S^{-1} A(a), S^{-1} r)$: a segment's start and input in mode coordinates."""
    return m.s_inv @ a0, m.s_inv @ rate


def propagate_modes(m: Modes, alpha: jnp.ndarray, beta: jnp.ndarray, tau) -> jnp.ndarray:
    """PK amounts `tau` hours into a segment whose mode coordinates are `alpha`, `beta`."""
    return m.s @ (jnp.exp(m.lam * tau) * alpha + phi(m.lam, tau) * beta)


def propagate(m: Modes, a0: jnp.ndarray, rate: jnp.ndarray, tau) -> jnp.ndarray:
    """PK amounts after `tau` hours from `a0` under constant input `rate` (both `(n_pk,)`)."""
    return propagate_modes(m, *mode_coordinates(m, a0, rate), tau)
