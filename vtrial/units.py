"""Dose-unit parsing with pint: amounts to mg, rates to mg/h, optionally per kg of body weight.

"Per kg" is not a physical dimension to pint (mg/kg is dimensionless), so a trailing
`/kg` is split off first and recorded as "multiply by the animal's body weight".
"""

from __future__ import annotations

from functools import lru_cache

import pint

from vtrial.errors import SpecError


@lru_cache(maxsize=1)
def _registry() -> pint.UnitRegistry:
    return pint.UnitRegistry()


def _split_per_kg(unit: str) -> tuple[str, bool]:
    u = unit.replace(" ", "")
    for token in ("/kg/", "/kg"):
        if token in u:
            rest = u.replace(token, "/" if token == "/kg/" else "", 1)
            return rest, True
    return u, False


def amount_to_mg(value: float, unit: str, field: str) -> tuple[float, bool]:
    """Convert a dose amount to mg; returns (mg or mg/kg, per_kg)."""
    base, per_kg = _split_per_kg(unit)
    ureg = _registry()
    try:
        q = ureg.Quantity(value, base)
        return float(q.to("mg").magnitude), per_kg
    except Exception:
        raise SpecError(field, f"unit {unit!r} is not an amount; use e.g. mg, ug, g, mg/kg") from None


def rate_to_mg_per_h(value: float, unit: str, field: str) -> tuple[float, bool]:
    """Convert an infusion rate to mg/h; returns (mg/h or mg/kg/h, per_kg)."""
    base, per_kg = _split_per_kg(unit)
    ureg = _registry()
    try:
        q = ureg.Quantity(value, base)
        return float(q.to("mg/hour").magnitude), per_kg
    except Exception:
        raise SpecError(field, f"unit {unit!r} is not a rate; use e.g. mg/h, mg/day, mg/kg/day") from None
