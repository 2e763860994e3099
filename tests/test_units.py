"""Dose and data units: the common units vtrial converts without pint give exactly pint's
factors (so skipping pint changes no result), and other units still go through pint."""

from __future__ import annotations

import pint
import pytest

from vtrial import units
from vtrial.errors import SpecError

PINT = pint.UnitRegistry()


@pytest.mark.parametrize("unit,target", sorted(units._COMMON))
def test_common_factors_are_exactly_pints(unit, target):
    assert units._COMMON[(unit, target)] == float(PINT.Quantity(1.0, unit).to(target).magnitude)


def test_conversions_with_and_without_pint():
    assert units.amount_to_mg(2.0, "ug/kg", "f") == (0.002, True)
    assert units.rate_to_mg_per_h(24.0, "mg/kg/day", "f") == (1.0, True)
    assert units.conversion_factor("mg/L", "ug/L", "f") == 1000.0
    assert units.amount_to_mg(1.0, "lb", "f")[0] == pytest.approx(453592.37)  # not in the table: pint
    with pytest.raises(SpecError, match="not an amount"):
        units.amount_to_mg(1.0, "mg/h", "f")
