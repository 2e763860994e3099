"""`vtrial model NAME_OR_FILE`: a model's card, and checks that its code is sound.

The card lists what the model declares (states, parameters with units, bounds and
sources, routes, observables, covariates, endpoints). The checks solve the typical
animal after one dose (1 mg at t = 0) on its first route, at a few times after it:

- `jit`: the solve traces and compiles under `jax.jit`, every observable is finite;
- `vmap`: two animals solved under `jax.vmap` give what each gives alone;
- `gradients`: the derivative of every observable with respect to every parameter
  (reverse mode, as estimation and dose optimisation take it) matches central
  differences (one-sided at a bound), as sensitivities d y / d log p relative to the observable's largest value;
- `linear_pk`: a declared closed-form linear PK block gives what the ODE solve of the
  model's own vector field gives (`SolverOptions(pk="ode")`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from vtrial.engine.events import DoseRecords
from vtrial.engine.solve import STATUS_NAMES, SolverOptions, solve_animal
from vtrial.models.base import Model

#: Relative sensitivities (d log y / d log p) may differ from central differences by
#: this much (absolute) plus `GRADIENT_RTOL` of their size; the solve's own error
#: (rtol 1e-8) over the difference step (1e-4) is about 1e-4.
GRADIENT_ATOL = 2e-3
GRADIENT_RTOL = 2e-2
#: Closed-form linear PK against the ODE solve: relative, and absolute per the observable's scale.
LINEAR_PK_RTOL = 1e-5


@dataclass(frozen=True)
class CheckResult:
    """One check: `name`, whether it `passed`, and what was found (`detail`)."""

    name: str
    passed: bool
    detail: str


def model_card(model: Model) -> dict[str, list[dict[str, str]]]:
    """What the model declares, as tables (section -> rows of column -> text)."""
    fmt = lambda v: "-" if v is None else (f"{v:g}" if isinstance(v, float | int) else str(v))  # noqa: E731
    return {
        "states": [{"name": s.name, "unit": s.unit, "initial": fmt(s.initial), "description": s.description} for s in model.states],
        "parameters": [{"name": p.name, "value": fmt(p.value), "unit": p.unit, "lower": fmt(p.lower), "upper": fmt(p.upper),
                        "description": p.description, "source": p.source} for p in model.parameters],
        "routes": [{"name": r.name, "state": r.state, "bioavailability": r.bioavailability or "1", "lag": r.lag or "0"}
                   for r in model.routes],
        "observables": [{"name": o.name, "unit": o.unit, "description": o.description} for o in model.observables],
        "covariates": [{"name": c.name, "unit": c.unit, "reference": fmt(c.reference), "description": c.description}
                       for c in model.covariates],
        "endpoints": [{"name": e.name, "observable": e.observable, "statistic": e.statistic,
                       "window_h": "all" if e.start_h is None and e.end_h is None else f"{fmt(e.start_h)} - {fmt(e.end_h)}",
                       "inhibition": e.inhibition or "", "description": e.description} for e in model.endpoints],
    }


def check_times(model: Model) -> np.ndarray:
    """Where the checks look: hours after the dose (days for a model reported in days)."""
    return np.array([12.0, 24.0, 48.0, 96.0, 168.0]) if model.report_time_unit == "day" else np.array([0.5, 1.0, 2.0, 4.0, 8.0, 24.0])


def _dose(model: Model) -> DoseRecords:
    if not model.routes:
        return DoseRecords(*(np.zeros(0) for _ in range(4)), np.zeros(0, np.int32))
    return DoseRecords(np.zeros(1), np.ones(1), np.zeros(1), np.zeros(1), np.zeros(1, np.int32))


def _observe_fn(model: Model, times, options: SolverOptions):
    doses = _dose(model)

    def observe(p):
        sol = solve_animal(model, p, doses, times, options=options)
        observed = jax.vmap(lambda y: model.observe(y, p))(sol.states)  # derived quantities ($PK) included
        ys = jnp.stack([observed[o.name] for o in model.observables])
        return ys, sol.status  # (n_observables, n_times)

    return observe


def check_model_code(model: Model, options: SolverOptions = SolverOptions()) -> list[CheckResult]:
    """Run the checks of the module docstring; one `CheckResult` each (a check that
    cannot apply, e.g. linear PK on a model without it, passes and says so)."""
    times = jnp.asarray(check_times(model))
    p0 = {k: jnp.asarray(v, float) for k, v in model.typical_values().items()}
    out = []
    observe = jax.jit(_observe_fn(model, times, options))
    try:
        y0, status = observe(p0)
        y0 = np.asarray(y0)
    except Exception as e:  # the user's code failed to trace: say where, not a JAX traceback
        return [CheckResult("jit", False, f"the solve does not trace under jax.jit: {type(e).__name__}: {str(e).splitlines()[0]}")]
    bad = [model.observable_names[i] for i in range(y0.shape[0]) if not np.all(np.isfinite(y0[i]))]
    ok = int(status) == 0 and not bad
    out.append(CheckResult("jit", ok, f"solved the typical animal at {len(times)} times after 1 mg on route "
                           f"{model.routes[0].name if model.routes else '(none)'}: status {STATUS_NAMES[int(status)]}"
                           + (f"; not finite: {', '.join(bad)}" if bad else "")))
    if not ok:
        return out

    other = {k: v * (1.05 if model.parameter(k).upper >= float(v) * 1.05 else 1.0) if k in model.parameter_names else v
             for k, v in p0.items()}
    batch = {k: jnp.stack([p0[k], other[k]]) for k in p0}
    try:
        yb, sb = jax.vmap(observe)(batch)
        y1, _ = observe(other)
        err = max(float(np.max(np.abs(np.asarray(yb[0]) - y0))), float(np.max(np.abs(np.asarray(yb[1]) - np.asarray(y1)))))
        scale = float(np.max(np.abs(y0))) or 1.0
        out.append(CheckResult("vmap", err <= 1e-9 * scale and bool(np.all(np.asarray(sb) == 0)),
                               f"2 animals under jax.vmap against each alone: largest difference {err:.3g}"))
    except Exception as e:
        out.append(CheckResult("vmap", False, f"the solve does not trace under jax.vmap: {type(e).__name__}: {str(e).splitlines()[0]}"))
    out.append(_check_gradients(model, observe, p0, y0))
    out.append(_check_linear_pk(model, times, p0, y0, options))
    return out


def _check_gradients(model: Model, observe, p0, y0) -> CheckResult:
    names = list(model.parameter_names)
    try:
        jac = jax.jit(jax.jacrev(lambda p: observe(p)[0]))(p0)
    except Exception as e:
        return CheckResult("gradients", False, f"reverse-mode derivatives fail: {type(e).__name__}: {str(e).splitlines()[0]}")
    # Each observable on the scale of its largest value over the check times, so a value
    # near 0 (a response before its onset) is not judged by its own relative noise.
    scale_y = np.max(np.abs(y0), axis=1, keepdims=True) + 1e-300
    worst, where = -np.inf, ""
    for name in names:
        spec = model.parameter(name)
        v = float(p0[name])
        h = 1e-4 * max(abs(v), 1e-3)
        up, down = min(v + h, spec.upper), max(v - h, spec.lower)
        y_up = np.asarray(observe({**p0, name: jnp.asarray(up)})[0])
        y_down = np.asarray(observe({**p0, name: jnp.asarray(down)})[0])
        fd = (y_up - y_down) / (up - down)
        ad = np.asarray(jac[name])
        size = max(abs(v), 1e-3)
        s_fd, s_ad = fd * size / scale_y, ad * size / scale_y  # relative sensitivities
        excess = np.abs(s_ad - s_fd) - (GRADIENT_ATOL + GRADIENT_RTOL * np.abs(s_fd))
        if np.any(~np.isfinite(s_ad)):
            return CheckResult("gradients", False, f"d/d{name} is not finite")
        k = np.unravel_index(int(np.argmax(excess)), excess.shape)
        if excess[k] > worst:
            worst = float(excess[k])
            where = (f"d {model.observable_names[k[0]]} / d {name} at t = {float(check_times(model)[k[1]]):g} h: "
                     f"{ad[k]:.6g} (automatic) vs {fd[k]:.6g} (central differences)")
    n = len(names) * len(model.observables)
    if worst > 0:
        return CheckResult("gradients", False, f"derivatives disagree with central differences: {where}")
    return CheckResult("gradients", True, f"{n} observable x parameter derivatives match central differences "
                                          f"(closest to the tolerance: {where})" if n else "no parameters")


def _check_linear_pk(model: Model, times, p0, y0, options: SolverOptions) -> CheckResult:
    if model.linear_pk is None:
        return CheckResult("linear_pk", True, "no linear-PK block declared (the ODE solve is the only path)")
    ode = SolverOptions(**{**options.__dict__, "pk": "ode"})
    try:
        y_ode, status = jax.jit(_observe_fn(model, times, ode))(p0)
    except Exception as e:
        return CheckResult("linear_pk", False, f"the ODE solve fails: {type(e).__name__}: {str(e).splitlines()[0]}")
    y_ode = np.asarray(y_ode)
    scale = np.max(np.abs(y_ode), axis=1, keepdims=True) + 1e-300
    err = np.abs(y0 - y_ode) / scale
    i, j = np.unravel_index(int(np.argmax(err)), err.shape)
    ok = int(status) == 0 and float(err[i, j]) <= LINEAR_PK_RTOL
    return CheckResult("linear_pk", ok, f"closed form against the ODE solve: largest difference {float(err[i, j]):.3g} of the "
                                        f"observable's range ({model.observable_names[i]} at t = {float(times[j]):g} h)")
