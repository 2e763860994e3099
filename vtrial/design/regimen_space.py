"""The space of regimens a dose optimisation searches: shapes times daily doses.

A **regimen shape** is everything about a regimen except how much drug it gives: the
route, continuous input (an s.c. osmotic pump or an infusion) or boluses every
`interval_h`, the start, the duration and a loading dose. A **candidate** is a shape
at one daily dose (mg/kg/day). Every candidate lowers to an ordinary `Regimen`
(`Infusion`/`Bolus` records in mg/kg), so candidates are data like any other regimen
and the event table stays the only representation of dosing inside the solve.

For a daily dose $D$ (mg/kg/day), a shape starting at $t_s$ for $T$ hours gives:

- continuous input: one infusion of rate $D$ mg/kg/day from $t_s$ for $T$ h;
- boluses every $\\tau$ h: $T/\\tau$ doses of $D\\,\\tau/24$ mg/kg at $t_s, t_s + \\tau, \\dots$
  ($T$ must be a whole number of intervals);
- a loading dose of $L$ days: one extra bolus of $L D$ mg/kg at $t_s$, by the shape's
  route (a pump's loading dose is a bolus by the pump's route).

Every dose amount is proportional to $D$, so `RegimenShape.regimen(1.0)` lowered to
dose records and scaled by $D$ is the candidate at $D$: the gradient search
differentiates through exactly these amounts. The total drug per animal is
$D\\,(T/24 + L)$ mg/kg (`drug_days` x $D$).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from vtrial.design.dosing import Bolus, Infusion, Regimen
from vtrial.errors import SpecError
from vtrial.limits import MAX_DOSE_MG_PER_KG, MAX_DOSE_RECORDS, check_count
from vtrial.models.base import Model

#: Dosing intervals by their prescription names (hours).
INTERVAL_NAMES = {"qd": 24.0, "bid": 12.0, "tid": 8.0, "qid": 6.0}


def interval_hours(value, field: str = "space.intervals") -> float:
    """An interval in hours from a number (h) or a name: `qd`/`q.d.` (24 h), `bid` (12 h),
    `tid` (8 h), `qid` (6 h) or `q<N>h` (e.g. `q8h`)."""
    if isinstance(value, bool):
        raise SpecError(field, f"not an interval: {value!r}")
    if isinstance(value, int | float):
        hours = float(value)
    else:
        name = str(value).strip().lower()
        match = re.fullmatch(r"q(\d+(?:\.\d+)?)h", name)
        if name.replace(".", "") in INTERVAL_NAMES:
            hours = INTERVAL_NAMES[name.replace(".", "")]
        elif match:
            hours = float(match.group(1))
        else:
            raise SpecError(field, f"unknown interval {value!r}; give hours or one of qd, bid, tid, qid, q<N>h")
    if not (math.isfinite(hours) and hours > 0):
        raise SpecError(field, f"an interval must be > 0 h, got {value!r}")
    return hours


@dataclass(frozen=True)
class RegimenShape:
    """A regimen up to its daily dose (see the module docstring).

    - `route`: one of the model's routes;
    - `interval_h`: None for continuous input (pump/infusion), else the bolus interval;
    - `start_h`, `duration_h`: when dosing starts and how long it lasts (h);
    - `loading_dose_days`: an extra first bolus worth this many days of the daily dose.
    """

    route: str
    interval_h: float | None
    start_h: float
    duration_h: float
    loading_dose_days: float = 0.0

    @property
    def continuous(self) -> bool:
        return self.interval_h is None

    @property
    def n_doses(self) -> int:
        return 1 if self.continuous else int(round(self.duration_h / self.interval_h))

    @property
    def drug_days(self) -> float:
        """Total drug per animal (mg/kg) per unit daily dose (mg/kg/day)."""
        return self.duration_h / 24.0 + self.loading_dose_days

    @property
    def label(self) -> str:
        how = f"{self.route} pump" if self.continuous else f"{self.route} q{self.interval_h:g}h"
        text = f"{how}, day {self.start_h / 24:g} for {self.duration_h / 24:g} d"
        return text + (f", loading {self.loading_dose_days:g} d" if self.loading_dose_days else "")

    def check(self, model: Model, field: str) -> None:
        try:
            model.route(self.route)
        except SpecError as e:
            raise SpecError(f"{field}.route", e.problem) from None
        if "bw" not in model.covariate_names:
            raise SpecError(field, f"daily doses are mg/kg: model {model.name} needs a body-weight covariate 'bw'")
        if not (self.start_h >= 0 and self.duration_h > 0 and self.loading_dose_days >= 0):
            raise SpecError(field, "start >= 0, duration > 0 and loading dose >= 0 are needed")
        if not self.continuous:
            check_count(f"{field}.intervals", self.duration_h / self.interval_h, MAX_DOSE_RECORDS, "doses in one regimen")
            n = self.duration_h / self.interval_h
            if abs(n - round(n)) > 1e-9 or round(n) < 1:
                raise SpecError(field, f"the duration ({self.duration_h:g} h) must be a whole number of intervals ({self.interval_h:g} h)")

    def regimen(self, daily_dose_mg_per_kg: float, name: str | None = None) -> Regimen:
        """This shape at a daily dose (mg/kg/day), as a `Regimen`."""
        d = float(daily_dose_mg_per_kg)
        doses: list = []
        if self.loading_dose_days:
            doses.append(Bolus(self.loading_dose_days * d, self.start_h, "mg/kg", self.route))
        if self.continuous:
            doses.append(Infusion(self.duration_h, self.start_h, rate=d, unit="mg/kg/day", route=self.route))
        else:
            doses.append(Bolus(d * self.interval_h / 24.0, self.start_h, "mg/kg", self.route, self.interval_h, self.n_doses))
        return Regimen(tuple(doses), name or f"{self.label}, {d:.4g} mg/kg/day")


@dataclass(frozen=True)
class Candidate:
    """A regimen shape at one daily dose; `shape_index` indexes `RegimenSpace.shapes()`."""

    shape_index: int
    shape: RegimenShape
    daily_dose_mg_per_kg: float

    @property
    def total_mg_per_kg(self) -> float:
        return self.daily_dose_mg_per_kg * self.shape.drug_days

    def regimen(self) -> Regimen:
        return self.shape.regimen(self.daily_dose_mg_per_kg)


@dataclass(frozen=True)
class RegimenSpace:
    """The regimens to search: every combination of route and delivery, start, duration
    and loading dose, at daily doses in `daily_dose_range` (mg/kg/day).

    - `pump_routes`: routes given as continuous input (s.c. osmotic pump, i.v. infusion);
    - `bolus_routes` x `intervals_h`: routes given as repeated boluses (s.c., i.p., i.v.);
    - `start_h`, `duration_h`, `loading_dose_days`: the values to try;
    - `grid_points`: daily doses per shape for the grid sweep, log-spaced over the range
      (neighbours differ by the factor `grid_step_ratio`).
    """

    daily_dose_range: tuple[float, float]
    start_h: tuple[float, ...]
    duration_h: tuple[float, ...]
    pump_routes: tuple[str, ...] = ()
    bolus_routes: tuple[str, ...] = ()
    intervals_h: tuple[float, ...] = (24.0,)
    loading_dose_days: tuple[float, ...] = (0.0,)
    grid_points: int = 40

    def __post_init__(self):
        lo, hi = self.daily_dose_range
        if not (0 < lo < hi and math.isfinite(hi)):
            raise SpecError("space.daily_dose_mg_per_kg", f"must be [low, high] with 0 < low < high, got {list(self.daily_dose_range)}")
        if not (isinstance(self.grid_points, int) and self.grid_points >= 2):
            raise SpecError("space.grid_points", f"must be a whole number >= 2, got {self.grid_points!r}")
        if not (self.pump_routes or self.bolus_routes):
            raise SpecError("space", "give at least one of pump_routes or bolus_routes")
        for name in ("start_h", "duration_h", "loading_dose_days"):
            if not getattr(self, name):
                raise SpecError(f"space.{name}", "give at least one value")

    @property
    def n_shapes(self) -> int:
        """How many shapes `shapes()` gives (counted without making them)."""
        per_timing = len(self.pump_routes) + len(self.bolus_routes) * len(self.intervals_h)
        return len(self.start_h) * len(self.duration_h) * len(self.loading_dose_days) * per_timing

    def shapes(self) -> tuple[RegimenShape, ...]:
        """Every shape, in a fixed order: pumps first, then boluses by route and interval."""
        out = []
        for start in self.start_h:
            for duration in self.duration_h:
                for loading in self.loading_dose_days:
                    out += [RegimenShape(r, None, start, duration, loading) for r in self.pump_routes]
                    out += [RegimenShape(r, tau, start, duration, loading) for r in self.bolus_routes for tau in self.intervals_h]
        return tuple(out)

    def check(self, model: Model) -> None:
        """Every shape against `model`, and the most drug any candidate gives bounded by
        `MAX_DOSE_MG_PER_KG` (named by the config key that asks for it)."""
        lo, hi = self.daily_dose_range
        days = max(self.duration_h) / 24.0
        if not hi * days <= MAX_DOSE_MG_PER_KG:
            raise SpecError("space.daily_dose_mg_per_kg", f"{hi:g} mg/kg/day for {days:g} days is {hi * days:.3g} mg/kg per animal; "
                                                          f"the limit is {MAX_DOSE_MG_PER_KG:g} mg/kg")
        for j, loading in enumerate(self.loading_dose_days):
            if not loading * hi <= MAX_DOSE_MG_PER_KG:
                raise SpecError(f"space.loading_dose_days.{j}", f"a loading dose of {loading:g} days of {hi:g} mg/kg/day is "
                                                                f"{loading * hi:.3g} mg/kg; the limit is {MAX_DOSE_MG_PER_KG:g} mg/kg")
        for i, shape in enumerate(self.shapes()):
            shape.check(model, f"space.shapes.{i} ({shape.label})")

    @property
    def grid_step_ratio(self) -> float:
        lo, hi = self.daily_dose_range
        return (hi / lo) ** (1.0 / (self.grid_points - 1))

    def daily_doses(self) -> np.ndarray:
        """The grid of daily doses (mg/kg/day), log-spaced from low to high."""
        lo, hi = self.daily_dose_range
        return np.geomspace(lo, hi, self.grid_points)

    def candidates(self) -> tuple[Candidate, ...]:
        """Every shape at every grid dose, shape by shape."""
        return tuple(Candidate(i, s, float(d)) for i, s in enumerate(self.shapes()) for d in self.daily_doses())
