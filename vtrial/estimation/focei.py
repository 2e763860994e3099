r"""The population objective (NONMEM's FOCE-I, FOCE, Laplace and FO) and its exact gradient.

Per subject $i$, with predictions $f_j(\eta)$ (model observable times the dataset's DV
scale) and residual variances $V_j = a^2 + (b f_j)^2$, the individual objective is
$L_i(\eta) = \sum_j [(y_j - f_j)^2 / V_j + \log V_j] + \eta^T \Omega^{-1} \eta$.
Its minimiser $\eta_i^*$ (the EBE) is found for all subjects at once by a batched Newton
iteration with a line search, warm-started from the previous outer step. The objective
(OFV, -2 log-likelihood without the $N \log 2\pi$ constant) is
$\sum_i L_i(\eta_i^*) + \log|\Omega| + \log|\tilde H_i|$ with

- `focei` (FOCE with interaction): $\tilde H = \Omega^{-1} + \sum_j [g_j g_j^T / V_j +
  \frac12 (\partial V_j/\partial\eta)(\partial V_j/\partial\eta)^T / V_j^2]$,
  $g_j = \partial f_j / \partial \eta$ (the expected information NONMEM uses);
- `foce` (no interaction): $V_j$ evaluated at $\eta = 0$, $\tilde H = \Omega^{-1} +
  \sum_j g_j g_j^T / V_j$ (equal to NONMEM's linearised form by Woodbury's identity);
- `laplace`: $\tilde H$ = half the exact Hessian of $L_i$ (NONMEM's LAPLACE INTER);
- `fo`: the model linearised at $\eta = 0$: $\log|C_i| + r_i^T C_i^{-1} r_i$,
  $C_i = G \Omega G^T + \mathrm{diag}(V(0))$.

Gradient: $\eta^*$ depends on the outer parameters $x$, and $\tilde H$ depends on
$\eta^*$, so $d\eta^*/dx = -(\nabla^2_\eta L)^{-1} \nabla_x \nabla_\eta L$ (implicit
function theorem). It is taken by evaluating the objective at
$\hat\eta = \eta_s - H_s^{-1} (\nabla_\eta L(x, \eta_s) - [\nabla_\eta L]_s)$ where
$\eta_s$ (the converged EBE), $H_s$ (the exact Hessian there) and $[\cdot]_s$ carry no
derivative: $\hat\eta = \eta_s$ in value, and its derivative is exactly the implicit one. All
derivatives are forward mode (`jax.jacfwd`): the outer parameters are few, nested forward
derivatives are cheap, and diffrax is differentiated with `ForwardMode`; the outer
gradient is a Jacobian of the per-subject objectives, which also gives the per-subject
gradients of NONMEM's S matrix.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property, lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vtrial.design.population import individual_parameters
from vtrial.engine.events import DoseRecords
from vtrial.engine.solve import SolverOptions, is_linear_pk_only, solve_animal, uses_closed_form
from vtrial.estimation.population_spec import Constants, Layout, unpack
from vtrial.models.base import Model

METHODS = ("focei", "foce", "laplace", "fo")
# FOCE-I without the variance-gradient term of its Hessian: what a FOCE-I that forgets
# the interaction in the Hessian gives (a check, not a method to use).
FOCEI_WITHOUT_VARIANCE_TERM = "_focei_without_variance_term"

#: Step lengths tried along each Newton direction (all at once, the best is taken).
_STEPS = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01)
#: Largest change of any eta in one inner step (log scale: a factor e^2).
_MAX_STEP = 2.0


class SubjectArrays(NamedTuple):
    """Per-subject data as JAX arrays (leading axis: subject)."""

    doses: DoseRecords
    times: jnp.ndarray  # (n, n_obs) sorted
    observable: jnp.ndarray  # (n, n_obs) int
    dv: jnp.ndarray
    mask: jnp.ndarray  # (n, n_obs) float 1/0
    covariates: jnp.ndarray  # (n, n_model_covariates)


class Diagnostics(NamedTuple):
    pred: jnp.ndarray
    ipred: jnp.ndarray
    ipred_sd: jnp.ndarray
    cwres: jnp.ndarray
    status: jnp.ndarray


def _logdet_pd(a):
    """log|A| of a symmetric matrix, +inf when it is not positive definite."""
    c = jnp.linalg.cholesky(a)
    ok = jnp.all(jnp.isfinite(c))
    return jnp.where(ok, 2.0 * jnp.sum(jnp.log(jnp.abs(jnp.diagonal(c)))), jnp.inf)


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """The compiled population objective of one model, layout, method and solver setting."""

    model: Model
    layout: Layout
    method: str
    options: SolverOptions
    t0: float
    max_newton: int = 50
    newton_tol: float = 1e-14

    # -- one subject ----------------------------------------------------------------
    def predict(self, u, constants: Constants, s, eta):
        """Predictions in DV units at the subject's observation times; solver status."""
        p = dict(u.typical)
        for c, name in enumerate(self.layout.covariate_names):
            p[name] = s.covariates[c]
        p = individual_parameters(
            p, self.layout.effects, constants.effect_reference, constants.effect_exponent, self.layout.iiv_names, eta
        )
        sol = solve_animal(self.model, p, s.doses, s.times, t0=self.t0, options=self.options)
        obs = jax.vmap(lambda y: jnp.stack([o.fn(y, p) for o in self.model.observables]))(sol.states)
        f = jnp.take_along_axis(obs, s.observable[:, None], axis=1)[:, 0] * constants.dv_scale[s.observable]
        return f, sol.status

    def fg(self, u, constants, s, eta):
        def fun(e):
            f, status = self.predict(u, constants, s, e)
            return f, (f, status)

        g, (f, status) = jax.jacfwd(fun, has_aux=True)(eta)
        return f, g, status

    def fgh(self, u, constants, s, eta):
        def fun(e):
            f, g, status = self.fg(u, constants, s, e)
            return g, (f, g, status)

        h, (f, g, status) = jax.jacfwd(fun, has_aux=True)(eta)
        return f, g, h, status

    def variance(self, u, s, f):
        sd = u.residual_sd[s.observable]
        return sd[:, 0] ** 2 + (sd[:, 1] * f) ** 2

    def _phi(self, u, s, f, v0):
        """Per-observation -2 log-likelihood terms (masked) as a function of f."""
        v = self.variance(u, s, f) if v0 is None else v0
        v = jnp.where(s.mask > 0, v, 1.0)
        return s.mask * ((s.dv - f) ** 2 / v + jnp.log(v))

    def _phi_derivatives(self, u, s, f, v0):
        ones = jnp.ones_like(f)

        def d1(f):
            return jax.jvp(lambda f: self._phi(u, s, f, v0), (f,), (ones,))

        (phi, dphi), (_, d2phi) = jax.jvp(d1, (f,), (ones,))
        return phi, dphi, d2phi

    def _v0(self, u, constants, s):
        """FOCE without interaction: residual variances at eta = 0."""
        if self.method != "foce":
            return None
        f0, _ = self.predict(u, constants, s, jnp.zeros(self.layout.n_eta))
        return jnp.where(s.mask > 0, self.variance(u, s, f0), 1.0)

    def inner(self, u, constants, s, eta, v0, *, hessian=True):
        """L(eta), its gradient, its exact Hessian (if asked) and the pieces at eta."""
        omega_inv_chol = jax.scipy.linalg.solve_triangular(u.chol, jnp.eye(self.layout.n_eta), lower=True)
        omega_inv = omega_inv_chol.T @ omega_inv_chol
        if hessian:
            f, g, h, status = self.fgh(u, constants, s, eta)
        else:
            f, g, status = self.fg(u, constants, s, eta)
        phi, d1, d2 = self._phi_derivatives(u, s, f, v0)
        value = jnp.sum(phi) + eta @ omega_inv @ eta
        grad = g.T @ d1 + 2.0 * omega_inv @ eta
        hess = None
        if hessian:
            hess = (g.T * d2[None, :]) @ g + jnp.einsum("j,jab->ab", d1, h) + 2.0 * omega_inv
        return value, grad, hess, f, g, status, omega_inv

    def expected_information(self, u, s, f, g, omega_inv, v0, variance_term=True):
        """NONMEM's approximate Hessian of L/2 (FOCE-I, or FOCE with v0)."""
        if v0 is not None:
            w = s.mask / v0
        else:
            v = jnp.where(s.mask > 0, self.variance(u, s, f), 1.0)
            dv = 2.0 * u.residual_sd[s.observable][:, 1] ** 2 * f
            w = s.mask * (1.0 / v + (0.5 * dv**2 / v**2 if variance_term else 0.0))
        return omega_inv + (g.T * w[None, :]) @ g

    # -- the inner problem: EBEs of all subjects --------------------------------------
    def _newton_step(self, u, constants, s, eta, v0):
        """One damped step for one subject: the exact Newton direction (when the Hessian is
        positive definite) and the Fisher-scoring one (always defined), each capped at
        `_MAX_STEP` in eta and tried at several lengths; the best decrease is taken."""
        value, grad, hess, f, g, status, omega_inv = self.inner(u, constants, s, eta, v0)
        fisher = 2.0 * self.expected_information(u, s, f, g, omega_inv, v0)
        c = jnp.linalg.cholesky(hess)
        exact_ok = jnp.all(jnp.isfinite(c))
        newton = -jax.scipy.linalg.cho_solve((jnp.where(exact_ok, c, jnp.eye(c.shape[0])), True), grad)
        scoring = -jnp.linalg.solve(fisher, grad)
        newton = jnp.where(exact_ok, newton, scoring)
        directions = jnp.stack([newton, scoring])
        directions = directions * jnp.minimum(1.0, _MAX_STEP / jnp.max(jnp.abs(directions), axis=1, keepdims=True))
        decrement = -grad @ newton

        def l_at(step):
            e = eta + step
            f_e, st = self.predict(u, constants, s, e)
            phi = self._phi(u, s, f_e, v0)
            val = jnp.sum(phi) + e @ omega_inv @ e
            return jnp.where((st == 0) & jnp.isfinite(val), val, jnp.inf)

        steps = (jnp.asarray(_STEPS)[None, :, None] * directions[:, None, :]).reshape(-1, eta.shape[0])
        trial = jax.vmap(l_at)(steps)
        best = jnp.argmin(trial)
        better = trial[best] < value
        new_eta = jnp.where(better, eta + steps[best], eta)
        # Done: the Newton decrement is tiny, or no step improves on eta (at the optimum
        # to rounding).
        done = (exact_ok & (decrement < self.newton_tol * jnp.maximum(1.0, jnp.abs(value)))) | ~better
        return new_eta, done

    def ebes(self, x, constants: Constants, data: SubjectArrays, eta0):
        """EBEs of every subject (no derivative flows through the iteration)."""
        x = jax.lax.stop_gradient(x)
        u = unpack(self.layout, constants, x)
        v0 = jax.vmap(lambda s: self._v0(u, constants, s))(data) if self.method == "foce" else None

        def step(eta):
            return jax.vmap(lambda s, e, v: self._newton_step(u, constants, s, e, v))(data, eta, v0)

        def cond(carry):
            _, done, it = carry
            return (it < self.max_newton) & ~jnp.all(done)

        def body(carry):
            eta, _, it = carry
            eta, done = step(eta)
            return eta, done, it + 1

        n = data.times.shape[0]
        eta, done, it = jax.lax.while_loop(cond, body, (eta0, jnp.zeros(n, bool), jnp.asarray(0)))
        return eta, done, it

    # -- the population objective ---------------------------------------------------
    def subject_ofv(self, x, constants, s, eta_s, hess_s=None):
        """OFV_i at the EBE eta_s; given `hess_s` (the exact Hessian of L there, computed
        without derivatives), its derivative includes the implicit one of eta*."""
        u = unpack(self.layout, constants, x)
        k = self.layout.n_eta
        logdet_omega = 2.0 * jnp.sum(jnp.log(jnp.diagonal(u.chol)))
        if self.method == "fo":
            f, g, status = self.fg(u, constants, s, jnp.zeros(k))
            v = jnp.where(s.mask > 0, self.variance(u, s, f), 1.0)
            g = g * s.mask[:, None]
            omega = u.chol @ u.chol.T
            cov = g @ omega @ g.T + jnp.diag(v)
            r = s.mask * (s.dv - f)
            c = jnp.linalg.cholesky(cov)
            z = jax.scipy.linalg.solve_triangular(c, r, lower=True)
            ofv = 2.0 * jnp.sum(jnp.log(jnp.diagonal(c))) + z @ z
            return self._contribution(s, status, ofv)
        v0 = self._v0(u, constants, s)
        # d eta*/dx = -H^-1 d(grad_eta L)/dx, carried by a zero-valued Newton correction:
        # its value is exactly the EBE, its derivative the implicit one (module docstring).
        # (The Hessian comes from outside, so the derivatives w.r.t. x here are of second
        # order in the model at most: that keeps compilation short.)
        # The value also takes the Newton step left (if small: rounding-level convergence
        # errors of eta_s then enter the OFV squared, so central differences of it are
        # smooth; a large one would mean eta_s is no optimum, and is not trusted).
        if hess_s is None:
            eta_hat = eta_s
        else:
            _, grad_s, *_ = self.inner(u, constants, s, eta_s, v0, hessian=False)
            left = jax.lax.stop_gradient(jnp.linalg.solve(hess_s, grad_s))
            left = jnp.where(jnp.max(jnp.abs(left)) < 1e-4, left, 0.0)
            eta_hat = eta_s - left - jnp.linalg.solve(hess_s, grad_s - jax.lax.stop_gradient(grad_s))
        laplace = self.method == "laplace"
        value, _, hess, f, g, status, omega_inv = self.inner(u, constants, s, eta_hat, v0, hessian=laplace)
        if laplace:
            h_tilde = 0.5 * hess
        else:
            h_tilde = self.expected_information(
                u, s, f, g, omega_inv, v0, variance_term=self.method != FOCEI_WITHOUT_VARIANCE_TERM
            )
        ofv = value + logdet_omega + _logdet_pd(h_tilde)
        return self._contribution(s, status, ofv)

    @staticmethod
    def _contribution(s, status, ofv):
        """A failed solve makes the OFV infinite; a subject without observations (padding)
        contributes exactly 0, as its likelihood is 1."""
        return jnp.where(jnp.any(s.mask > 0), jnp.where(status == 0, ofv, jnp.inf), 0.0)

    def per_subject(self, x, constants, data, eta_s, hess_s=None):
        if hess_s is None:
            return jax.vmap(lambda s, e: self.subject_ofv(x, constants, s, e))(data, eta_s)
        return jax.vmap(lambda s, e, h: self.subject_ofv(x, constants, s, e, h))(data, eta_s, hess_s)

    def exact_hessians(self, x, constants, data, eta):
        """The exact Hessian of every subject's L at its EBE (no derivatives carried)."""
        x = jax.lax.stop_gradient(x)
        u = unpack(self.layout, constants, x)

        def one(s, e):
            v0 = self._v0(u, constants, s)
            return self.inner(u, constants, s, e, v0)[2]

        return jax.vmap(one)(data, eta)

    # Separately compiled pieces, shared by the value and the gradient: each compiles
    # once per problem and shapes, and the Newton iteration is not compiled twice.
    @cached_property
    def solve_ebes(self):
        """jit: (x, constants, data, eta0) -> (EBEs, converged flags, iterations)."""
        return jax.jit(lambda x, constants, data, eta0: self.ebes(x, constants, data, eta0))

    @cached_property
    def _hessians(self):
        return jax.jit(self.exact_hessians)

    @cached_property
    def _value(self):
        return jax.jit(lambda x, constants, data, eta, hess: self.per_subject(x, constants, data, eta, hess))

    @cached_property
    def _jacobian(self):
        def run(x, constants, data, eta, hess):
            def per(x):
                o = self.per_subject(x, constants, data, eta, hess)
                return o, o

            return jax.jacfwd(per, has_aux=True)(x)

        return jax.jit(run)

    def _ebes_and_hessians(self, x, constants, data, eta_warm):
        if self.method == "fo":
            return jnp.zeros_like(eta_warm), jnp.ones(eta_warm.shape[0], bool), None
        eta, done, _ = self.solve_ebes(x, constants, data, eta_warm)
        return eta, done, self._hessians(x, constants, data, eta)

    def evaluate(self, x, constants, data, eta_warm):
        """(ofv, grad, per-subject ofv, per-subject gradients (n, n_x), EBEs, converged flags)."""
        eta, done, hess = self._ebes_and_hessians(x, constants, data, eta_warm)
        jac, ofv_i = self._jacobian(x, constants, data, eta, hess)
        return jnp.sum(ofv_i), jnp.sum(jac, axis=0), ofv_i, jac, eta, done

    def value_only(self, x, constants, data, eta_warm):
        """(ofv, per-subject ofv, EBEs)."""
        eta, _, hess = self._ebes_and_hessians(x, constants, data, eta_warm)
        ofv_i = self._value(x, constants, data, eta, hess)
        return jnp.sum(ofv_i), ofv_i, eta

    @cached_property
    def diagnostics(self):
        """jit: PRED, IPRED, residual SD at IPRED and CWRES of every observation."""

        def one(x, constants, s, eta):
            u = unpack(self.layout, constants, x)
            k = self.layout.n_eta
            pred, _ = self.predict(u, constants, s, jnp.zeros(k))
            ipred, g, status = self.fg(u, constants, s, eta)
            v_ipred = jnp.where(s.mask > 0, self.variance(u, s, ipred), 1.0)
            # CWRES (NONMEM's FOCE definition): the model linearised around the EBE,
            # E[y] ~ f(eta*) - G eta*, Cov[y] ~ G Omega G^T + V (V at eta = 0 for FOCE).
            if self.method in ("foce", "fo"):
                v = jnp.where(s.mask > 0, self.variance(u, s, pred), 1.0)
                lin_eta = jnp.zeros(k) if self.method == "fo" else eta
            else:
                v, lin_eta = v_ipred, eta
            if self.method == "fo":
                ipred_lin, g_lin = pred, self.fg(u, constants, s, jnp.zeros(k))[1]
            else:
                ipred_lin, g_lin = ipred, g
            g_lin = g_lin * s.mask[:, None]
            omega = u.chol @ u.chol.T
            cov = g_lin @ omega @ g_lin.T + jnp.diag(v)
            r = s.mask * (s.dv - (ipred_lin - g_lin @ lin_eta))
            c = jnp.linalg.cholesky(cov)
            cwres = jax.scipy.linalg.solve_triangular(c, r, lower=True)
            return Diagnostics(pred, ipred, jnp.sqrt(v_ipred), cwres, status)

        return jax.jit(jax.vmap(one, in_axes=(None, None, 0, 0)))


@lru_cache(maxsize=32)
def problem(model: Model, layout: Layout, method: str, options: SolverOptions, t0: float) -> Problem:
    """The (cached) `Problem`: one compiled objective per structure, reused across calls."""
    if method not in METHODS and method != FOCEI_WITHOUT_VARIANCE_TERM:
        raise ValueError(method)
    # Nested forward derivatives: the one-solve path's gradient is reverse-only, and
    # diffrax needs its forward-mode adjoint. A model that is linear PK alone is solved
    # by superposition on the closed-form path: no loop, so the nested derivatives stay
    # small and compile in seconds.
    closed = uses_closed_form(model, options) and is_linear_pk_only(model)
    options = dataclasses.replace(options, events="superposition" if closed else "split", adjoint="forward")
    return Problem(model, layout, method, options, float(t0))


#: The subject axis is padded to a multiple of this (see `subject_arrays`).
SUBJECT_BUCKET = 8


def subject_arrays(model: Model, data) -> tuple[SubjectArrays, np.ndarray, float]:
    """JAX arrays of a `PopulationData`, observations sorted by time within each subject,
    the subject axis padded to a multiple of `SUBJECT_BUCKET` (per-subject results:
    take the first `data.n_subjects`).

    Returns the arrays, the sorting permutation `(n, n_obs)` and the solve's start time.
    """
    times = np.asarray(data.obs_time_h, float)
    mask = np.asarray(data.obs_mask, bool)
    # Padding sorts last (its time is the last real time); a stable sort keeps ties in
    # file order.
    key = np.where(mask, times, np.inf)
    order = np.argsort(key, axis=1, kind="stable")
    take = lambda a: np.take_along_axis(np.asarray(a), order, axis=1)  # noqa: E731
    cov_cols = []
    for name in model.covariate_names:
        if name in data.covariates:
            cov_cols.append(np.asarray(data.covariates[name], float))
        else:
            ref = next(c.reference for c in model.covariates if c.name == name)
            cov_cols.append(np.full(times.shape[0], ref))
    covariates = np.stack(cov_cols, axis=1) if cov_cols else np.zeros((times.shape[0], 0))
    doses = DoseRecords(*(np.asarray(a) for a in data.doses))
    t0 = float(min(0.0, np.min(times), np.min(np.asarray(doses.time_h)) if doses.time_h.size else 0.0))
    sorted_times = take(times)
    sorted_mask = take(mask)
    # Padding repeats the subject's last real time, so save times stay non-decreasing.
    last = np.max(np.where(sorted_mask, sorted_times, -np.inf), axis=1, initial=-np.inf)
    last = np.where(np.isfinite(last), last, 0.0)
    sorted_times = np.where(sorted_mask, sorted_times, last[:, None])
    arrays = SubjectArrays(
        doses=DoseRecords(
            jnp.asarray(doses.time_h, float),
            jnp.asarray(doses.amount, float),
            jnp.asarray(doses.per_kg, float),
            jnp.asarray(doses.duration_h, float),
            jnp.asarray(doses.route, jnp.int32),
        ),
        times=jnp.asarray(sorted_times),
        observable=jnp.asarray(take(data.obs_observable), jnp.int32),
        dv=jnp.asarray(np.where(take(mask), take(np.asarray(data.dv, float)), 0.0)),
        mask=jnp.asarray(take(mask), float),
        covariates=jnp.asarray(covariates),
    )
    # Pad the subject axis to a multiple of SUBJECT_BUCKET with subjects that have no
    # observations (they contribute exactly 0): datasets of nearby sizes then share
    # compiled functions.
    n = times.shape[0]
    pad = -n % SUBJECT_BUCKET
    if pad:
        arrays = jax.tree_util.tree_map(
            lambda a: jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]), arrays
        )._replace(mask=jnp.concatenate([arrays.mask, jnp.zeros((pad, arrays.mask.shape[1]))]))
    return arrays, order, t0
