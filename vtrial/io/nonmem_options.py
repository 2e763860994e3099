"""The options of a NONMEM control stream that are not model code: $ESTIMATION and
$COVARIANCE (`estimation_options`: method, MAXEVAL, covariance matrix) and $DATA with
$INPUT (`data_source`: the file, its columns, DROPs, IGNORE/ACCEPT), read for
`vtrial.io.nonmem_control.read_control_stream`. Options vtrial cannot honour are refused
with `refuse`'s message (record and line); those without an effect are noted.
"""

from __future__ import annotations

import re
from pathlib import Path

from vtrial.errors import SpecError

#: $ESTIMATION METHODs vtrial runs: NONMEM's name -> (method without, with INTERACTION).
METHODS = {"0": ("fo", "fo"), "ZERO": ("fo", "fo"), "1": ("foce", "focei"), "COND": ("foce", "focei"),
           "CONDITIONAL": ("foce", "focei")}


def refuse(record: str, line: int, why: str) -> SpecError:
    """The error for something in `$record` at `line` that vtrial cannot run as written."""
    return SpecError(f"${record} (line {line})", why)


def estimation_options(cs, line_of: dict) -> tuple[str, int | None, str, list[str]]:
    """(method, max_iterations or None, covariance, notes) of $ESTIMATION and $COVARIANCE;
    the notes name the options that change nothing in vtrial (output and control options)."""
    method, max_iterations, notes = "focei", None, []
    recs = cs.get_records("ESTIMATION") or cs.get_records("ESTIMATE")
    if recs:
        r = recs[0]
        line = line_of.get("ESTIMATION", line_of.get("ESTIMATE", 0))
        body = re.sub(r";.*", "", str(r)).upper()
        opts = dict(re.findall(r"\b([A-Z_]+)\s*=\s*([^\s]+)", body))
        flags = set(re.findall(r"\b([A-Z_]+)\b", re.sub(r"\b[A-Z_]+\s*=\s*[^\s]+", "", body)))
        meth = opts.get("METHOD", opts.get("METH", "0"))
        interaction = bool(flags & {"INTERACTION", "INTER"})
        if "LAPLACE" in flags or "LAPLACIAN" in flags:
            if meth not in ("1", "COND", "CONDITIONAL"):
                raise refuse("ESTIMATION", line, "LAPLACE needs METHOD=1 (COND)")
            method = "laplace"
        elif meth in METHODS:
            method = METHODS[meth][interaction]
        else:
            raise refuse("ESTIMATION", line, f"METHOD={meth} is not supported (supported: 0/ZERO = FO, 1/COND = FOCE, "
                                              "with INTERACTION = FOCE-I, LAPLACE)")
        for key in ("MAXEVAL", "MAXEVALS", "MAX"):
            if key in opts:
                max_iterations = int(float(opts[key]))
        for bad in ("LIKELIHOOD", "-2LL", "CENTERING", "NUMERICAL", "SLOW"):
            if bad in flags:
                raise refuse("ESTIMATION", line, f"option {bad} is not supported")
        unused = sorted(f"{k}={v}" for k, v in opts.items() if k not in ("METHOD", "METH", "MAXEVAL", "MAXEVALS", "MAX"))
        unused += sorted(flags - {"ESTIMATION", "ESTIMATE", "EST", "ESTM", "INTERACTION", "INTER", "LAPLACE", "LAPLACIAN"})
        if unused:
            notes.append(f"$ESTIMATION (line {line}) options without an effect in vtrial: {' '.join(unused)}")
        if max_iterations == 0:
            notes.append(f"$ESTIMATION (line {line}) MAXEVAL=0 (evaluation only): vtrial predict evaluates the config "
                         "as given; vtrial fit estimates")
    covariance = "none"
    cov = cs.get_records("COVARIANCE")
    if cov:
        body = re.sub(r";.*", "", str(cov[0])).upper()
        m = re.search(r"MATRIX\s*=\s*([RS])", body)
        covariance = {"R": "r", "S": "s"}[m.group(1)] if m else "sandwich"
        unused = [w for w in re.sub(r"MATRIX\s*=\s*[RS]", "", body).replace("$COVARIANCE", "").replace("$COV", "").split()]
        if unused:
            notes.append(f"$COVARIANCE (line {line_of.get('COVARIANCE', 0)}) options without an effect in vtrial: "
                         f"{' '.join(unused)}")
    return method, max_iterations, covariance, notes


def data_source(cs, line_of: dict, path: Path) -> dict:
    """[data.source] of the fit config: the data file (absolute; the writer makes it
    relative to the config), $INPUT's columns and DROPs, IGNORE/ACCEPT."""
    rec = cs.get_records("DATA")[0]
    line = line_of["DATA"]
    file = Path(str(rec.filename))
    file = file if file.is_absolute() else (path.parent / file)
    inp = cs.get_records("INPUT")[0]
    columns, drop = [], []
    for item in re.sub(r";.*", "", str(inp)).replace("$INPUT", "", 1).split():
        name, _, alias = item.partition("=")
        if alias.upper() in ("DROP", "SKIP"):
            drop.append(name)
        elif alias:
            raise refuse("INPUT", line_of["INPUT"], f"{item!r}: aliases other than =DROP are not supported; rename the "
                                                     "column")
        columns.append(name)
    body = re.sub(r";.*", "", str(rec)).upper().replace(str(rec.filename).upper(), "")  # options only
    for bad in ("RECORDS", "NOREWIND", "REWIND", "NULL", "WIDE", "TRANSLATE", "LRECL", "(F", "CHECKOUT"):
        if re.search(rf"\b{re.escape(bad)}", body):
            raise refuse("DATA", line, f"option {bad} is not supported")
    ch = rec.ignore_character
    filters = [_filter_text(f) for f in rec.ignore]
    accept = [_filter_text(f) for f in rec.accept]
    return {"file": file, "columns": columns, "drop": drop, "ignore_lines": str(ch) if ch else "#", "ignore": filters,
            "accept": accept}


def _filter_text(tree) -> str:
    parts = [str(getattr(t, "value", t)) for t in getattr(tree, "children", [])] or [str(tree)]
    text = "".join(p.strip() for p in parts)
    return text if "." in text or "=" in text else str(tree)
