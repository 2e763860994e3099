"""A dataset read as a NONMEM control stream's `$INPUT` and `$DATA` read it (`[data.source]`).

`vtrial import-nonmem` writes this table into the fit config it generates, so that
`vtrial fit` reads the control stream's own data file with no edit:

- `file`: the data file, relative to the config's folder (`vtrial fit CONFIG` reads it
  when no DATA is given);
- `columns`: `$INPUT`'s names, in the file's order (the file's own header, if any, is a
  line to ignore);
- `drop`: columns of `$INPUT` marked `=DROP` (read, then left out);
- `ignore_lines`: `$DATA IGNORE=c`: lines whose first character is `c` are skipped;
  `"@"`: lines whose first non-blank character is a letter or `@` (NONMEM's
  `IGNORE=@`); default `"#"`, as NONMEM's;
- `ignore` / `accept`: `$DATA IGNORE=(...)` / `ACCEPT=(...)` filters, `"COLUMN.OP.VALUE"`
  (OP: EQ, NE, GT, GE, LT, LE, EQN, NEN; `=` and `==` mean EQ): a record matching any
  `ignore` filter is skipped; with `accept`, only records matching one of them are kept.

Fields are separated by commas or blanks, as NONMEM reads them. The result is the same
table of text cells a CSV dataset gives, so every row check of `vtrial.io.nonmem` applies.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from vtrial.errors import DataError
from vtrial.schema import Strict

#: `$DATA` filter operators: NONMEM's names -> numpy comparisons (EQN/NEN compare numbers).
_OPERATORS = {"EQ": np.equal, "NE": np.not_equal, "GT": np.greater, "GE": np.greater_equal, "LT": np.less,
              "LE": np.less_equal, "EQN": np.equal, "NEN": np.not_equal}
_FILTER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\.(EQN|NEN|EQ|NE|GT|GE|LT|LE)\.|(==|=|/=))\s*(\S+?)\s*$", re.IGNORECASE)


def parse_filter(text: str) -> tuple[str, str, str]:
    """`"ID.EQ.3"` -> `("ID", "EQ", "3")`; a `ValueError` naming the form otherwise."""
    m = _FILTER.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a filter COLUMN.OP.VALUE (OP: {', '.join(_OPERATORS)})")
    op = (m.group(2) or {"==": "EQ", "=": "EQ", "/=": "NE"}[m.group(3)]).upper()
    return m.group(1).upper(), op, m.group(4).strip("'\"")


class NonmemSource(Strict):
    """How to read a data file as a control stream's `$INPUT`/`$DATA` do (see the module)."""

    file: Annotated[str, Field(min_length=1)]
    columns: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    drop: list[str] = []
    ignore_lines: Annotated[str, Field(min_length=1, max_length=1)] = "#"
    ignore: list[str] = []
    accept: list[str] = []

    @field_validator("ignore", "accept")
    @classmethod
    def _filters(cls, v: list[str]) -> list[str]:
        for f in v:
            parse_filter(f)
        return v

    @model_validator(mode="after")
    def _names(self):
        upper = [c.upper() for c in self.columns]
        if len(set(upper)) != len(upper):
            raise ValueError("columns: each name once")
        for name in self.drop:
            if name.upper() not in upper:
                raise ValueError(f"drop: {name!r} is not one of columns")
        kept = set(upper)
        for f in self.ignore + self.accept:
            col = parse_filter(f)[0]
            if col not in kept:
                raise ValueError(f"filter {f!r}: column {col} is not one of columns")
        if self.ignore and self.accept:
            raise ValueError("give ignore or accept filters, not both (NONMEM allows one kind per $DATA)")
        return self


def _skipped(line: str, char: str) -> bool:
    if not line.strip():
        return True
    if char == "@":
        first = line.lstrip()[0]
        return first.isalpha() or first == "@"
    return line[0] == char


def read_source(source: NonmemSource, path: Path) -> pd.DataFrame:
    """The records of `path` as text cells named by `source.columns` (dropped columns left
    out, `ignore`/`accept` applied); a `DataError` naming the file and line otherwise."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    n = len(source.columns)
    rows, line_numbers = [], []
    for k, line in enumerate(lines, start=1):
        if _skipped(line, source.ignore_lines):
            continue
        fields = [f for f in re.split(r"\s*,\s*|\s+", line.strip())]
        if len(fields) < n:
            raise DataError(f"{path}, line {k}: {len(fields)} fields, $INPUT names {n} ({', '.join(source.columns)})")
        rows.append(fields[:n])  # NONMEM reads as many items as $INPUT names
        line_numbers.append(k)
    if not rows:
        raise DataError(f"{path}: no data records (after skipping lines by IGNORE={source.ignore_lines})")
    frame = pd.DataFrame(rows, columns=[c.upper() for c in source.columns], dtype=str)
    keep = np.ones(len(frame), bool)
    for filters, accept in ((source.ignore, False), (source.accept, True)):
        if not filters:
            continue
        hit = np.zeros(len(frame), bool)
        for f in filters:
            col, op, value = parse_filter(f)
            cells = frame[col].to_numpy(str)
            if op in ("EQN", "NEN") or _number(value) is not None:
                numbers = pd.to_numeric(pd.Series(cells), errors="coerce").to_numpy(float)
                hit |= _OPERATORS[op](numbers, float(_number(value) if _number(value) is not None else np.nan))
            else:
                hit |= _OPERATORS[op](cells, value) if op in ("EQ", "NE") else np.zeros(len(frame), bool)
        keep &= hit if accept else ~hit
    frame = frame.loc[keep].drop(columns=[c.upper() for c in source.drop]).reset_index(drop=True)
    frame.attrs["line_numbers"] = np.asarray(line_numbers)[keep]
    return frame


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
