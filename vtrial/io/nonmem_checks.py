"""Checks of a NONMEM-style dataset's shape and values that the reader (`vtrial.io.nonmem`)
runs besides its per-column rules: the file as written (duplicate columns, rows with the
wrong number of fields), magnitudes no solve or likelihood can hold (`vtrial.limits`) and
covariates something needs. Each raises a `DatasetError` naming the file, row and column.

`t` is the reader's table of cells (`error(row, column, rule)`, `raw`), `res` its resolved
`[data]` mapping (`time_factor`, `covariate_columns`).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vtrial.errors import DataError, DatasetError
from vtrial.limits import MAX_DATA_VALUE, MAX_TIME_H


def check_shape(path: Path) -> list[str]:
    """The header's column names (stripped), after checking the file's shape as written:
    no column name twice (whatever the case: pandas would silently rename the second
    `DV` to `DV.1`), every data row with as many fields as the header (pandas would read
    a short row's missing fields as missing values). Rows are numbered as everywhere in
    this reader: data rows from 1, the header not counted (blank lines skipped, as pandas
    skips them), with the file's line number."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)
            header = next(reader, None)
            if header is None:
                raise DatasetError(str(path), None, None, "the file is empty (no header line)")
            names = [c.strip() for c in header]
            seen: dict[str, str] = {}
            for name in names:
                if name and name.upper() in seen:
                    raise DatasetError(str(path), None, name, f"the column appears twice (as {seen[name.upper()]!r} too); "
                                                              "column names are not case-sensitive: remove or rename one")
                seen[name.upper()] = name
            row = 0
            for fields in reader:
                if not fields or (len(fields) == 1 and not fields[0].strip() and len(names) > 1):
                    continue  # a blank line (pandas skips it too)
                row += 1
                if len(fields) != len(names):
                    line = "" if reader.line_num == row + 1 else f" (at line {reader.line_num}: blank lines are not rows)"
                    raise DatasetError(str(path), row, None,
                                       f"{len(fields)} fields{line}, but the header has "
                                       f"{len(names)} columns ({', '.join(names)}); give every row one value per column "
                                       "('.' for a missing value)")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: cannot be read as UTF-8 text ({e})") from None
    except csv.Error as e:
        raise DataError(f"{path}: cannot be read as CSV ({e})") from None
    return names


def check_magnitudes(t, res, time, time_h, amt, rate, ii, addl, dv, is_dose, is_obs) -> None:
    """Values no solve or likelihood can hold, refused naming the row (`vtrial.limits`):
    |DV|, AMT and RATE above `MAX_DATA_VALUE` (their squares overflow), times, last doses
    of ADDL and infusion durations (AMT / RATE) beyond `MAX_TIME_H`."""
    fix = "give it in a larger unit ([data] amt_unit, or the observable's unit in [data.observables])"
    for column, values, rows in (("DV", dv, is_obs), ("AMT", amt, is_dose), ("RATE", rate, is_dose)):
        bad = np.flatnonzero(rows & (np.abs(values) > MAX_DATA_VALUE))
        if bad.size:
            raise t.error(bad[0], column, f"{values[bad[0]]:g} is beyond the limit of +-{MAX_DATA_VALUE:g}; {fix}")
    hours = "h (TIME converted from data.time_unit)" if res.time_factor != 1 else "h"
    bad = np.flatnonzero(time_h > MAX_TIME_H)
    if bad.size:
        i = bad[0]
        raise t.error(i, "TIME", f"time {time[i]:g} is {time_h[i]:g} {hours}, beyond the limit of {MAX_TIME_H:g} h; "
                                 "is data.time_unit right?")
    last = time_h + addl * ii * res.time_factor
    bad = np.flatnonzero(is_dose & (last > MAX_TIME_H))
    if bad.size:
        i = bad[0]
        raise t.error(i, "ADDL", f"the last of its {int(addl[i]) + 1} doses (every II {ii[i]:g}) is at {last[i]:g} h, "
                                 f"beyond the limit of {MAX_TIME_H:g} h")
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        duration = np.where(is_dose & (rate > 0), amt / np.where(rate > 0, rate, 1.0), 0.0) * res.time_factor
    bad = np.flatnonzero(duration > MAX_TIME_H)
    if bad.size:
        i = bad[0]
        raise t.error(i, "RATE", f"rate {rate[i]:g} infuses AMT {amt[i]:g} over {duration[i]:.3g} h, beyond the limit of "
                                 f"{MAX_TIME_H:g} h; give the rate in amount per time unit (data.amt_unit per data.time_unit)")


def require_covariates(res, t, covariates: Mapping, required: Mapping[str, str]) -> None:
    """Covariates that something needs (`required`: name -> who needs it, e.g. a covariate
    effect) and the dataset lacks are an error naming them and the columns present."""
    for cov, needed_by in required.items():
        if cov in covariates:
            continue
        column = res.covariate_columns.get(cov, cov).upper()
        looked = column + (" or WT" if cov == "bw" and "bw" not in res.covariate_columns else "")
        raise t.error(None, column, f"{needed_by} needs covariate {cov!r}, and the dataset has no column {looked} "
                                    f"(columns: {', '.join(map(str, t.raw.columns))}); add one value per subject, or name "
                                    f"its column in [data.covariates] ({cov} = \"COLUMN\")")
