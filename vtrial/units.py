"""Dose-unit parsing with pint: amounts to mg, rates to mg/h, optionally per kg of body weight.

"Per kg" is not a physical dimension to pint (mg/kg is dimensionless), so a trailing
`/kg` is split off first and recorded as "multiply by the animal's body weight".
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from vtrial.errors import SpecError


@lru_cache(maxsize=1)
def _registry():
    import pint  # here: importing pint and building its registry cost ~0.7 s of CPU

    return pint.UnitRegistry()


#: Factors of the units nearly every config and dataset uses, exactly as pint computes
#: them (tests/test_units.py checks each against pint), so that a run with only
#: these never pays for pint; any other unit goes to pint.
_COMMON = {
    ("mg", "mg"): 1.0, ("ug", "mg"): 0.001, ("µg", "mg"): 0.001, ("μg", "mg"): 0.001, ("g", "mg"): 1000.0,
    ("ng", "mg"): 1.0000000000000002e-06, ("mcg", "mg"): 0.001,
    ("mg/h", "mg/hour"): 1.0, ("mg/hour", "mg/hour"): 1.0, ("mg/day", "mg/hour"): 0.041666666666666664,
    ("mg/min", "mg/hour"): 60.0, ("ug/h", "mg/hour"): 0.001, ("ug/day", "mg/hour"): 4.1666666666666665e-05,
    ("ug/min", "mg/hour"): 0.06, ("g/day", "mg/hour"): 41.666666666666664, ("g/h", "mg/hour"): 1000.0,
    ("h", "h"): 1.0, ("hour", "h"): 1.0, ("day", "h"): 24.0, ("min", "h"): 0.016666666666666666, ("week", "h"): 168.0,
    ("mg/L", "ug/L"): 1000.0, ("ug/L", "mg/L"): 0.001, ("mg/L", "ng/mL"): 999.9999999999999, ("ng/mL", "mg/L"): 0.001,
    ("mg/L", "mg/L"): 1.0, ("mg/L", "ug/mL"): 1.0, ("ug/mL", "mg/L"): 1.0,
}


#: What a dose unit may look like: names separated by "/" (mg, ug, mg/kg, mg/kg/day): no
#: numbers or operators, so nothing in a config is ever evaluated as an expression.
_UNIT = re.compile(r"[A-Za-zµμ]+(/[A-Za-zµμ]+){0,3}")


def _split_per_kg(unit: str, field: str = "unit") -> tuple[str, bool]:
    if not isinstance(unit, str) or not _UNIT.fullmatch(unit.replace(" ", "")):
        raise SpecError(field, f"unit {unit!r} is not a unit name like mg, ug, mg/kg, mg/h or mg/kg/day")
    u = unit.replace(" ", "")
    for token in ("/kg/", "/kg"):
        if token in u:
            rest = u.replace(token, "/" if token == "/kg/" else "", 1)
            return rest, True
    return u, False


@lru_cache(maxsize=256)
def _factor(unit: str, target: str) -> float | None:
    """How many `target` one `unit` is (None if pint cannot convert). Dose units are
    proportional (no offsets), so the factor is parsed once per unit: a dose
    optimisation lowers thousands of candidate regimens."""
    if (unit, target) in _COMMON:
        return _COMMON[(unit, target)]
    try:
        return float(_registry().Quantity(1.0, unit).to(target).magnitude)
    except Exception:
        return None


def amount_to_mg(value: float, unit: str, field: str) -> tuple[float, bool]:
    """Convert a dose amount to mg; returns (mg or mg/kg, per_kg)."""
    base, per_kg = _split_per_kg(unit, field)
    factor = _factor(base, "mg")
    if factor is None:
        raise SpecError(field, f"unit {unit!r} is not an amount; use e.g. mg, ug, g, mg/kg")
    return _finite(_number(value, field) * factor, value, unit, field), per_kg


def rate_to_mg_per_h(value: float, unit: str, field: str) -> tuple[float, bool]:
    """Convert an infusion rate to mg/h; returns (mg/h or mg/kg/h, per_kg)."""
    base, per_kg = _split_per_kg(unit, field)
    factor = _factor(base, "mg/hour")
    if factor is None:
        raise SpecError(field, f"unit {unit!r} is not a rate; use e.g. mg/h, mg/day, mg/kg/day")
    return _finite(_number(value, field) * factor, value, unit, field), per_kg


def conversion_factor(unit: str, target: str, field: str) -> float:
    """How many `target` one `unit` is (e.g. 1000 for mg/L to ug/L, 24 for day to h);
    1 when both are spelt the same (also for units pint does not know, such as a score).
    **Raises** `SpecError` naming `field` when pint cannot convert one into the other."""
    if unit.replace(" ", "") == target.replace(" ", ""):
        return 1.0
    names = isinstance(unit, str) and _UNIT.fullmatch(unit.replace(" ", "")) and _UNIT.fullmatch(target.replace(" ", ""))
    factor = _factor(unit.replace(" ", ""), target.replace(" ", "")) if names else None  # names only: nothing is evaluated
    if factor is None or not math.isfinite(factor) or factor <= 0:
        raise SpecError(field, f"unit {unit!r} does not convert to {target!r}")
    return factor


def _number(value, field: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SpecError(field, f"{value!r} is not a number") from None


def _finite(converted: float, value: float, unit: str, field: str) -> float:
    if not math.isfinite(converted):
        raise SpecError(field.rsplit(".", 1)[0], f"{value} {unit} does not convert to a finite number of mg")
    return converted


_MOLAR_TO_NM = {"fM": 1e-6, "pM": 1e-3, "nM": 1.0, "uM": 1e3, "mM": 1e6, "M": 1e9}
_MASS_TO_NG_PER_ML = {"ng/mL": 1.0, "ug/mL": 1e3, "mg/mL": 1e6, "ng/L": 1e-3, "ug/L": 1.0, "mg/L": 1e3, "g/L": 1e6}


def concentration_to_nm_factor(unit: str, mw_kda: float | None, field: str = "--mw-kda") -> float:
    """Multiply a concentration in `unit` (molar, or mass per volume) by this to get nM.

    Mass units need the molecular weight `mw_kda` (anakinra: 17.3 kDa)."""
    if unit in _MOLAR_TO_NM:
        return _MOLAR_TO_NM[unit]
    if unit not in _MASS_TO_NG_PER_ML:
        raise SpecError(field, f"unknown concentration unit {unit!r}; use one of {', '.join([*_MOLAR_TO_NM, *_MASS_TO_NG_PER_ML])}")
    if mw_kda is None:
        raise SpecError(field, f"concentrations are in {unit}; give the molecular weight (kDa, anakinra 17.3) to convert to nM")
    return _MASS_TO_NG_PER_ML[unit] / mw_kda
