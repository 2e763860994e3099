"""Dose regimens as data, lowered to padded per-animal dose records.

A regimen is a tuple of `Bolus` and `Infusion` records (each optionally repeated every
`every_h` hours, `count` times in all: NONMEM's II and ADDL + 1). Amounts are in mg or
mg/kg (multiplied by each animal's body weight `bw` inside the solve), rates in mg/h,
mg/day, mg/kg/day and so on (parsed with pint).

Lowering: `DoseRecords` holds fixed-shape arrays per animal (padded with zero-amount
boluses at t = 0, which change nothing), so regimens that differ per animal batch
together and a regimen is differentiable in its amounts.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vtrial.engine.events import DoseRecords
from vtrial.errors import SpecError
from vtrial.limits import MAX_DOSE_RECORDS, check_count, check_dose
from vtrial.models.base import Model
from vtrial.units import amount_to_mg, rate_to_mg_per_h


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _check_repeat(start_h, every_h, count, field):
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise SpecError(f"{field}.count", f"must be a whole number >= 1, got {count!r}")
    check_count(f"{field}.count", count, MAX_DOSE_RECORDS, "doses")
    if count > 1 and (every_h is None or not _is_number(every_h) or not every_h > 0):
        raise SpecError(f"{field}.every_h", "repeated doses (count > 1) need a finite interval every_h > 0 h")
    last = start_h + (count - 1) * (every_h or 0.0)
    if not math.isfinite(last):
        raise SpecError(f"{field}.every_h", f"the last of {count} doses would be at {last} h; give finite times")


@dataclass(frozen=True)
class Bolus:
    """An instantaneous dose of `amount` (`unit`: mg, ug, mg/kg, ...) by `route` at `time_h`."""

    amount: float
    time_h: float = 0.0
    unit: str = "mg"
    route: str = "iv"
    every_h: float | None = None
    count: int = 1

    def records(self, field: str = "dose") -> list[tuple[float, float, bool, float, str]]:
        if not (_is_number(self.amount) and self.amount >= 0):
            raise SpecError(f"{field}.amount", f"must be a number >= 0, got {self.amount!r}")
        if not (_is_number(self.time_h) and self.time_h >= 0):
            raise SpecError(f"{field}.time_h", f"must be a finite time >= 0 h, got {self.time_h!r}")
        _check_repeat(self.time_h, self.every_h, self.count, field)
        mg, per_kg = amount_to_mg(self.amount, self.unit, f"{field}.unit")
        check_dose(f"{field}.amount", mg, per_kg)
        step = self.every_h or 0.0
        return [(self.time_h + k * step, mg, per_kg, 0.0, self.route) for k in range(self.count)]


@dataclass(frozen=True)
class Infusion:
    """A zero-order input (infusion, osmotic pump) from `start_h` for `duration_h`.

    Give either `rate` (unit such as mg/h, mg/day, mg/kg/day) or `amount` (unit such as
    mg or mg/kg; the rate is then amount / duration).
    """

    duration_h: float
    start_h: float = 0.0
    rate: float | None = None
    amount: float | None = None
    unit: str = "mg/h"
    route: str = "iv"
    every_h: float | None = None
    count: int = 1

    def records(self, field: str = "dose") -> list[tuple[float, float, bool, float, str]]:
        if not (_is_number(self.duration_h) and self.duration_h > 0):
            raise SpecError(f"{field}.duration_h", f"an infusion needs a finite duration > 0 h, got {self.duration_h!r}")
        if not (_is_number(self.start_h) and self.start_h >= 0):
            raise SpecError(f"{field}.start_h", f"must be a finite time >= 0 h, got {self.start_h!r}")
        if (self.rate is None) == (self.amount is None):
            raise SpecError(field, "give exactly one of rate (e.g. mg/kg/day) or amount (e.g. mg)")
        value = self.rate if self.rate is not None else self.amount
        name = "rate" if self.rate is not None else "amount"
        if not (_is_number(value) and value >= 0):
            raise SpecError(f"{field}.{name}", f"must be a number >= 0, got {value!r}")
        _check_repeat(self.start_h, self.every_h, self.count, field)
        if self.rate is not None:
            rate, per_kg = rate_to_mg_per_h(self.rate, self.unit, f"{field}.unit")
            total = rate * self.duration_h
        else:
            total, per_kg = amount_to_mg(self.amount, self.unit, f"{field}.unit")
        check_dose(f"{field}.{name}", total, per_kg)
        step = self.every_h or 0.0
        if self.count > 1 and self.duration_h > step:
            raise SpecError(f"{field}.every_h", "repeated infusions must not overlap: every_h >= duration_h")
        return [(self.start_h + k * step, total, per_kg, self.duration_h, self.route) for k in range(self.count)]


Dose = Bolus | Infusion


@dataclass(frozen=True)
class Regimen:
    """A named tuple of doses; an empty regimen is a vehicle/untreated arm."""

    doses: tuple[Dose, ...] = ()
    name: str = "regimen"

    def records(self, model: Model, field: str | None = None) -> list[tuple[float, float, bool, float, int]]:
        """Expanded records `(time_h, amount_mg_or_mg_per_kg, per_kg, duration_h, route_index)`."""
        field = field or self.name
        out = []
        for i, dose in enumerate(self.doses):
            where = f"{field}.doses.{i}"
            records = dose.records(where)
            check_count(f"{field}.doses", len(out) + len(records), MAX_DOSE_RECORDS, "dose records in one regimen")
            for t, amt, per_kg, dur, route in records:
                try:
                    ridx = model.route_index(route)
                except SpecError as e:
                    raise SpecError(f"{where}.route", e.problem) from None
                if per_kg and "bw" not in model.covariate_names:
                    raise SpecError(f"{where}.unit", f"mg/kg doses need a body-weight covariate 'bw', which model {model.name} lacks")
                out.append((t, amt, per_kg, dur, ridx))
        return sorted(out, key=lambda r: r[0])


def lower_regimens(model: Model, regimens: Sequence[Regimen], n_records: int | None = None) -> DoseRecords:
    """Stack one regimen per animal into padded `DoseRecords` with leading animal axis."""
    expanded = [r.records(model) for r in regimens]
    n = max([len(e) for e in expanded] + [0])
    if n_records is not None:
        if n_records < n:
            raise SpecError("n_records", f"{n_records} is fewer than the {n} dose records of the longest regimen")
        n = n_records
    shape = (len(expanded), n)
    arrays = [np.zeros(shape) for _ in range(4)] + [np.zeros(shape, dtype=np.int32)]
    for i, recs in enumerate(expanded):
        for j, rec in enumerate(recs):
            for a, v in zip(arrays, rec):
                a[i, j] = v
    return DoseRecords(*arrays)

