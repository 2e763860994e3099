"""Reading users' tables: animals files and concentration-response data (CSV or Parquet).

Every problem is a `DataError` naming the file, the column and the 1-based data row.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from vtrial.errors import DataError

# unit token in a column name (lower-cased) -> canonical unit string
CONC_UNITS = {
    "fm": "fM", "pm": "pM", "nm": "nM", "um": "uM", "µm": "uM", "mm": "mM", "M": "M",
    "ng_per_ml": "ng/mL", "ug_per_ml": "ug/mL", "mg_per_ml": "mg/mL",
    "ng_per_l": "ng/L", "ug_per_l": "ug/L", "mg_per_l": "mg/L", "g_per_l": "g/L",
}
_UNIT_TOKENS = "fM, pM, nM, uM, mM, M, ng_per_ml, ug_per_ml, mg_per_ml, ng_per_l, ug_per_l, mg_per_l, g_per_l"
_CONC_COLUMN = re.compile(r"^(?:concentration|conc)_(?P<unit>.+)$", re.IGNORECASE)


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def read_table(path: str | os.PathLike, **csv_options) -> pd.DataFrame:
    """A CSV or Parquet table (chosen by the `.parquet`/`.pq` suffix)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return pd.read_parquet(path) if _is_parquet(path) else pd.read_csv(path, **csv_options)
    except Exception as e:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(f"{path}: cannot be read as {'Parquet' if _is_parquet(path) else 'CSV'} ({e})") from None


def _conc_column(columns: list[str]) -> tuple[str, str]:
    matches = [c for c in columns if _CONC_COLUMN.match(c)]
    expected = ("a concentration column named concentration_<unit> or conc_<unit> "
                f"(unit one of {_UNIT_TOKENS}; e.g. concentration_nM), a 'response' "
                "column and optionally 'replicate'")
    if not matches:
        raise DataError(f"no concentration column found among {columns}; expected {expected}.")
    if len(matches) > 1:
        raise DataError(f"several concentration columns {matches}; keep exactly one.")
    column = matches[0]
    token = _CONC_COLUMN.match(column).group("unit")
    unit = "M" if token == "M" else CONC_UNITS.get(token.lower())  # bare "m" is ambiguous
    if unit is None:
        raise DataError(f"column {column!r}: unit {token!r} not recognised; rename it to "
                        f"concentration_<unit> with unit one of {_UNIT_TOKENS} "
                        "(e.g. concentration_nM, concentration_ng_per_ml).")
    return column, unit


def _row(i: int, is_csv: bool) -> str:
    """'data row N' (1-based), plus the file line for CSV (header is line 1)."""
    return f"data row {i + 1}" + (f" (line {i + 2} of the file)" if is_csv else "")


def _numeric_column(frame: pd.DataFrame, column: str, is_csv: bool) -> np.ndarray:
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    missing = raw.isna().to_numpy()
    bad = np.flatnonzero(np.isnan(values) & ~missing)
    if bad.size:
        i = int(bad[0])
        raise DataError(f"column {column!r}, {_row(i, is_csv)}: value {raw.iloc[i]!r} is not a number; "
                        "use plain decimal numbers (no units or text in the cell).")
    nan = np.flatnonzero(missing | ~np.isfinite(values))
    if nan.size:
        i = int(nan[0])
        raise DataError(f"column {column!r}, {_row(i, is_csv)}: value is missing, NaN or infinite; "
                        "fill it in or delete the row.")
    return values


def load_concentration_response(path: str | os.PathLike) -> tuple[pd.DataFrame, str]:
    """Read a concentration-response table from CSV (or Parquet, by `.parquet`/`.pq` suffix).

    **Arguments:**

    - `path`: file with a `concentration_<unit>` (or `conc_<unit>`) column, a `response`
      column and an optional `replicate` column.

    **Returns:** `(frame, conc_unit)`: `frame` has float columns `concentration` and
    `response` (plus `replicate` if present), one row per well, in file order;
    `conc_unit` is the canonical unit string, e.g. `"nM"` or `"ng/mL"`.

    **Raises:** `DataError` (a `ValueError`) naming the column or 1-based data row for a
    missing file or column, unrecognised unit, non-numeric value, negative concentration,
    missing response, or fewer than 4 distinct concentrations.
    """
    path = Path(path)
    frame = read_table(path, skipinitialspace=True)
    try:
        return _parse_table(frame, is_csv=not _is_parquet(path))
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def _parse_table(frame: pd.DataFrame, *, is_csv: bool) -> tuple[pd.DataFrame, str]:
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise DataError("the file has no data rows.")
    column, unit = _conc_column(list(frame.columns))
    if "response" not in frame.columns:
        raise DataError(f"no 'response' column (columns: {list(frame.columns)}); "
                        "add a column named 'response' with the measured values.")
    conc = _numeric_column(frame, column, is_csv)
    response = _numeric_column(frame, "response", is_csv)
    if np.any(conc < 0):
        i = int(np.flatnonzero(conc < 0)[0])
        raise DataError(f"column {column!r}, {_row(i, is_csv)}: negative concentration {conc[i]}; "
                        "concentrations must be >= 0 (use 0 for vehicle/no-drug wells).")
    n_levels = np.unique(conc).size
    from vtrial.estimation.curvefit import MIN_DISTINCT_CONCENTRATIONS  # here: the estimation code loads only for curve fits

    if n_levels < MIN_DISTINCT_CONCENTRATIONS:
        raise DataError(f"column {column!r} has only {n_levels} distinct concentrations; the 4-parameter "
                        f"logistic needs at least {MIN_DISTINCT_CONCENTRATIONS}.")
    out = pd.DataFrame({"concentration": conc, "response": response})
    if "replicate" in frame.columns:
        out["replicate"] = frame["replicate"].to_numpy()
    return out, unit
