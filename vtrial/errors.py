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


class DatasetError(DataError):
    """A row of a NONMEM-style dataset breaks a rule.

    `file`, `row` (1-based data row, the header not counted; None for a whole column),
    `column` (as spelt in the file) and `rule` (what is allowed) are kept as attributes;
    the message names all four.
    """

    def __init__(self, file: str, row: int | None, column: str | None, rule: str):
        self.file, self.row, self.column, self.rule = file, row, column, rule
        where = [file]
        if row is not None:
            where.append(f"row {row} (line {row + 1} of the file)")
        if column is not None:
            where.append(f"column {column}")
        super().__init__(f"{', '.join(where)}: {rule}")


class RunWarning(UserWarning):
    """A problem a run survives and reports: a figure that could not be drawn, endpoint
    values that are not finite for animals the solver marked `ok`. `vtrial.jobs.run_config`
    collects these into `run.json`'s `warnings` (and the record's `facts`); the CLI prints
    them. The numbers of the run are written either way."""
