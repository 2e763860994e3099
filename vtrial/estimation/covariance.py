"""NONMEM's covariance step ($COV) on the unconstrained scale of a population fit.

R is the Hessian of the OFV, by central differences of its exact gradient (the EBEs
re-optimised at each point, as NONMEM does); S is the sum over subjects of the outer
products of their OFV gradients. `sandwich` = R^-1 S R^-1 (NONMEM's default), `r` =
2 R^-1, `s` = 4 S^-1 (the factors: the OFV is -2 log-likelihood). A matrix that must be
inverted and is not positive definite, or nearly singular, fails the step, naming the
parameters of its weakest direction.
"""

from __future__ import annotations

import jax
import numpy as np

COVARIANCE_MATRICES = ("sandwich", "r", "s")
#: Step of the central differences of the gradient that give R (unconstrained scale).
R_STEP = 1e-4
#: A covariance eigenvalue ratio below this is a near-singular information matrix.
SINGULAR_RATIO = 1e-10


def hessian_by_differences(problem, constants, arrays, x, eta) -> np.ndarray:
    """R: central differences of the exact gradient (EBEs re-optimised at each point)."""
    n = x.shape[0]
    r = np.zeros((n, n))
    for i in range(n):
        cols = []
        for sign in (1.0, -1.0):
            xi = x.copy()
            xi[i] += sign * R_STEP
            cols.append(np.asarray(problem.evaluate(jax.device_put(xi), constants, arrays, eta)[1]))
        r[:, i] = (cols[0] - cols[1]) / (2.0 * R_STEP)
    return 0.5 * (r + r.T)


def covariance_step(problem, constants, arrays, x, eta, subject_gradients, matrix, names) -> tuple[np.ndarray | None, str, list[str]]:
    """NONMEM's covariance step on the unconstrained scale; (cov_x or None, status, warnings)."""
    warnings = []
    r = hessian_by_differences(problem, constants, arrays, x, eta)
    s = subject_gradients.T @ subject_gradients

    def unidentified(mat, label):
        d = np.sqrt(np.abs(np.diag(mat)))
        d = np.where(d > 0, d, 1.0)
        scaled = mat / np.outer(d, d)
        w, v = np.linalg.eigh(scaled)
        if w[0] > SINGULAR_RATIO * max(w[-1], 0.0) and w[0] > 0:
            return None
        direction = v[:, 0]
        involved = [names[k] for k in np.argsort(-np.abs(direction)) if abs(direction[k]) > 0.3]
        kind = "not positive definite" if w[0] <= 0 else "near-singular"
        return f"{label} matrix {kind} (eigenvalue ratio {w[0] / w[-1]:.2g}); not identifiable: {', '.join(involved)}"

    # NONMEM fails the step when a matrix it inverts is singular: both for the sandwich.
    needed = {"sandwich": (("R", r), ("S", s)), "r": (("R", r),), "s": (("S", s),)}[matrix]
    problems = [msg for msg in (unidentified(mat, label) for label, mat in needed) if msg]
    if problems:
        return None, "failed: " + "; ".join(problems), warnings
    if matrix == "sandwich":
        r_inv = np.linalg.inv(r)
        cov = r_inv @ s @ r_inv
    elif matrix == "r":
        cov = 2.0 * np.linalg.inv(r)
    else:
        cov = 4.0 * np.linalg.inv(s)
    cov = 0.5 * (cov + cov.T)
    if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) <= 0):
        return None, "failed: the covariance matrix has non-positive or non-finite variances", warnings
    return cov, "ok", warnings
