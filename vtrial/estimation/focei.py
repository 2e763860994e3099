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

A censored observation's term (`Problem.censoring` "m3"/"m4", Laplace only) is Beal's
instead of the Gaussian one (`vtrial.estimation.censoring`).

Gradient: $\eta^*$ depends on the outer parameters $x$, and $\tilde H$ depends on
$\eta^*$, so $d\eta^*/dx = -(\nabla^2_\eta L)^{-1} \nabla_x \nabla_\eta L$ (implicit
function theorem). It is taken by evaluating the objective at
$\hat\eta = \eta_s - H_s^{-1} (\nabla_\eta L(x, \eta_s) - [\nabla_\eta L]_s)$ where
$\eta_s$ (the converged EBE), $H_s$ (the exact Hessian there) and $[\cdot]_s$ carry no
derivative: $\hat\eta = \eta_s$ in value, and its derivative is exactly the implicit one.

The model is solved, and differentiated, once per subject and evaluation for all of
this: the OFV and its gradient depend on the predictions only through their value and
first two derivatives (three for `laplace`, whose $\tilde H$ is itself a Hessian) with
respect to the subject's log individual parameters $\phi$ (the estimated typical values
and those with random effects; a parameter that may be <= 0 enters itself, not its log:
`Problem.log_varying`; $x$ and $\eta$ enter only through $\phi$). Those
derivatives, taken by nested forward mode through diffrax (`ForwardMode`) or the closed
form at the EBE, make a Taylor polynomial of the predictions in $\phi$ (`Expansion`);
the objective evaluated on that polynomial has, at the EBE, exactly the value and
gradient of the objective on the model, and its derivatives are cheap algebra (no
derivative of $x$ through the solver, which would cost $n_x$ times as many tangents and
minutes of compilation). All derivatives are forward mode (`jax.jacfwd`): the outer
parameters are few; the outer gradient is a Jacobian of the per-subject objectives,
which also gives the per-subject gradients of NONMEM's S matrix.

With inter-occasion variability the subject's random effects are $[\eta, \kappa]$ with a
block-diagonal $\Omega_i$, and the kappas are expansion variables too
(`vtrial.estimation.occasions`); without, nothing of this changes.

Subjects are independent: with several devices (GPUs, or the CPU cores
`vtrial.settings.use_all_cpu_cores` exposes) every per-subject function runs under
`shard_map`, each device on its own slice of subjects (its own EBE iterations too;
`vtrial.estimation.subjects`).
"""

from __future__ import annotations

import dataclasses
from functools import cached_property, lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from vtrial.design.population import individual_parameters
from vtrial.engine import export_cache
from vtrial.engine.batching import all_in_batch
from vtrial.engine.solve import SolverOptions, is_linear_pk_only, observe_animal, solve_animal, uses_closed_form
from vtrial.estimation.censoring import observation_terms
from vtrial.estimation.expansion import Expansion, Local
from vtrial.estimation.expansion import logdet_pd as _logdet_pd, taylor as _taylor
from vtrial.estimation.focei_diagnostics import Diagnostics, diagnostics_per_subject
from vtrial.estimation.occasions import occasion_inputs, subject_omega_chol
from vtrial.estimation.population_spec import Constants, Layout, unpack
from vtrial.estimation.subjects import SubjectArrays, compile_over_subjects
from vtrial.estimation.time_varying_effects import model_for, with_effect_values
from vtrial.models.base import Model

METHODS = ("focei", "foce", "laplace", "fo")
# FOCE-I without the variance-gradient term of its Hessian: what a FOCE-I that forgets
# the interaction in the Hessian gives (a check, not a method to use).
FOCEI_WITHOUT_VARIANCE_TERM = "_focei_without_variance_term"

#: Step lengths tried along each Newton direction (all at once, the best is taken).
_STEPS = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01)
#: Largest change of any eta in one inner step (log scale: a factor e^2).
_MAX_STEP = 2.0


export_cache.serializable(Constants, Diagnostics, Expansion, Local)  # what the compiled pieces take and give


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """The compiled population objective of one model, layout, method and solver setting,
    on one device or split over the subjects across `mesh`'s devices."""

    model: Model
    layout: Layout
    method: str
    options: SolverOptions
    t0: float
    max_newton: int = 50
    newton_tol: float = 1e-14
    mesh: Mesh | None = None
    censoring: str = "none"  # "m3"/"m4": censored rows' terms (vtrial.estimation.censoring)

    @cached_property
    def varying(self) -> tuple[str, ...]:
        """The parameters that differ between subjects or evaluations (estimated typical
        values, random effects, estimated covariate exponents): the expansions'
        variables, in model order."""
        moving = set(self.layout.theta_names) | set(self.layout.iiv_names)
        moving |= {self.layout.effects[i][0] for i in self.layout.exponents_estimated}
        return tuple(n for n in self.layout.parameter_names if n in moving)

    @cached_property
    def log_varying(self) -> tuple[bool, ...]:
        """Per `varying` parameter: whether the expansion's variable is its log (a
        parameter kept > 0: bounded below by 0 and, if it has one, an exponential random
        effect) or the parameter itself (an additive random effect, or a typical value
        that may be 0 or negative, e.g. a fractional change bounded to (-0.99, inf)).
        Either is exact at the expansion's point; the log is today's choice."""
        bounds = dict(zip(self.layout.theta_names, self.layout.theta_bounds))
        lower = {p.name: bounds.get(p.name, (p.lower, p.upper))[0] for p in self.model.parameters}
        return tuple(n not in self.layout.additive and lower[n] >= 0 for n in self.varying)

    def _phi_of(self, p, eta):
        """The expansion's variables of the parameters `p` (`log_varying`), then the
        kappas of `eta` (occasions: `vtrial.estimation.occasions`)."""
        phi = jnp.stack([jnp.log(p[n]) if log else p[n] for n, log in zip(self.varying, self.log_varying)])
        return jnp.concatenate([phi, eta[self.layout.n_iiv:]]) if self.layout.n_kappa else phi

    def omega_chol(self, u, s):
        """The Cholesky factor of the subject's Omega over all its random effects."""
        return subject_omega_chol(self.layout, u, s)

    @property
    def order(self) -> int:
        """Derivatives of the predictions the objective's gradient needs (module docstring)."""
        return 3 if self.method == "laplace" else 2

    # -- one subject ----------------------------------------------------------------
    def individual(self, u, constants: Constants, s, eta) -> dict:
        """The subject's model parameters (typical values, covariate effects, eta)."""
        p = dict(u.typical)
        for c, name in enumerate(self.layout.covariate_names):
            p[name] = s.covariates[c]
        return with_effect_values(individual_parameters(
            p, self.layout.effects, constants.effect_reference, u.effect_exponent, self.layout.iiv_names, eta, self.layout.additive,
            self.layout.effect_shapes,
        ), self.layout, constants, u)

    def observe(self, p, constants: Constants, s, kappa=None):
        """Solve the model: predictions in DV units at the subject's observation times; status."""
        doses = s.doses
        if self.layout.n_kappa:  # the occasions' parameters change at their times
            p, doses = occasion_inputs(self.model, self.layout, s, p, kappa)
        model = model_for(self.model, self.layout, doses)  # power effects following covariate changes
        sol = solve_animal(model, p, doses, s.times, t0=self.t0, options=self.options)
        observed = observe_animal(model, p, doses, sol.states, s.times)
        obs = jnp.stack([observed[o.name] for o in self.model.observables], axis=1)
        f = jnp.take_along_axis(obs, s.observable[:, None], axis=1)[:, 0] * constants.dv_scale[s.observable]
        return f, sol.status

    def predict(self, u, constants: Constants, s, eta, expansion: Expansion | None = None):
        """Predictions and solver status: by solving the model, or from `expansion`."""
        p = self.individual(u, constants, s, eta)
        if expansion is None:
            return self.observe(p, constants, s, eta[self.layout.n_iiv:])
        return expansion.at(self._phi_of(p, eta)), expansion.status

    def expand(self, u, constants: Constants, s, eta, order: int | None = None) -> Expansion:
        """The subject's `Expansion` at eta (one solve, differentiated `order` times,
        default `self.order`)."""
        order = self.order if order is None else order
        p = self.individual(u, constants, s, eta)
        base = jnp.stack([p[n] for n in self.varying])
        m, kappa = len(self.varying), eta[self.layout.n_iiv:]

        def f_of(delta):
            q = dict(p)
            for i, (n, log) in enumerate(zip(self.varying, self.log_varying)):
                q[n] = base[i] * jnp.exp(delta[i]) if log else base[i] + delta[i]
            return self.observe(q, constants, s, kappa + delta[m:])

        tensors, status = _taylor(f_of, jnp.zeros(m + self.layout.n_kappa, base.dtype), order)
        return Expansion(self._phi_of(p, eta), *tensors[:3], tensors[3] if order == 3 else None, status)

    def fg(self, u, constants, s, eta, expansion=None):
        def fun(e):
            f, status = self.predict(u, constants, s, e, expansion)
            return f, (f, status)

        g, (f, status) = jax.jacfwd(fun, has_aux=True)(eta)
        return f, g, status

    def fgh(self, u, constants, s, eta, expansion=None):
        def fun(e):
            f, g, status = self.fg(u, constants, s, e, expansion)
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
        if self.censoring in ("m3", "m4"):
            return s.mask * observation_terms(s.dv, f, v, s.cens, self.censoring)
        return s.mask * ((s.dv - f) ** 2 / v + jnp.log(v))

    def _phi_derivatives(self, u, s, f, v0):
        ones = jnp.ones_like(f)

        def d1(f):
            return jax.jvp(lambda f: self._phi(u, s, f, v0), (f,), (ones,))

        (phi, dphi), (_, d2phi) = jax.jvp(d1, (f,), (ones,))
        return phi, dphi, d2phi

    def _v0(self, u, constants, s, expansion0=None):
        """FOCE without interaction: residual variances at eta = 0."""
        if self.method != "foce":
            return None
        f0, _ = self.predict(u, constants, s, jnp.zeros(self.layout.n_eta), expansion0)
        return jnp.where(s.mask > 0, self.variance(u, s, f0), 1.0)

    def inner(self, u, constants, s, eta, v0, *, hessian=True, expansion=None):
        """L(eta), its gradient, its exact Hessian (if asked) and the pieces at eta."""
        omega_inv_chol = jax.scipy.linalg.solve_triangular(self.omega_chol(u, s), jnp.eye(self.layout.n_eta), lower=True)
        omega_inv = omega_inv_chol.T @ omega_inv_chol
        if hessian:
            f, g, h, status = self.fgh(u, constants, s, eta, expansion)
        else:
            f, g, status = self.fg(u, constants, s, eta, expansion)
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
    def _newton_direction(self, u, constants, s, eta, v0, expansion0):
        """One subject at eta: its `Local` (the expansion, one solve differentiated twice,
        gives L's exact Hessian), L there, the exact Newton direction (when that Hessian
        is positive definite) and the Fisher-scoring one (always defined), each capped at
        `_MAX_STEP` in eta, and whether eta is the optimum (a tiny Newton decrement)."""
        expansion = self.expand(u, constants, s, eta, order=2)
        value, grad, hess, f, g, status, omega_inv = self.inner(u, constants, s, eta, v0, expansion=expansion)
        fisher = 2.0 * self.expected_information(u, s, f, g, omega_inv, v0)
        c = jnp.linalg.cholesky(hess)
        exact_ok = jnp.all(jnp.isfinite(c))
        newton = -jax.scipy.linalg.cho_solve((jnp.where(exact_ok, c, jnp.eye(c.shape[0])), True), grad)
        scoring = -jnp.linalg.solve(fisher, grad)
        newton = jnp.where(exact_ok, newton, scoring)
        directions = jnp.stack([newton, scoring])
        directions = directions * jnp.minimum(1.0, _MAX_STEP / jnp.max(jnp.abs(directions), axis=1, keepdims=True))
        decrement = -grad @ newton
        optimal = exact_ok & (decrement < self.newton_tol * jnp.maximum(1.0, jnp.abs(value)))
        return Local(hess, expansion, expansion0), value, directions, optimal

    def _line_search(self, u, constants, s, eta, v0, value, directions, lengths):
        """The best of the steps along `directions` at `lengths` (all solved at once), and
        whether it decreases L."""
        omega_inv_chol = jax.scipy.linalg.solve_triangular(self.omega_chol(u, s), jnp.eye(self.layout.n_eta), lower=True)
        omega_inv = omega_inv_chol.T @ omega_inv_chol

        def l_at(step):
            e = eta + step
            f_e, st = self.predict(u, constants, s, e)
            val = jnp.sum(self._phi(u, s, f_e, v0)) + e @ omega_inv @ e
            return jnp.where((st == 0) & jnp.isfinite(val), val, jnp.inf)

        steps = (jnp.asarray(lengths)[None, :, None] * directions[:, None, :]).reshape(-1, eta.shape[0])
        trial = jax.vmap(l_at)(steps)
        best = jnp.argmin(trial)
        better = trial[best] < value
        return jnp.where(better, eta + steps[best], eta), better

    def ebes(self, x, constants: Constants, data: SubjectArrays, eta0):
        """The EBEs of every subject by a damped Newton iteration (no derivative flows
        through it), whether each converged, the iterations taken (per subject: those of
        its device) and each subject's `Local` at its EBE.

        An iteration computes every subject's expansion at its current eta, then (unless
        all are at their optimum) the line searches; a subject is done when its Newton
        decrement is tiny or no step improves on eta, and does not move then, so the last
        iteration's expansions are the EBEs' own and no further solve is needed."""
        x = jax.lax.stop_gradient(x)
        u = unpack(self.layout, constants, x)
        if self.method == "foce":
            expansion0 = jax.vmap(lambda s: self.expand(u, constants, s, jnp.zeros(self.layout.n_eta), order=2))(data)
            v0 = jax.vmap(lambda s, e0: self._v0(u, constants, s, e0))(data, expansion0)
        else:
            expansion0 = v0 = None
        direction = jax.vmap(lambda s, e, v, e0: self._newton_direction(u, constants, s, e, v, e0))
        def search(eta, value, directions, lengths):
            return jax.vmap(lambda s, e, v, val, d: self._line_search(u, constants, s, e, v, val, d, lengths))(
                data, eta, v0, value, directions
            )

        def step(eta, value, directions, optimal):
            # The full Newton step first (one solve): a subject takes it if it decreases L
            # (near the optimum every subject does). The others try all the lengths, solved
            # only when there are any; whether there are does not change any subject's step
            # (the subjects of a batch or a device stay independent).
            full, full_better = search(eta, value, directions[:, :1], (1.0,))
            searched, better = jax.lax.cond(
                all_in_batch(jnp.all(full_better | optimal)),  # scalar under batched_fit's vmap too
                lambda: (full, full_better),
                lambda: search(eta, value, directions, _STEPS),
            )
            return jnp.where(full_better[:, None], full, searched), full_better | better

        def body(carry):
            eta, _, _, it, _ = carry
            local, value, directions, optimal = direction(data, eta, v0, expansion0)
            moved, better = jax.lax.cond(
                all_in_batch(jnp.all(optimal)),
                lambda: (eta, jnp.zeros_like(optimal)),
                lambda: step(eta, value, directions, optimal),
            )
            # A subject that is done stays at eta, where its expansion was taken.
            done = optimal | ~better
            return jnp.where(done[:, None], eta, moved), eta, done, it + 1, local

        def cond(carry):
            _, _, done, it, _ = carry
            return (it < self.max_newton) & ~jnp.all(done)

        n = data.times.shape[0]
        local0 = jax.eval_shape(direction, data, eta0, v0, expansion0)[0]
        local0 = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), local0)
        carry = (eta0, eta0, jnp.zeros(n, bool), jnp.asarray(0), local0)
        _, eta, done, it, local = jax.lax.while_loop(cond, body, carry)
        # `eta` is where the last expansions were taken: every subject's EBE, or for one
        # stopped by the iteration limit (not converged, and reported so) its last iterate
        # but one, so that its `Local` is still its own.
        if self.order > 2:
            # Laplace: the objective's gradient needs the third derivatives.
            local = self.locals_at(u, constants, data, eta, expansion0)
        return eta, done, jnp.full(n, it), local

    def locals_at(self, u, constants, data, eta, expansion0=None) -> Local:
        """Every subject's `Local` at `eta` (no derivatives carried)."""

        def one(s, e, e0):
            if self.method == "foce" and e0 is None:
                e0 = self.expand(u, constants, s, jnp.zeros_like(e))
            expansion = self.expand(u, constants, s, e)
            if self.method == "fo":
                return Local(None, expansion, None)
            v0 = self._v0(u, constants, s, e0)
            return Local(self.inner(u, constants, s, e, v0, expansion=expansion)[2], expansion, e0)

        return jax.vmap(one)(data, eta, expansion0)

    # -- the population objective ---------------------------------------------------
    def subject_ofv(self, x, constants, s, eta_s, local: Local | None = None):
        """OFV_i at the EBE eta_s. Given `local` (from `ebes` or `locals_at` at the same x and eta_s), the
        model is not solved again and the derivative includes the implicit one of eta*;
        without it, the model is solved at eta_s (the value alone is meant)."""
        u = unpack(self.layout, constants, x)
        k = self.layout.n_eta
        expansion = None if local is None else local.expansion
        logdet_omega = 2.0 * jnp.sum(jnp.log(jnp.diagonal(self.omega_chol(u, s))))
        if self.method == "fo":
            f, g, status = self.fg(u, constants, s, jnp.zeros(k), expansion)
            v = jnp.where(s.mask > 0, self.variance(u, s, f), 1.0)
            g = g * s.mask[:, None]
            chol = self.omega_chol(u, s)
            cov = g @ chol @ chol.T @ g.T + jnp.diag(v)
            r = s.mask * (s.dv - f)
            c = jnp.linalg.cholesky(cov)
            z = jax.scipy.linalg.solve_triangular(c, r, lower=True)
            ofv = 2.0 * jnp.sum(jnp.log(jnp.diagonal(c))) + z @ z
            return self._contribution(s, status, ofv)
        v0 = self._v0(u, constants, s, None if local is None else local.expansion0)
        # d eta*/dx = -H^-1 d(grad_eta L)/dx, carried by a zero-valued Newton correction:
        # its value is exactly the EBE, its derivative the implicit one (module docstring).
        # The value also takes the Newton step left (if small: rounding-level convergence
        # errors of eta_s then enter the OFV squared, so central differences of it are
        # smooth; a large one would mean eta_s is no optimum, and is not trusted).
        if local is None:
            eta_hat = eta_s
        else:
            _, grad_s, *_ = self.inner(u, constants, s, eta_s, v0, hessian=False, expansion=expansion)
            left = jax.lax.stop_gradient(jnp.linalg.solve(local.hess, grad_s))
            left = jnp.where(jnp.max(jnp.abs(left)) < 1e-4, left, 0.0)
            eta_hat = eta_s - left - jnp.linalg.solve(local.hess, grad_s - jax.lax.stop_gradient(grad_s))
        laplace = self.method == "laplace"
        value, _, hess, f, g, status, omega_inv = self.inner(u, constants, s, eta_hat, v0, hessian=laplace, expansion=expansion)
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

    def per_subject(self, x, constants, data, eta_s, local=None):
        if local is None:
            return jax.vmap(lambda s, e: self.subject_ofv(x, constants, s, e))(data, eta_s)
        return jax.vmap(lambda s, e, loc: self.subject_ofv(x, constants, s, e, loc))(data, eta_s, local)

    # Separately compiled pieces, shared by the value and the gradient: each compiles
    # once per problem and shapes, and the Newton iteration is not compiled twice. Every
    # one maps subjects to subjects: arguments (x, constants, then per-subject arrays).
    def _compile(self, fn):
        """`fn(x, constants, data, ...)` compiled over the subjects (`compile_over_subjects`)."""
        # Kept by `export_cache` under everything that decides the trace: the problem's
        # fields (the model by its identity, the mesh by its shape) and which function.
        fields = tuple((f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in ("model", "mesh"))
        key = (type(self).__qualname__, fn.__qualname__, fields)
        return compile_over_subjects(fn, self.mesh, self.lapack_flops_per_subject, exported=(self.model, key))

    def lapack_flops_per_subject(self, data: SubjectArrays) -> int:
        """A bound on the work of one subject's batched linear algebra, derivatives
        included: FO factorises the (n_obs x n_obs) covariance of the observations, the
        other methods (n_eta x n_eta) Hessians; forward-mode derivatives in x batch
        `n_x` tangents on top."""
        m = data.times.shape[1] if self.method == "fo" else self.layout.n_eta
        return (self.layout.n_x + 1) * max(m, 1) ** 3

    @cached_property
    def solve_ebes(self):
        """jit: (x, constants, data, eta0) -> (EBEs, converged flags, iterations per subject,
        `Local`s at the EBEs)."""
        return self._compile(self.ebes)

    @cached_property
    def _locals_at_zero(self):
        """jit: FO's `Local`s (at eta = 0)."""

        def run(x, constants, data, eta):
            u = unpack(self.layout, constants, jax.lax.stop_gradient(x))
            return self.locals_at(u, constants, data, eta)

        return self._compile(run)

    @cached_property
    def _value(self):
        return self._compile(self.per_subject)

    @cached_property
    def _jacobian(self):
        def run(x, constants, data, eta, local):
            def per(x):
                o = self.per_subject(x, constants, data, eta, local)
                return o, o

            return jax.jacfwd(per, has_aux=True)(x)

        return self._compile(run)

    def _ebes_and_locals(self, x, constants, data, eta_warm):
        if self.method == "fo":
            eta = jnp.zeros_like(eta_warm)
            return eta, jnp.ones(eta.shape[0], bool), self._locals_at_zero(x, constants, data, eta)
        eta, done, _, local = self.solve_ebes(x, constants, data, eta_warm)
        return eta, done, local

    def compile_after_ebes(self, x, constants, data, eta_warm) -> None:
        """Compile (or read from the caches) the piece `evaluate` runs after the EBEs, from
        the shapes of the EBE step's outputs, without waiting for the EBEs: called in a
        background thread while `evaluate` compiles and runs the EBE step (`fit_population`)."""
        if self.method == "fo":
            eta, local = eta_warm, self._locals_at_zero.output_shapes(x, constants, data, eta_warm)
        else:
            eta, _, _, local = self.solve_ebes.output_shapes(x, constants, data, eta_warm)
        self._jacobian.compile(x, constants, data, eta, local)

    def subject_terms(self, x, constants, data, eta_warm):
        """Per subject: (OFV_i, dOFV_i/dx (n, n_x), EBEs, converged flags), the EBEs
        optimised from `eta_warm`. Traceable: `vtrial.estimation.batched_fit` vmaps it over
        replicates."""
        eta, done, local = self._ebes_and_locals(x, constants, data, eta_warm)
        jac, ofv_i = self._jacobian(x, constants, data, eta, local)
        return ofv_i, jac, eta, done

    def evaluate(self, x, constants, data, eta_warm):
        """(ofv, grad, per-subject ofv, per-subject gradients (n, n_x), EBEs, converged flags)."""
        ofv_i, jac, eta, done = self.subject_terms(x, constants, data, eta_warm)
        # Summed on the host: a sum of arrays split over devices is a program of its own.
        return np.sum(np.asarray(ofv_i)), np.sum(np.asarray(jac), axis=0), ofv_i, jac, eta, done

    def value_only(self, x, constants, data, eta_warm):
        """(ofv, per-subject ofv, EBEs)."""
        eta, _, local = self._ebes_and_locals(x, constants, data, eta_warm)
        ofv_i = self._value(x, constants, data, eta, local)
        return np.sum(np.asarray(ofv_i)), ofv_i, eta

    @cached_property
    def diagnostics(self):
        """jit: PRED, IPRED, residual SD at IPRED and CWRES of every observation
        (`vtrial.estimation.focei_diagnostics`)."""
        return self._compile(diagnostics_per_subject(self))


@lru_cache(maxsize=32)
def problem(model: Model, layout: Layout, method: str, options: SolverOptions, t0: float, mesh: Mesh | None = None,
            censoring: str = "none") -> Problem:
    """The (cached) `Problem`: one compiled objective per structure, reused across calls."""
    if method not in METHODS and method != FOCEI_WITHOUT_VARIANCE_TERM:
        raise ValueError(method)
    # Nested forward derivatives: the one-solve path's gradient is reverse-only, and
    # diffrax needs its forward-mode adjoint. A model that is linear PK alone is solved
    # by superposition on the closed-form path: no loop, so the nested derivatives stay
    # small and compile in seconds.
    closed = uses_closed_form(model, options) and is_linear_pk_only(model)
    options = dataclasses.replace(options, events="superposition" if closed else "split", adjoint="forward")
    return Problem(model, layout, method, options, float(t0), mesh=mesh, censoring=censoring)
