"""The occasion column of a NONMEM dataset (`OCC`, or the column `[data] occasion`
names): each row's occasion, for inter-occasion variability
(`vtrial.estimation.occasions`)."""

from __future__ import annotations

import numpy as np

from vtrial.estimation.occasions import occasions_from_rows
from vtrial.estimation.population_data import OccasionData

#: The column read for occasions when `[data] occasion` names none.
DEFAULT_OCCASION_COLUMN = "OCC"


def read_occasions(t, column: str | None, subject, time_h, obs_rows, obs_shape) -> OccasionData | None:
    """`OccasionData` from the table `t` (`vtrial.io.nonmem._Table`), or None when the
    dataset has no occasion column (a named one must exist). Every row of a named column
    needs a number; a default `OCC` column with missing cells is not read as occasions."""
    name = column or DEFAULT_OCCASION_COLUMN
    if not t.has(name):
        if column:
            raise t.error(None, column, "column missing (data.occasion names it)")
        return None
    occ, missing = t.numbers(name)
    if missing.any() and not column:
        return None  # an OCC column not for occasions (a fit with IOV then says the dataset has none)
    if missing.any():
        raise t.error(int(np.flatnonzero(missing)[0]), name, "every row needs an occasion (a number, e.g. 1, 2, 3)")
    return occasions_from_rows(subject, time_h, occ, obs_rows, obs_shape)
