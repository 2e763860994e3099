r"""Targets and constraints of a dose optimisation: per-animal criteria and the share of
animals that must meet each.

A `Requirement` is an endpoint of the model (a statistic of an observable over a window:
`vtrial.models.base.Endpoint`), a bound on it (`at_least` or `at_most`) and the
`fraction` of animals that must meet the bound. The target is one requirement (e.g.
"swelling above baseline over days 22-28 reduced by at least 50% relative to the same
animal untreated, in 90% of animals": its fraction is the PTA to reach); exposure
constraints are others ("trough above 1 mg/L in 90% of animals", "Cmax below 50 mg/L in
95%").

With `relative_to_untreated`, the value judged is the percent change of the endpoint
relative to the *same* animal under vehicle: $v_i = 100\,(1 - x_i / x_i^{vehicle})$
(a reduction is positive), which is why every animal is also simulated untreated.

Per animal the **margin** is the signed distance to the bound in units of the bound,
$m_i = (v_i - b)/|b|$ for `at_least` and $(b - v_i)/|b|$ for `at_most` ($|b|$ replaced by
1 when $b = 0$): the animal meets the requirement when $m_i \ge 0$. A failed solve (NaN)
never meets it. The margins are written once, for numpy and for `jax.numpy`, so the grid
sweep and the differentiable gradient search judge animals by the same function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from vtrial.errors import SpecError
from vtrial.limits import grid_size
from vtrial.models.base import Endpoint, Model, check_endpoints


@dataclass(frozen=True)
class Requirement:
    """A per-animal criterion and the share of animals that must meet it (see the module
    docstring). Give exactly one of `at_least` and `at_most`; `0 < fraction <= 1`."""

    name: str
    endpoint: Endpoint
    at_least: float | None = None
    at_most: float | None = None
    fraction: float = 0.9
    relative_to_untreated: bool = False

    def __post_init__(self):
        where = f"requirements.{self.name}"
        if (self.at_least is None) == (self.at_most is None):
            raise SpecError(where, "give exactly one of at_least or at_most")
        if not math.isfinite(self.bound):
            raise SpecError(where, f"the bound must be finite, got {self.bound!r}")
        if not (0 < self.fraction <= 1):
            raise SpecError(f"{where}.fraction", f"must lie in (0, 1], got {self.fraction!r}")
        if self.relative_to_untreated and self.endpoint.statistic == "tmax":
            raise SpecError(where, "a time of peak cannot be relative to the untreated animal")

    @property
    def bound(self) -> float:
        return self.at_least if self.at_least is not None else self.at_most

    @property
    def scale(self) -> float:
        return abs(self.bound) if self.bound != 0 else 1.0

    @property
    def sign(self) -> float:
        return 1.0 if self.at_least is not None else -1.0

    def describe(self, unit: str = "") -> str:
        what = f"{self.endpoint.statistic} of {self.endpoint.observable}"
        if self.relative_to_untreated:
            what = f"reduction of the {what} vs the same animal untreated (%)"
            unit = ""
        op = ">=" if self.at_least is not None else "<="
        return f"{what} {op} {self.bound:g}{(' ' + unit) if unit else ''} in {100 * self.fraction:g}% of animals"


def check_requirements(model: Model, requirements: Sequence[Requirement]) -> tuple[Requirement, ...]:
    """Names unique, observables known; returns them as a tuple."""
    requirements = tuple(requirements)
    if not requirements:
        raise SpecError("target", "a target is needed")
    check_endpoints(model, requirement_endpoints(requirements), "requirements")
    return requirements


def requirement_endpoints(requirements: Sequence[Requirement]) -> tuple[Endpoint, ...]:
    """Each requirement's endpoint under the requirement's name (so the values of
    `vtrial.analysis.endpoints.endpoint_values` are keyed by requirement)."""
    return tuple(replace(r.endpoint, name=r.name, inhibition=None) for r in requirements)


def requirement_times(requirements: Sequence[Requirement], every_h: float) -> np.ndarray:
    """Output times that cover every requirement: each window sampled every `every_h`
    hours, both ends included, and each `value` time (h, sorted, unique)."""
    times = []
    for r in requirements:
        e = r.endpoint
        if e.start_h is None or (e.statistic != "value" and e.end_h is None):
            raise SpecError(f"requirements.{r.name}", "give the endpoint's window (start and end) or its time")
        if e.statistic != "value" and not e.end_h > e.start_h:
            raise SpecError(f"requirements.{r.name}.end_h", f"the window must end after it starts ({e.start_h:g} h), got {e.end_h:g} h")
        if e.statistic == "value":
            times.append([e.start_h])
        else:
            grid_size("output.every_h", e.start_h, e.end_h, every_h, keys=False)  # bounded before it is made
            times.append(np.append(np.arange(e.start_h, e.end_h, every_h), e.end_h))
    return np.unique(np.concatenate(times))


def requirement_values(requirements: Sequence[Requirement], endpoint_values, vehicle_values=None, xp=np):
    """The values judged, `(..., n_requirements)`: each requirement's endpoint values
    (`endpoint_values[..., j]`), as percent change vs `vehicle_values[..., j]` (the same
    animals untreated) where the requirement is relative."""
    columns = []
    for j, r in enumerate(requirements):
        v = endpoint_values[..., j]
        if r.relative_to_untreated:
            v = 100.0 * (1.0 - v / vehicle_values[..., j])
        columns.append(v)
    return xp.stack(columns, axis=-1)


def requirement_margins(requirements: Sequence[Requirement], values, xp=np):
    """Margins `(..., n_requirements)` of judged values (see the module docstring);
    NaN where the value is NaN (a failed animal)."""
    bound = xp.asarray([r.bound for r in requirements])
    sign = xp.asarray([r.sign for r in requirements])
    scale = xp.asarray([r.scale for r in requirements])
    return sign * (values - bound) / scale


def attained(margins) -> np.ndarray:
    """Whether each animal meets each requirement (NaN margins never do)."""
    m = np.asarray(margins)
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(m), False, m >= 0)
