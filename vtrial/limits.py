"""Bounds on every number that sets the size of a computation.

A config can be schema-valid and still ask for something no machine can run: 1e308 hours
of output every hour, a dose repeated a billion times, 10^12 animals. These are refused
while the config is read, with the limit in the message, instead of exhausting memory or
hanging in a loop before anything is compiled. The bounds are generous: each is far
beyond any study vtrial is for, and well inside what a workstation can hold.
"""

from __future__ import annotations

import math

from vtrial.errors import SpecError

#: Output times of one solve (the time grid every animal is saved on).
MAX_OUTPUT_TIMES = 100_000
#: Dose records of one regimen, after repeats (`count`) are expanded.
MAX_DOSE_RECORDS = 10_000
#: Animals (or wells) in one run, over all arms.
MAX_ANIMALS = 20_000_000
#: Concentrations of one assay grid, wells of one plate.
MAX_GRID = 10_000
#: Coefficient of variation (%) of a log-normal variability: 10,000% is omega^2 = ln(10^4 + 1).
MAX_CV_PERCENT = 10_000.0
#: Largest single dose, in mg (or mg/kg for doses per body weight): one kilogram of drug.
#: Beyond it a dose is a typing error, and amounts near the float limit (1e308) overflow
#: to infinity in the solve and leave every endpoint NaN.
MAX_DOSE_MG = 1e6
#: Largest seed (JAX keys take 64-bit seeds; signed for portability).
MAX_SEED = 2**63 - 1


def check_count(field: str, value: float, limit: int, what: str) -> int:
    """`value` rounded up to a whole count of `what`; a `SpecError` naming `field` and the
    limit when it is not finite or exceeds `limit`."""
    if not math.isfinite(value) or value > limit:
        shown = f"{value:.3g}" if math.isfinite(value) else str(value)
        raise SpecError(field, f"asks for {shown} {what}; the limit is {limit:,}")
    return int(math.ceil(value))


def grid_size(field: str, start: float, end: float, step: float, limit: int = MAX_OUTPUT_TIMES) -> int:
    """Points of the grid `start, start + step, ..., end`, refused above `limit`."""
    if not (math.isfinite(start) and math.isfinite(end) and math.isfinite(step)) or step <= 0:
        raise SpecError(field, f"needs finite start, end and a step > 0, got {start}, {end}, {step}")
    if end < start:
        raise SpecError(field, f"ends ({end:g}) before it starts ({start:g})")
    return check_count(field, (end - start) / step + 1, limit, "time points")


def check_dose(field: str, mg: float, per_kg: bool) -> None:
    """A dose's amount in mg (mg/kg when `per_kg`), refused above `MAX_DOSE_MG` naming `field`."""
    if not mg <= MAX_DOSE_MG:
        unit, what = ("mg/kg", "a kilogram of drug per kilogram of body weight") if per_kg else ("mg", "a kilogram of drug")
        raise SpecError(field, f"a dose of {mg:.3g} {unit} exceeds the limit of {MAX_DOSE_MG:.0e} {unit} per dose "
                               f"({what}); check the amount and its unit")
