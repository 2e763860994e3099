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
#: Drug per animal of one regimen (mg/kg): a kilogram per kilogram, beyond any study and far
#: inside the range of floating-point amounts and concentrations.
MAX_DOSE_MG_PER_KG = 1e6
#: Largest magnitude of a dataset's DV, AMT or RATE: beyond it a residual's square or an
#: amount times a rate constant overflows float64 somewhere in the likelihood.
MAX_DATA_VALUE = 1e15
#: Latest time (h) of a dataset's row, last repeated dose or infusion end: about 11 years,
#: beyond any study vtrial is for (a TIME this large is usually a wrong time unit).
MAX_TIME_H = 1e5
#: Dose records per subject a fit accepts (after ADDL expansion): every record is an event
#: the solve steps to in every iteration of the fit, so this bounds the fit's time (1,000
#: records: about 6 s per outer iteration of 6 subjects on 2 CPU cores).
MAX_FIT_DOSE_RECORDS = 1_000
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
#: Smallest initial variance of a random effect in a fit (omega^2 = 1e-6 is a CV of 0.1%):
#: below it the estimation has no slope to start from (and cv_pct underflows); a random
#: effect that small is better left out.
MIN_INITIAL_OMEGA2 = 1e-6
#: The same bound as a CV% (100 sqrt(exp(1e-6) - 1)).
MIN_INITIAL_CV_PERCENT = 0.1
#: Range of a fit's initial values estimated on the log scale (typical values) and of its
#: initial additive residual SDs: outside it exponentials and squares in the likelihood
#: overflow or underflow before the first step.
INITIAL_VALUE_RANGE = (1e-15, 1e15)
#: Range of an initial proportional residual SD (a fraction: 0.0001% to 10,000%).
PROPORTIONAL_SD_RANGE = (1e-6, 100.0)
#: Largest seed (JAX keys take 64-bit seeds; signed for portability).
MAX_SEED = 2**63 - 1


def check_count(field: str, value: float, limit: int, what: str) -> int:
    """`value` rounded up to a whole count of `what`; a `SpecError` naming `field` and the
    limit when it is not finite or exceeds `limit`."""
    if not math.isfinite(value) or value > limit:
        shown = f"{value:.3g}" if math.isfinite(value) else str(value)
        raise SpecError(field, f"asks for {shown} {what}; the limit is {limit:,}")
    return int(math.ceil(value))


def grid_size(field: str, start: float, end: float, step: float, limit: int = MAX_OUTPUT_TIMES, *, keys: bool = True) -> int:
    """Points of the grid `start, start + step, ..., end`, refused above `limit`. With
    `keys`, `field` is the table of `start_h`, `end_h` and `every_h` and errors name the
    key at fault (`output.end_h`); without, `field` itself."""
    def key(name: str) -> str:
        return f"{field}.{name}" if keys else field

    for name, value in (("start_h", start), ("end_h", end), ("every_h", step)):
        if not math.isfinite(value):
            raise SpecError(key(name), f"must be a finite number of hours, got {value}")
    if step <= 0:
        raise SpecError(key("every_h"), f"must be > 0, got {step}")
    if end < start:
        raise SpecError(key("end_h"), f"ends ({end:g}) before it starts ({start:g})")
    points = (end - start) / step + 1
    if points > limit:
        raise SpecError(key("end_h"), f"{start:g} to {end:g} h every {step:g} h asks for {points:.3g} time points; the limit "
                                      f"is {limit:,}: shorten end_h or lengthen every_h")
    return int(math.ceil(points))


def check_dose(field: str, mg: float, per_kg: bool) -> None:
    """A dose's amount in mg (mg/kg when `per_kg`), refused above `MAX_DOSE_MG` naming `field`."""
    if not mg <= MAX_DOSE_MG:
        unit, what = ("mg/kg", "a kilogram of drug per kilogram of body weight") if per_kg else ("mg", "a kilogram of drug")
        raise SpecError(field, f"a dose of {mg:.3g} {unit} exceeds the limit of {MAX_DOSE_MG:.0e} {unit} per dose "
                               f"({what}); check the amount and its unit")
