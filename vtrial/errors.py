"""Exceptions that name the offending field and the fix.

Configuration and data problems are found while specs are built, before anything is
traced or compiled, and raised as `SpecError` (a `ValueError`). Numerical problems are
never raised: they become per-animal statuses in the results.
"""

from __future__ import annotations


class SpecError(ValueError):
    """A model, regimen, population, design or config field is invalid.

    The message always starts with the dotted path of the field (`field`) and says
    what is allowed.
    """

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class DataError(ValueError):
    """A user's data file (dataset, animals table, concentration-response CSV) is invalid.

    The message names the file, the column and, where it applies, the 1-based data row.
    """
