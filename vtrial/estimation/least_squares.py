"""Generic gradient-based estimation: least squares and negative log-likelihood.

Both entry points estimate a small dictionary of named scalar parameters on an
unconstrained scale (declared per parameter as `"identity"`, `"log"` or `"logit"`)
with L-BFGS and a zoom line search (`optax.lbfgs`). The whole optimisation, plus the
Jacobian or Hessian needed for the uncertainty, is one jitted call
(`jax.lax.while_loop` inside `jax.jit`): no host round-trip per step.

**Reusing the compiled fit.** Pass the observations through `data=` and write the
objective as a module-level function `fn(params, data)`. The compiled fit is cached on
`fn` (its identity), the parameter names and transforms, and the shapes of `data`, so
refitting a new data set of the same shape (a replicate, a bootstrap sample) does not
recompile. A closure created anew for each call recompiles each time.

**Uncertainty.** For least squares the covariance of the unconstrained parameters
$u$ is the Gauss-Newton approximation $s^2 (J^T J)^{-1}$ with $J = \\partial r/\\partial u$
(`jax.jacfwd`) at the optimum and $s^2 = \\mathrm{SSR}/(n - p)$; for a negative
log-likelihood it is the inverse Hessian (`jax.hessian`). Natural-scale standard errors
follow by the delta method. 95% intervals are computed on the unconstrained scale and
mapped back, so `log` parameters get asymmetric, always-positive intervals and `logit`
parameters stay inside (0, 1); `identity` intervals are symmetric. Least squares uses the
t quantile with $n - p$ degrees of freedom, likelihood fits the normal quantile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from vtrial.engine.optimize import STALL_STEPS as _STALL_STEPS, minimize_lbfgs  # noqa: E402

TRANSFORMS = ("identity", "log", "logit")
_CI_LEVEL = 0.95
_SINGULAR_RTOL = 1e-12  # smallest/largest eigenvalue of the scaled information matrix


@dataclasses.dataclass(frozen=True, eq=False)
class FitResult:
    """Outcome of `fit_least_squares` or `fit_negative_log_likelihood`.

    All dictionaries are keyed by parameter name, in the order of `names`.

    **Fields:**

    - `names`: parameter names, in the order used by `covariance`.
    - `transforms`: name -> `"identity"`, `"log"` or `"logit"`.
    - `estimates`, `se`, `ci_low`, `ci_high`: natural-scale estimate, delta-method
      standard error and 95% interval (NaN where the information matrix is singular).
    - `unconstrained`: estimates on the unconstrained (optimisation) scale.
    - `covariance`: `(p, p)` covariance on the unconstrained scale.
    - `objective`: final objective (SSR for least squares, NLL for likelihood fits).
    - `ssr`: sum of squared residuals (NaN for likelihood fits).
    - `n_obs`, `n_params`, `df`: residuals, parameters, residual degrees of freedom
      (`n_obs` is 0 and `df` is `None` for likelihood fits, whose intervals use the
      normal quantile).
    - `converged`, `n_steps`, `grad_norm`: optimiser diagnostics.
    - `method`: `"least_squares"` or `"negative_log_likelihood"`.
    - `units`: default units for `to_frame` (name -> unit string).
    - `warnings`: human-readable problems (non-convergence, non-identifiability).
    """

    names: tuple[str, ...]
    transforms: dict[str, str]
    estimates: dict[str, float]
    se: dict[str, float]
    ci_low: dict[str, float]
    ci_high: dict[str, float]
    unconstrained: dict[str, float]
    covariance: np.ndarray
    objective: float
    ssr: float
    n_obs: int
    n_params: int
    df: int | None
    converged: bool
    n_steps: int
    grad_norm: float
    method: str
    units: dict[str, str] = dataclasses.field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def residual_se(self) -> float:
        """Residual standard error $\\sqrt{\\mathrm{SSR}/(n-p)}$ (NaN if undefined)."""
        if self.df is None or self.df <= 0:
            return float("nan")
        return float(np.sqrt(self.ssr / self.df))

    def natural_covariance(self) -> np.ndarray:
        """Delta-method covariance of the natural-scale parameters, `(p, p)`."""
        d = np.array([_derivative(self.transforms[k], self.unconstrained[k]) for k in self.names])
        return self.covariance * np.outer(d, d)

    def to_frame(self, units: Mapping[str, str] | None = None) -> pd.DataFrame:
        """One row per parameter with columns
        `parameter, estimate, se, ci_low, ci_high, unit`.

        **Arguments:**

        - `units`: name -> unit string; overrides `self.units`; missing names get `""`.
        """
        merged = {**self.units, **(units or {})}
        rows = [
            {
                "parameter": k,
                "estimate": self.estimates[k],
                "se": self.se[k],
                "ci_low": self.ci_low[k],
                "ci_high": self.ci_high[k],
                "unit": merged.get(k, ""),
            }
            for k in self.names
        ]
        return pd.DataFrame(rows, columns=["parameter", "estimate", "se", "ci_low", "ci_high", "unit"])


# ---------------------------------------------------------------------------
# transforms


def _to_natural(kind: str, u):
    if kind == "log":
        return jnp.exp(u)
    if kind == "logit":
        return jax.nn.sigmoid(u)
    return u


def _to_unconstrained(kind: str, name: str, value: float) -> float:
    if not np.isfinite(value):
        raise ValueError(f"initial value of parameter {name!r} is not finite ({value}).")
    if kind == "log":
        if value <= 0:
            raise ValueError(f"parameter {name!r} has a 'log' transform but initial value {value} <= 0.")
        return float(np.log(value))
    if kind == "logit":
        if not 0 < value < 1:
            raise ValueError(f"parameter {name!r} has a 'logit' transform but initial value {value} is not in (0, 1).")
        return float(np.log(value) - np.log1p(-value))
    return float(value)


def _derivative(kind: str, u: float) -> float:
    """d natural / d unconstrained at `u`."""
    if kind == "log":
        return float(np.exp(u))
    if kind == "logit":
        p = 1.0 / (1.0 + np.exp(-u))
        return float(p * (1.0 - p))
    return 1.0


def _natural_np(kind: str, u):
    """Host (numpy) version of `_to_natural`."""
    u = np.asarray(u, dtype=float)
    if kind == "log":
        return np.exp(u)
    if kind == "logit":
        return 1.0 / (1.0 + np.exp(-u))
    return u


def _check_spec(init_params: Mapping[str, float], transforms: Mapping[str, str] | None):
    if not init_params:
        raise ValueError("init_params is empty: give at least one parameter.")
    transforms = dict(transforms or {})
    unknown = sorted(set(transforms) - set(init_params))
    if unknown:
        raise ValueError(f"transforms name parameters not in init_params: {unknown}.")
    spec = []
    for name in init_params:
        kind = transforms.get(name, "identity")
        if kind not in TRANSFORMS:
            raise ValueError(f"transform {kind!r} for parameter {name!r} is not one of {TRANSFORMS}.")
        spec.append((str(name), kind))
    u0 = np.array([_to_unconstrained(k, n, float(init_params[n])) for n, k in spec], dtype=np.float64)
    return tuple(spec), u0


def _unflatten(spec, u):
    return {name: _to_natural(kind, u[i]) for i, (name, kind) in enumerate(spec)}


# ---------------------------------------------------------------------------
# the fit (one jitted call)


def _fit_core(fn, spec, kind, learning_rate, u0, data, max_steps, tol):
    """Optimise and return everything the host needs for the uncertainty."""

    def natural_call(u):
        params = _unflatten(spec, u)
        return fn(params) if data is None else fn(params, data)

    if kind == "least_squares":
        def objective(u):
            r = natural_call(u)
            return 0.5 * jnp.sum(r**2)
    else:
        objective = natural_call

    f0 = objective(u0)
    u, n_steps, stalls = minimize_lbfgs(objective, u0, max_steps, tol, learning_rate)
    f, g = jax.value_and_grad(objective)(u)
    if kind == "least_squares":
        extra = jax.jacfwd(natural_call)(u)  # Jacobian of the residuals, (n, p)
    else:
        extra = jax.hessian(objective)(u)  # Hessian of the NLL, (p, p)
    return dict(u=u, f0=f0, f=f, grad=g, n_steps=n_steps, stalls=stalls, extra=extra)


_fit_core_jit = jax.jit(_fit_core, static_argnames=("fn", "spec", "kind", "learning_rate"))


# ---------------------------------------------------------------------------
# host-side uncertainty


def _invert_information(info: np.ndarray, names: tuple[str, ...]):
    """Invert a symmetric information matrix; NaNs and a warning if it is singular."""
    p = len(names)
    nan = np.full((p, p), np.nan)
    if not np.all(np.isfinite(info)):
        return nan, "information matrix is not finite at the optimum; standard errors set to NaN."
    diag = np.diag(info)
    if np.any(diag <= 0):
        flat = [names[i] for i in np.flatnonzero(diag <= 0)]
        return nan, (f"parameters {flat} do not affect the objective at the optimum (non-identifiable); "
                     "standard errors set to NaN. Fix them or change the design.")
    scale = 1.0 / np.sqrt(diag)
    scaled = info * np.outer(scale, scale)
    eig, vec = np.linalg.eigh(0.5 * (scaled + scaled.T))
    if eig[0] <= _SINGULAR_RTOL * eig[-1]:
        loading = np.abs(vec[:, 0])
        involved = [names[i] for i in np.argsort(-loading) if loading[i] > 0.3]
        return nan, (f"information matrix is singular or not positive definite (scaled smallest/largest "
                     f"eigenvalue {eig[0] / eig[-1]:.2e}); parameters {involved} are not jointly "
                     "identifiable; standard errors set to NaN.")
    inv_scaled = (vec / eig) @ vec.T
    return inv_scaled * np.outer(scale, scale), None


def _assemble(spec, kind, out, tol, units) -> FitResult:
    """Host-side (numpy) covariance, delta-method SEs, intervals and diagnostics."""
    names = tuple(n for n, _ in spec)
    u = np.asarray(out["u"], dtype=float)
    p = len(names)
    grad_norm = float(np.linalg.norm(np.asarray(out["grad"])))
    f = float(out["f"])
    warnings = []
    if kind == "least_squares":
        jac = np.asarray(out["extra"], dtype=float)
        n_obs = jac.shape[0]
        ssr = 2.0 * f
        df = n_obs - p
        info = jac.T @ jac
        if df <= 0:
            cov = np.full((p, p), np.nan)
            warnings.append(f"{n_obs} observations for {p} parameters: residual variance undefined "
                            "(need n_obs > n_params); standard errors set to NaN.")
        else:
            inv, msg = _invert_information(info, names)
            cov = (ssr / df) * inv
            if msg:
                warnings.append(msg)
        q = stats.t.ppf(0.5 + _CI_LEVEL / 2, df) if df > 0 else np.nan
    else:
        n_obs = 0
        ssr = float("nan")
        df = None
        cov, msg = _invert_information(np.asarray(out["extra"], dtype=float), names)
        if msg:
            warnings.append(msg)
        q = stats.norm.ppf(0.5 + _CI_LEVEL / 2)

    scale_f = max(1.0, abs(f))
    small = grad_norm <= tol * scale_f
    stalled = int(out["stalls"]) >= _STALL_STEPS and grad_norm <= 1e3 * tol * scale_f
    converged = bool(np.isfinite(f) and (small or stalled))
    if not converged:
        warnings.append(f"optimiser did not converge after {int(out['n_steps'])} steps "
                        f"(gradient norm {grad_norm:.3g}, objective {f:.6g}); check starting values.")

    se_u = np.sqrt(np.diag(cov))
    est, se, lo, hi = {}, {}, {}, {}
    for i, (name, tr) in enumerate(spec):
        est[name] = float(_natural_np(tr, u[i]))
        se[name] = float(abs(_derivative(tr, u[i])) * se_u[i])
        a, b = u[i] - q * se_u[i], u[i] + q * se_u[i]
        lo[name], hi[name] = float(_natural_np(tr, a)), float(_natural_np(tr, b))
    return FitResult(
        names=names, transforms=dict(spec), estimates=est, se=se, ci_low=lo, ci_high=hi,
        unconstrained={n: float(u[i]) for i, n in enumerate(names)}, covariance=cov,
        objective=(ssr if kind == "least_squares" else f), ssr=ssr, n_obs=n_obs, n_params=p,
        df=df, converged=converged, n_steps=int(out["n_steps"]), grad_norm=grad_norm,
        method=kind, units=dict(units or {}), warnings=tuple(warnings),
    )


def _fit(kind, fn, init_params, data, transforms, steps, learning_rate, tol, units):
    spec, u0 = _check_spec(init_params, transforms)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    if data is not None:
        data = jax.tree_util.tree_map(jnp.asarray, data)
    out = _fit_core_jit(fn, spec, kind, learning_rate, jnp.asarray(u0), data,
                        jnp.asarray(steps), jnp.asarray(tol, dtype=jnp.float64))
    out = jax.device_get(out)
    if not np.isfinite(out["f0"]):
        what = "residuals are" if kind == "least_squares" else "negative log-likelihood is"
        raise ValueError(f"the {what} not finite at the initial parameters {dict(init_params)}; "
                         "check the data and starting values.")
    return _assemble(spec, kind, out, float(tol), units)


def fit_least_squares(
    residual_fn: Callable[..., Any],
    init_params: Mapping[str, float],
    *,
    data: Any = None,
    transforms: Mapping[str, str] | None = None,
    steps: int = 500,
    learning_rate: float | None = None,
    tol: float = 1e-9,
    units: Mapping[str, str] | None = None,
) -> FitResult:
    """Minimise the sum of squared (weighted) residuals with L-BFGS.

    **Arguments:**

    - `residual_fn`: `residual_fn(params)` (or `residual_fn(params, data)` when `data`
      is given) -> 1-D `jnp` array of residuals, `params` a dict of natural-scale
      scalars. Weighted least squares: return `(y - f) / sigma`.
    - `init_params`: starting values, natural scale; the dict order is the order of
      `FitResult.names` and of the covariance.
    - `data`: optional pytree of arrays passed to `residual_fn`; pass data this way (with
      a module-level `residual_fn`) to reuse the compiled fit across data sets.
    - `transforms`: name -> `"identity"` (default), `"log"` (positive) or `"logit"`
      (in (0, 1)); the optimiser works on the unconstrained scale.
    - `steps`: maximum number of L-BFGS iterations.
    - `learning_rate`: `None` (default) uses the zoom line-search step; a float scales it.
    - `tol`: stop when the gradient norm of $\\tfrac12\\mathrm{SSR}$ on the unconstrained
      scale is below `tol * max(1, SSR/2)`.
    - `units`: optional default units for `FitResult.to_frame`.

    **Returns:** a `FitResult`. The covariance is the Gauss-Newton approximation
    $s^2 (J^T J)^{-1}$ on the unconstrained scale, $J$ the Jacobian of the residuals at the
    optimum (`jax.jacfwd`), $s^2 = \\mathrm{SSR}/(n-p)$. A singular $J^T J$ gives NaN
    standard errors and an entry in `warnings` instead of an exception.

    **Raises:** `ValueError` for an unknown transform, an initial value outside a
    transform's domain, or residuals that are not finite at the start.
    """
    return _fit("least_squares", residual_fn, init_params, data, transforms, steps,
                learning_rate, tol, units)


def fit_negative_log_likelihood(
    nll_fn: Callable[..., Any],
    init_params: Mapping[str, float],
    *,
    data: Any = None,
    transforms: Mapping[str, str] | None = None,
    steps: int = 500,
    learning_rate: float | None = None,
    tol: float = 1e-9,
    units: Mapping[str, str] | None = None,
) -> FitResult:
    """Minimise a scalar negative log-likelihood with L-BFGS.

    Same arguments as `fit_least_squares`, with `nll_fn(params[, data]) -> scalar`.

    **Returns:** a `FitResult` whose covariance is the inverse Hessian (`jax.hessian`)
    of the NLL on the unconstrained scale (observed information); `ssr` is NaN, `df` is
    `None` and the 95% intervals use the normal quantile. A singular or indefinite
    Hessian gives NaN standard errors and an entry in `warnings`.
    """
    return _fit("negative_log_likelihood", nll_fn, init_params, data, transforms, steps,
                learning_rate, tol, units)
