"""The population fit's outer optimiser: optax's L-BFGS with its zoom line search, run
on the host in numpy.

`fit_population` optimises a handful of outer parameters; each of its objective
evaluations is a separately compiled program (the EBEs and the objective's Jacobian,
`vtrial.estimation.focei`). The optimiser's own arithmetic on those few numbers is
microseconds in numpy, whereas optax's update compiled with `jax.jit` cost a second of XLA
compilation in every process: its line search calls the objective back on the host, and
an executable with a host callback is never kept in JAX's persistent cache (measured:
1.0-1.3 s of a 7 s warm `vtrial fit`). This is the same algorithm, step for step, as

    optax.lbfgs(memory_size=10, scale_init_precond=True,
                linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=30,
                                                          initial_guess_strategy="one"))

(optax 0.2: `scale_by_lbfgs`, `scale(-1)`, `scale_by_zoom_linesearch` with its default
tolerances): Nocedal and Wright's algorithms 7.4 (the two-loop recursion) and 3.5/3.6
(the interval search and zoom with cubic, quadratic or bisection trial points). It gives
the iterates optax gives, up to the rounding of the dot products' summation order.
`tests/test_lbfgs.py` compares the two step by step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: optax.scale_by_zoom_linesearch's defaults (the ones `optax.lbfgs` uses).
SLOPE_RTOL = 1e-4  # sufficient decrease (Armijo) c1
CURV_RTOL = 0.9  # small curvature (Wolfe) c2
APPROX_DEC_RTOL = 1e-6  # Hager and Zhang's approximate decrease
INTERVAL_THRESHOLD = 1e-5  # an interval this short ends the zoom (with a safe step)
INCREASE_FACTOR = 2.0  # the interval search's growth of the step


def _cubicmin(a, fa, fpa, b, fb, c, fc):
    """The critical point of the cubic through (a, fa) with slope fpa, (b, fb) and (c, fc);
    NaN when there is none (scipy's and optax's `_cubicmin`)."""
    a, fa, fpa, b, fb, c, fc = np.float64((a, fa, fpa, b, fb, c, fc))  # x / 0 is inf or NaN, as in JAX
    db, dc = b - a, c - a
    denom = (db * dc) ** 2 * (db - dc)
    e1, e2 = fb - fa - fpa * db, fc - fa - fpa * dc
    big_a = (dc**2 * e1 + -(db**2) * e2) / denom
    big_b = (-(dc**3) * e1 + db**3 * e2) / denom
    return a + (-big_b + np.sqrt(big_b * big_b - 3.0 * big_a * fpa)) / (3.0 * big_a)


def _quadmin(a, fa, fpa, b, fb):
    """The critical point of the parabola through (a, fa) with slope fpa and (b, fb)."""
    a, fa, fpa, b, fb = np.float64((a, fa, fpa, b, fb))
    db = b - a
    return a - fpa / (2.0 * ((fb - fa - fpa * db) / db**2))


@dataclass
class _LineSearch:
    """optax's `ZoomLinesearchState`, for one search."""

    params: np.ndarray
    updates: np.ndarray
    value_init: float
    slope_init: float
    grad_init: np.ndarray
    count: int = 0
    stepsize: float = 0.0
    value: float = 0.0
    grad: np.ndarray = None
    slope: float = 0.0
    decrease_error: float = np.inf
    curvature_error: float = np.inf
    interval_found: bool = False
    done: bool = False
    failed: bool = False
    low: float = 0.0
    value_low: float = 0.0
    slope_low: float = 0.0
    high: float = 0.0
    value_high: float = 0.0
    slope_high: float = 0.0
    cubic_ref: float = 0.0
    value_cubic_ref: float = 0.0
    safe_stepsize: float = 0.0
    safe_value: float = 0.0
    safe_grad: np.ndarray = None

    def __post_init__(self):
        self.value = self.value_low = self.value_high = self.value_cubic_ref = self.safe_value = self.value_init
        self.slope = self.slope_low = self.slope_high = self.slope_init
        self.grad = self.safe_grad = self.grad_init


def _errors(stepsize, value, slope, value_init, slope_init) -> tuple[float, float]:
    """The sufficient-decrease and small-curvature errors (0: the criterion holds; NaN
    counts as infinite), with optax's NaN-propagating maxima and minima."""
    with np.errstate(all="ignore"):
        decrease = value - value_init - SLOPE_RTOL * stepsize * slope_init
        approx = np.maximum(slope - (2 * SLOPE_RTOL - 1.0) * slope_init, value - value_init - APPROX_DEC_RTOL * abs(value_init))
        decrease = np.maximum(np.minimum(approx, decrease), 0.0)
        curvature = np.maximum(abs(slope) - CURV_RTOL * abs(slope_init), 0.0)
    return (np.inf if np.isnan(decrease) else float(decrease)), (np.inf if np.isnan(curvature) else float(curvature))


@dataclass
class HostLBFGS:
    """L-BFGS with a zoom line search over a vector of `n` parameters (module docstring).

    `step(params, value, grad, value_and_grad)` takes one outer step from `params` (where
    the objective is `value` with gradient `grad`), calling `value_and_grad(point)` ->
    `(value, grad)` at each trial point of the line search, and returns the new params
    with their value and gradient."""

    n: int
    memory_size: int = 10
    max_linesearch_steps: int = 30
    count: int = 0
    last_params: np.ndarray = field(init=False)
    last_updates: np.ndarray = field(init=False)
    diff_params: np.ndarray = field(init=False)
    diff_updates: np.ndarray = field(init=False)
    weights: np.ndarray = field(init=False)

    def __post_init__(self):
        m = self.memory_size
        self.last_params, self.last_updates = np.zeros(self.n), np.zeros(self.n)
        self.diff_params, self.diff_updates, self.weights = np.zeros((m, self.n)), np.zeros((m, self.n)), np.zeros(m)

    def direction(self, params: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """optax.scale_by_lbfgs: the memory updated with (params, grad), then the
        inverse-Hessian approximation times `grad` (the two-loop recursion)."""
        m = self.memory_size
        memory_idx, prev_idx = self.count % m, (self.count - 1) % m
        diff_params, diff_updates = params - self.last_params, grad - self.last_updates
        dot = float(np.dot(diff_updates, diff_params))
        weight = 0.0 if dot == 0.0 else 1.0 / dot
        if self.count == 0:
            diff_params, diff_updates, weight = np.zeros_like(diff_params), np.zeros_like(diff_updates), 0.0
        self.diff_params[prev_idx], self.diff_updates[prev_idx], self.weights[prev_idx] = diff_params, diff_updates, weight
        if self.count > 0:
            denominator = float(np.dot(diff_updates, diff_updates))
            identity_scale = float(np.dot(diff_updates, diff_params)) / denominator if denominator > 0.0 else 1.0
        else:  # the first step: the gradient's capped reciprocal norm (a trust region of radius 1)
            with np.errstate(divide="ignore"):
                identity_scale = float(np.minimum(1.0, 1.0 / np.sqrt(np.dot(grad, grad))))
        indices = (memory_idx + np.arange(m)) % m
        vec = np.array(grad, float)
        alphas = np.zeros(m)
        for k in reversed(range(m)):
            i = indices[k]
            alphas[k] = self.weights[i] * float(np.dot(self.diff_params[i], vec))
            vec = vec + -alphas[k] * self.diff_updates[i]
        vec = identity_scale * vec
        for k in range(m):
            i = indices[k]
            beta = self.weights[i] * float(np.dot(self.diff_updates[i], vec))
            vec = vec + (alphas[k] - beta) * self.diff_params[i]
        self.count += 1
        self.last_params, self.last_updates = np.array(params, float), np.array(grad, float)
        return vec

    def step(self, params, value: float, grad, value_and_grad: Callable) -> tuple[np.ndarray, float, np.ndarray]:
        params, grad = np.asarray(params, float), np.asarray(grad, float)
        updates = -self.direction(params, grad)
        ls = _LineSearch(params, updates, float(value), float(np.dot(updates, grad)), grad)
        while not (ls.done or ls.failed):
            if ls.interval_found:
                self._zoom(ls, value_and_grad)
            else:
                self._search_interval(ls, value_and_grad)
            if ls.failed:  # optax's _try_safe_step
                if ls.safe_stepsize > 0.0 or np.isinf(ls.decrease_error):
                    ls.stepsize, ls.value, ls.grad = ls.safe_stepsize, ls.safe_value, ls.safe_grad
        return params + ls.stepsize * updates, ls.value, ls.grad

    @staticmethod
    def _on_line(ls: _LineSearch, stepsize: float, value_and_grad: Callable) -> tuple[float, np.ndarray, float]:
        value, grad = value_and_grad(ls.params + stepsize * ls.updates)
        grad = np.asarray(grad, float)
        return float(value), grad, float(np.dot(grad, ls.updates))

    def _search_interval(self, ls: _LineSearch, value_and_grad: Callable) -> None:
        """Nocedal and Wright's algorithm 3.5: grow the step until an interval holding an
        acceptable one is found."""
        first = ls.count == 0
        stepsize = 1.0 if first else INCREASE_FACTOR * ls.stepsize
        value, grad, slope = self._on_line(ls, stepsize, value_and_grad)
        decrease, curvature = _errors(stepsize, value, slope, ls.value_init, ls.slope_init)
        error = max(decrease, curvature)
        if decrease <= 0.0:
            ls.safe_stepsize, ls.safe_value, ls.safe_grad = stepsize, value, grad
        set_high = decrease > 0.0 or (value >= ls.value and not first)
        set_low = slope >= 0.0 and not set_high
        if set_low:
            low, value_low, slope_low, high, value_high, slope_high = stepsize, value, slope, ls.stepsize, ls.value, ls.slope
        else:
            low, value_low, slope_low, high, value_high, slope_high = ls.stepsize, ls.value, ls.slope, stepsize, value, slope
        ls.interval_found = set_high or set_low or error <= 0.0
        ls.done = error <= 0.0
        ls.failed = ls.count + 1 >= self.max_linesearch_steps and not ls.done
        ls.count += 1
        ls.stepsize, ls.value, ls.grad, ls.slope = stepsize, value, grad, slope
        ls.decrease_error, ls.curvature_error = decrease, curvature
        ls.low, ls.value_low, ls.slope_low, ls.high, ls.value_high, ls.slope_high = low, value_low, slope_low, high, value_high, slope_high
        ls.cubic_ref, ls.value_cubic_ref = low, value_low

    def _zoom(self, ls: _LineSearch, value_and_grad: Callable) -> None:
        """Nocedal and Wright's algorithm 3.6: a trial point inside the interval (cubic,
        else quadratic interpolation, else bisection), the interval narrowed around it."""
        low, high = ls.low, ls.high
        delta, left, right = abs(high - low), min(high, low), max(high, low)
        with np.errstate(all="ignore"):  # no critical point: NaN, which no test accepts
            cubic = _cubicmin(low, ls.value_low, ls.slope_low, high, ls.value_high, ls.cubic_ref, ls.value_cubic_ref)
            quad = _quadmin(low, ls.value_low, ls.slope_low, high, ls.value_high)
        if left + 0.2 * delta < cubic < right - 0.2 * delta:
            middle = cubic
        elif left + 0.1 * delta < quad < right - 0.1 * delta:
            middle = quad
        else:
            middle = (low + high) / 2.0
        value, grad, slope = self._on_line(ls, middle, value_and_grad)
        decrease, curvature = _errors(middle, value, slope, ls.value_init, ls.slope_init)
        error = max(decrease, curvature)
        if decrease <= 0.0 and value < ls.safe_value:
            ls.safe_stepsize, ls.safe_value, ls.safe_grad = middle, value, grad
        ls.done = error <= 0.0
        set_high_to_middle = decrease > 0.0 or value >= ls.value_low
        set_high_to_low = slope * (high - low) >= 0.0 and not set_high_to_middle
        new_high = (middle, value, slope) if set_high_to_middle else (high, ls.value_high, ls.slope_high)
        if set_high_to_low:
            new_high = (low, ls.value_low, ls.slope_low)
        new_low = (low, ls.value_low, ls.slope_low) if set_high_to_middle else (middle, value, slope)
        ls.cubic_ref, ls.value_cubic_ref = (high, ls.value_high) if set_high_to_middle or set_high_to_low else (low, ls.value_low)
        ls.failed = (ls.count + 1 >= self.max_linesearch_steps or (delta <= INTERVAL_THRESHOLD and ls.safe_stepsize > 0.0)) and not ls.done
        ls.count += 1
        ls.stepsize, ls.value, ls.grad, ls.slope = middle, value, grad, slope
        ls.decrease_error, ls.curvature_error = decrease, curvature
        (ls.high, ls.value_high, ls.slope_high), (ls.low, ls.value_low, ls.slope_low) = new_high, new_low
