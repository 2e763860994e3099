"""A NONMEM control stream read into what vtrial's model file and fit config need.

`read_control_stream(path)` reads a control stream with pharmpy-core (an optional
extra: `pip install "vtrial[nonmem]"`) and returns a `ControlStream`: the $PK, $DES and
$ERROR statements as sympy expressions (IF/THEN/ELSE as `Piecewise`), the compartments
(the linear-PK rate constants for ADVAN1-4/11/12), THETA/OMEGA/SIGMA with their bounds,
blocks and FIX, the residual error model found in $ERROR, $ESTIMATION/$COVARIANCE and the
$INPUT/$DATA mapping (`vtrial.io.nonmem_options`). A $PRED model's statements are split into the per-subject ones and
those read per record (TIME, EPS; `advan` is `PRED`, TIME its one state); `$OMEGA
BLOCK(1) SAME` becomes vtrial's occasions (`vtrial.io.nonmem_occasions.occasion_effects`). Everything vtrial cannot run as written is refused with a
`SpecError` naming the record and its line (`SUPPORTED_RECORDS`, `REFUSED_CODE`): never
dropped silently. `vtrial.io.nonmem_codegen` writes the files from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import sympy

from vtrial.errors import SpecError
from vtrial.io.nonmem_occasions import ControlStreamOccasions, occasion_effects
from vtrial.io.nonmem_options import data_source, estimation_options, refuse as _refuse
from vtrial.io.nonmem_residual import Residual, residual_model

#: The records an import reads (others are refused, naming the record and its line).
SUPPORTED_RECORDS = ("PROBLEM", "INPUT", "DATA", "SUBROUTINES", "SUBROUTINE", "MODEL", "PK", "DES", "ERROR", "PRED",
                     "THETA", "OMEGA", "SIGMA", "ESTIMATION", "ESTIMATE", "COVARIANCE", "TABLE", "ABBREVIATED", "SIZES")
#: PREDPP's records, which a $PRED model has none of.
PREDPP_RECORDS = ("SUBROUTINES", "SUBROUTINE", "MODEL", "PK", "DES", "ERROR")
#: Data items only PREDPP reads (doses): a $PRED model's dataset is read without them, as
#: NONMEM reads it (no record is a dose).
PREDPP_ITEMS = ("AMT", "RATE", "SS", "II", "ADDL", "CMT", "PCMT")
#: The `advan` of a $PRED model: no compartments; TIME is a state of slope 1 (a clock).
PRED = "PRED"
#: ADVANs whose compartments are linear PK (the closed form), and those run with $DES.
LINEAR_ADVANS = ("ADVAN1", "ADVAN2", "ADVAN3", "ADVAN4", "ADVAN11", "ADVAN12")
DES_ADVANS = ("ADVAN6", "ADVAN13")
#: Abbreviated-code constructs vtrial does not run, with the reason given when refused.
REFUSED_CODE = (
    (re.compile(r"\bCALL\b", re.I), "CALL statements (PASS, SUPP, RANDOM, ...) have no vtrial equivalent"),
    (re.compile(r"\bM(TIME|NEXT|PAST|NEW)\b", re.I), "model event times (MTIME/MNEXT/MPAST/MNEW) are not supported"),
    (re.compile(r"^\s*\"", re.I), "verbatim Fortran code cannot be converted"),
    (re.compile(r"\b(NEWIND|ICALL|IREP|NEWL2|COMACT|COMSAV)\b", re.I), "NONMEM's control variables are not supported"),
    (re.compile(r"\bA_0\s*\(|\bA_0FLG\b", re.I), "initial amounts (A_0) are not supported yet"),
    (re.compile(r"\bEXIT\b", re.I), "EXIT statements are not supported"),
    (re.compile(r"\bDO\s+WHILE\b|\bCOM\s*\(", re.I), "loops and COM variables are not supported"),
)
#: Data items that change per record (a $PK reading one is not per subject).
RECORD_ITEMS = ("TIME", "AMT", "RATE", "EVID", "MDV", "CMT", "DV", "II", "ADDL", "SS", "PCMT", "CALLFL")


def require_pharmpy():
    """pharmpy's `read_model`, or a `SpecError` saying how to install it."""
    try:
        from pharmpy.modeling import read_model
    except ImportError:
        raise SpecError("import-nonmem", "reading NONMEM control streams needs pharmpy-core, an optional extra: "
                                         "pip install \"vtrial[nonmem]\" (or pip install pharmpy-core)") from None
    return read_model


@dataclass
class Code:
    """One statement: `name = expr` (sympy), from `line` of the control stream."""

    name: str
    expr: sympy.Expr
    line: int
    text: str


@dataclass
class Theta:
    name: str
    init: float
    lower: float
    upper: float
    fix: bool
    line: int


@dataclass
class ControlStream:
    """What an import needs of a control stream (see the module docstring)."""

    path: Path
    problem: str
    advan: str  # ADVANn, or PRED for a $PRED model
    trans: str
    thetas: list[Theta]
    etas: list[str]
    omega_blocks: list[tuple[list[str], list[list[float]], bool, int]]  # (etas, matrix, fix, line)
    residual: Residual
    pk: list[Code]
    des: list[Code]
    error: list[Code]
    compartments: list[str]  # NONMEM's numbering (1-based) order
    derivatives: dict[str, sympy.Expr]  # compartment -> dA/dt without its dose input
    amounts: dict[str, sympy.Expr]  # compartment -> its amount's sympy function A_X(t)
    dose_compartment: str
    linear: dict | None  # depots, central, peripherals, rate expressions (ADVAN1-4/11/12)
    observed: sympy.Expr  # Y with every EPS = 0 ($ERROR's prediction)
    covariates: dict[str, float]  # data item -> its median in the dataset (the reference value)
    method: str
    max_iterations: int | None
    covariance: str
    data: dict
    eps: list[str] = field(default_factory=list)
    sigma_inits: dict[str, float] = field(default_factory=dict)  # SIGMA name -> initial value
    sigma_fix: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # options read that change nothing in vtrial
    occasions: ControlStreamOccasions | None = None  # $OMEGA BLOCK(1) SAME: vtrial's occasions


def _record_lines(cs) -> list[tuple[object, int]]:
    """(record, 1-based line of its start) of every record of pharmpy's control stream."""
    out, line = [], 1
    for r in cs.records:
        out.append((r, line))
        line += str(r).count("\n")
    return out


def _code_lines(record, start: int) -> list[tuple[int, str]]:
    """(line, code without comment) of a code record's non-empty lines, the record's name removed."""
    out = []
    for k, raw in enumerate(str(record).splitlines()):
        code = raw.split(";", 1)[0]
        if k == 0:
            code = re.sub(r"^\s*\$\w+", "", code)
        if code.strip():
            out.append((start + k, code.rstrip()))
    return out


def _check_code(record_name: str, lines: list[tuple[int, str]]) -> None:
    for line, code in lines:
        for pattern, why in REFUSED_CODE:
            if pattern.search(code):
                raise _refuse(record_name, line, f"{code.strip()!r}: {why}")


def _assign_line(lines: list[tuple[int, str]], name: str, after: int) -> tuple[int, str]:
    """The first line at or after index `after` assigning `name` (pharmpy's statement order
    follows the code's), as (the index to search from next, (line, text)); line 0 when
    none is found (e.g. PREDPP's F)."""
    pattern = re.compile(rf"(^|\bTHEN\b|\)\s*)\s*{re.escape(name)}\s*=(?!=)", re.I)
    for k in range(after, len(lines)):
        if pattern.search(lines[k][1]):
            return k + 1, lines[k]
    return after, (0, f"{name} (set by PREDPP, not in the code)")


def read_control_stream(path: str | Path) -> ControlStream:
    """Read and check a control stream (see the module docstring); `SpecError` naming
    the record and line of anything vtrial cannot run as written."""
    read_model = require_pharmpy()
    path = Path(path)
    if not path.is_file():
        raise SpecError("CONTROL_STREAM", f"{path}: file not found")
    text = path.read_text()
    _prescan(text)
    try:
        model = read_model(str(path))
    except Exception as e:  # pharmpy's parser raises many types; name the file and what it said
        raise SpecError("CONTROL_STREAM", f"{path}: pharmpy cannot read it: {type(e).__name__}: {e}") from None
    cs = model.internals.control_stream
    records = _record_lines(cs)
    seen: dict[str, int] = {}
    for r, line in records:
        name = getattr(r, "name", "") or ""
        if not name:
            continue
        name = name.upper()
        if name not in SUPPORTED_RECORDS:
            raise _refuse(name, line, "this record is not supported by vtrial import-nonmem (supported: "
                                      f"{', '.join('$' + s for s in SUPPORTED_RECORDS)})")
        if name in ("PK", "DES", "ERROR", "PRED", "ESTIMATION", "ESTIMATE", "COVARIANCE", "DATA", "INPUT", "SUBROUTINES",
                    "SUBROUTINE") and name in seen:
            raise _refuse(name, line, f"a second ${name} (the first is at line {seen[name]}); one problem with one "
                                      "estimation step is supported")
        seen.setdefault(name, line)
        if name == "ABBREVIATED":
            body = str(r)
            if re.search(r"\b(PROTECT|DERIV2|DECLARE|FUNCTION|COMRES|COMSAV|VECTORA|VECTORC)\b", body, re.I):
                raise _refuse(name, line, "only $ABBREVIATED REPLACE is supported")
    pred = "PRED" in seen  # (with no PREDPP record: `_prescan`)
    if not pred and "PK" not in seen:
        raise _refuse("PK", 1, "no $PK (and no $PRED): write the model with $SUBROUTINES ADVANn, $PK and $ERROR, or $PRED")
    line_of = {n: seen[n] for n in seen}
    sub = None if pred else cs.get_records("SUBROUTINES")[0]
    advan, trans = (PRED, "") if pred else (str(sub.advan).upper(), str(sub.trans or "TRANS1").upper())
    if not pred and advan not in LINEAR_ADVANS + DES_ADVANS:
        raise _refuse("SUBROUTINES", line_of["SUBROUTINES"], f"{advan} is not supported (supported: "
                                                              f"{', '.join(LINEAR_ADVANS + DES_ADVANS)} with $DES)")
    if advan in DES_ADVANS and "DES" not in seen:
        raise _refuse("SUBROUTINES", line_of["SUBROUTINES"], f"{advan} needs $DES")
    code = {}
    for r, line in records:
        if (getattr(r, "name", "") or "").upper() in ("PK", "DES", "ERROR", "PRED"):
            code[r.name.upper()] = _code_lines(r, line)
            _check_code(r.name.upper(), code[r.name.upper()])
    for line, c in code.get("PK", []) + code.get("ERROR", []):
        if re.search(r"(?<![\w(])(TIME|T)(?![\w(])", re.sub(r"^\s*\w+\s*=", "", c), re.I):
            rec = "PK" if (line, c) in code["PK"] else "ERROR"
            raise _refuse(rec, line, f"{c.strip()!r}: TIME in ${rec} makes parameters change with time, which "
                                     "vtrial's individual parameters cannot (time-varying covariates are data)")

    sts = model.statements
    ode = sts.ode_system
    rvs = model.random_variables
    params = model.parameters
    eta_names = list(rvs.etas.names)
    eps_names = list(rvs.epsilons.names)
    variance_names = set(rvs.parameter_names)
    theta_records = [(r, line) for r, line in records if r.name and r.name.upper() == "THETA"]
    theta_lines = [line for r, line in theta_records for _ in r.inits]
    thetas = [Theta(p.name, float(p.init), float(p.lower), float(p.upper), bool(p.fix), 0)
              for p in params if p.name not in variance_names]
    for k, t in enumerate(thetas):
        t.line = theta_lines[k] if k < len(theta_lines) else line_of.get("THETA", 0)

    omega_records = [(r, line) for r, line in records if r.name and r.name.upper() == "OMEGA"]
    occasions = occasion_effects(model, list(sts.before_odes) + list(sts.after_odes),
                                 [c.name for c in model.datainfo if not c.drop],
                                 lambda e: _block_line(omega_records, [e], eta_names),
                                 lambda line, why: _refuse("OMEGA", line, why))
    occasion_etas = set(occasions.occasion_etas) if occasions else set()
    used_params: dict[str, str] = {}
    blocks = []
    for dist in rvs.etas:
        names = list(dist.names)
        if set(names) & occasion_etas:
            continue  # vtrial's kappas ([variability.occasions])
        var = sympy.Matrix(sympy.sympify(dist.variance)) if len(names) > 1 else sympy.Matrix([[sympy.sympify(dist.variance)]])
        for s in var.free_symbols:
            if s.name in used_params and used_params[s.name] != names[0]:
                raise _refuse("OMEGA", line_of.get("OMEGA", 0), f"{s.name} is shared by two random effects (SAME): "
                                                                "inter-occasion variability is not converted yet")
            used_params[s.name] = names[0]
        fix = all(params[s.name].fix for s in var.free_symbols)
        if any(params[s.name].fix for s in var.free_symbols) and not fix:
            raise _refuse("OMEGA", line_of.get("OMEGA", 0), f"block {', '.join(names)} is fixed in part")
        values = [[float(var[i, j].subs({s: params[s.name].init for s in var.free_symbols})) for j in range(len(names))]
                  for i in range(len(names))]
        blocks.append((names, values, fix, _block_line(omega_records, names, eta_names)))
    for dist in rvs.epsilons:
        if len(dist.names) > 1:
            raise _refuse("SIGMA", line_of.get("SIGMA", 0), "a correlated SIGMA BLOCK is not supported")

    # statements: $PK before the ODEs (those that read amounts are $DES's), $ERROR after
    amount_fns = {}
    if ode is not None:
        for name in ode.compartment_names:
            amount_fns[name] = sympy.sympify(ode.find_compartment(name).amount)
    amount_set = set(amount_fns.values())

    def reads_amounts(e) -> bool:
        return any(f in amount_set for f in e.atoms(sympy.Function))

    pk, des, error = [], [], []
    des_names: set[str] = set()
    pk_index = des_index = err_index = 0
    if pred:
        pk, error = _pred_statements(sts, code["PRED"])
    for st in [] if pred else sts.before_odes:
        name, expr = str(st.symbol), sympy.sympify(st.expression)
        if reads_amounts(expr) or expr.free_symbols & {sympy.Symbol(n) for n in des_names}:
            des_index, (line, c) = _assign_line(code.get("DES", []), name, des_index)
            des.append(Code(name, expr, line, c.strip()))
            des_names.add(name)
        else:
            pk_index, (line, c) = _assign_line(code["PK"], name, pk_index)
            pk.append(Code(name, expr, line, c.strip()))
    for st in [] if pred else sts.after_odes:
        name, expr = str(st.symbol), sympy.sympify(st.expression)
        err_index, (line, c) = _assign_line(code.get("ERROR", []), name, err_index)
        error.append(Code(name, expr, line, c.strip()))

    if occasions:
        record = "PRED" if pred else "PK"
        pk = _without_occasion_etas(pk, des, error, occasions, record, line_of.get(record, 0))
    if pred:
        # $PRED's TIME is the model's one state, dTIME/dt = 1 from 0: the observable reads it.
        compartments, derivatives, dose_compartment, linear = ["TIME"], {"TIME": sympy.Integer(1)}, "TIME", None
        amount_fns = {"TIME": sympy.Symbol("TIME")}
        _check_pred_time(model, line_of, any(c.expr.has(sympy.Symbol("TIME")) for c in pk + error))
    else:
        compartments, derivatives, dose_compartment, linear = _compartments(model, ode, advan, trans, line_of)
    data_columns = [c.name for c in model.datainfo if not c.drop]
    eps_variance = {d.names[0]: str(d.variance) for d in rvs.epsilons}
    error_record = "PRED" if pred else "ERROR"
    residual, observed = residual_model(pk + error if pred else error, eps_names, {p.name: p for p in params},
                                        [t.name for t in thetas], line_of.get(error_record, 0), amount_set, eps_variance,
                                        record=error_record)
    used = set()
    for c in pk + des:
        used |= {s.name for s in c.expr.free_symbols}
    used |= {s.name for s in observed.free_symbols}
    for t in residual.thetas:
        if t in used:
            raise _refuse(error_record, line_of.get(error_record, 0), f"THETA {t} is part of the residual error model "
                                                                      "and of the structural model; vtrial estimates "
                                                                      "residual SDs apart")
    defined = {c.name for c in pk + des + error}
    covariates = {}
    dataset = model.dataset
    clock = {"TIME"} if pred else {"t"}
    for name in sorted(used - defined - {t.name for t in thetas} - set(eta_names) - set(eps_names) - clock):
        if name.upper() in RECORD_ITEMS:
            rec, line = _first_use(code, name)
            raise _refuse(rec, line, f"the data item {name} changes from record to record; vtrial's individual parameters "
                                     "are per subject (dose-dependent code is not supported)")
        if name in data_columns:
            column = dataset[name] if dataset is not None and name in dataset else None
            covariates[name] = float(column.median()) if column is not None and len(column) else 1.0
        elif name.upper() not in [c.upper() for c in data_columns]:
            raise _refuse(error_record if pred else "PK", line_of["PRED" if pred else "PK"],
                          f"{name} is read but neither assigned nor a data item of $INPUT")
    method, max_iterations, covariance, notes = estimation_options(cs, line_of)
    tol = None if pred else re.search(r"\bTOL\s*=\s*(\S+)", str(sub), re.I)
    if tol:
        notes.append(f"$SUBROUTINES (line {line_of['SUBROUTINES']}) TOL={tol.group(1)}: vtrial's [solver] tolerances apply")
    data = data_source(cs, line_of, path)
    if pred:
        dropped = {d.upper() for d in data["drop"]}
        data["drop"] += [c for c in data["columns"] if c.upper() in PREDPP_ITEMS and c.upper() not in dropped]
    return ControlStream(
        path=path, problem=str(cs.get_records("PROBLEM")[0]).split("\n")[0].replace("$PROBLEM", "").strip(),
        advan=advan, trans=trans, thetas=thetas, etas=[e for e in eta_names if e not in occasion_etas],
        omega_blocks=blocks, residual=residual,
        pk=pk, des=des, error=error, compartments=compartments, derivatives=derivatives, amounts=amount_fns,
        dose_compartment=dose_compartment, linear=linear, observed=observed, covariates=covariates, method=method,
        max_iterations=max_iterations, covariance=covariance, data=data, eps=eps_names,
        sigma_inits={v: float(params[v].init) for v in eps_variance.values()},
        sigma_fix={v: bool(params[v].fix) for v in eps_variance.values()}, notes=notes, occasions=occasions,
    )


def _without_occasion_etas(pk: list[Code], des: list[Code], error: list[Code], occasions: ControlStreamOccasions,
                           record: str, line: int) -> list[Code]:
    """$PK with the occasion ETAs at 0 (vtrial's kappa joins the ETA they add to) and the
    statements that only selected them (`VIS3 = 0`, `IF (VISI.EQ.3) VIS3 = 1`) left out;
    a statement that reads the occasion item for anything else is refused."""
    zero = {sympy.Symbol(e): 0 for e in occasions.occasion_etas}
    for c in pk + des + error:
        if c.expr.free_symbols & set(zero):
            c.expr = c.expr.subs(zero)
            c.text += "  (occasion ETAs: vtrial's kappas, [variability.occasions])"
    column = sympy.Symbol(occasions.column)
    flags: set[str] = set()
    changed = True
    while changed:
        changed = False
        for c in pk:
            if c.name not in flags and (c.expr.has(column) or {s.name for s in c.expr.free_symbols} & flags):
                flags.add(c.name)
                changed = True
    for c in pk + des + error:
        read = {s.name for s in c.expr.free_symbols} & flags
        if (c.name not in flags and (read or c.expr.has(column))) or (
                c.name in flags and re.match(r"^(F|ALAG|R|D|S)\d+$|^(F0|FO|S0)$", c.name)):  # PREDPP reads these
            raise _refuse(record, c.line or line, f"{c.text or c.name}: reads the occasion item {occasions.column} for "
                                                "more than selecting the occasion ETAs ($OMEGA SAME)")
    return [c for c in pk if c.name not in flags]


def _first_use(code: dict, name: str) -> tuple[str, int]:
    """(record, line) of the first code line that mentions `name`."""
    pattern = re.compile(rf"(?<![\w(]){re.escape(name)}(?![\w(])", re.I)
    for rec in ("PK", "DES", "ERROR", "PRED"):
        for line, c in code.get(rec, []):
            if pattern.search(c):
                return rec, line
    rec = "PRED" if code.get("PRED") else "PK"
    return rec, code[rec][0][0] if code.get(rec) else 0


def _prescan(text: str) -> None:
    """Refuse unsupported records and ADVANs from the raw text, before pharmpy parses
    (which fails on some of them with a less helpful message), and $PRED with PREDPP's records."""
    seen: dict[str, int] = {}
    for k, raw in enumerate(text.splitlines(), start=1):
        m = re.match(r"^\s*\$(\w+)", raw.split(";", 1)[0])
        if not m:
            continue
        name = m.group(1).upper()
        full = next((s for s in SUPPORTED_RECORDS + ("PRED", "MIX", "PRIOR", "AES", "AESINITIAL", "INFN", "SIMULATION",
                                                     "NONPARAMETRIC", "SCATTERPLOT", "MSFI", "LEVEL", "PHIS", "ETAS",
                                                     "THETAI", "THETAR", "OLKJDF", "OVARF", "SLKJDF", "SVARF", "TTDF",
                                                     "DESIGN", "ANNEAL", "CONTR", "BIND", "FORMAT", "THETAP", "THETAPV",
                                                     "OMEGAP", "OMEGAPD", "SIGMAP", "SIGMAPD", "RCOV", "RCOVI",
                                                     "SUPER", "WARNINGS", "CHAIN")
                     if s.startswith(name) and len(name) >= 3), name)
        seen.setdefault(full, k)
        if full not in SUPPORTED_RECORDS:
            raise _refuse(full, k, "this record is not supported by vtrial import-nonmem (supported: "
                                   f"{', '.join('$' + s for s in SUPPORTED_RECORDS)})")
        if full in ("SUBROUTINES", "SUBROUTINE"):
            advan = re.search(r"\bADVAN(\d+)\b", raw, re.I)
            if advan and f"ADVAN{advan.group(1)}" not in LINEAR_ADVANS + DES_ADVANS:
                raise _refuse("SUBROUTINES", k, f"ADVAN{advan.group(1)} is not supported (supported: "
                                                f"{', '.join(LINEAR_ADVANS + DES_ADVANS)} with $DES)")
    predpp = [(line, name) for name, line in seen.items() if name in PREDPP_RECORDS]
    if "PRED" in seen and predpp:
        line, name = min(predpp)
        raise _refuse(name, line, f"a $PRED model (line {seen['PRED']}) has no PREDPP records ($SUBROUTINES, $MODEL, "
                                  "$PK, $DES, $ERROR): use $PRED alone, or $PK and $ERROR with an ADVAN")


def _pred_statements(sts, lines: list[tuple[int, str]]) -> tuple[list[Code], list[Code]]:
    """$PRED's statements as (individual parameters, observation): those that read TIME,
    an EPS or Y's chain through them, and Y itself, are the observation (evaluated at each
    record's time); the rest are per subject (or per covariate interval), as $PK's."""
    per_record = {sympy.Symbol("TIME")}
    pk, error = [], []
    index = 0
    for st in sts:
        name, expr = str(st.symbol), sympy.sympify(st.expression)
        index, (line, c) = _assign_line(lines, name, index)
        code = Code(name, expr, line, c.strip())
        reads_eps = any(s.name.startswith(("EPS", "ERR")) for s in expr.free_symbols)
        if name == "Y" or reads_eps or expr.free_symbols & per_record:
            per_record.add(sympy.Symbol(name))
            error.append(code)
        else:
            pk.append(code)
    return pk, error


def _check_pred_time(model, line_of: dict, reads_time: bool) -> None:
    """A $PRED reading TIME needs TIME >= 0: vtrial's clock starts at 0 (the solve's start)."""
    dataset = model.dataset
    if not reads_time or dataset is None or "TIME" not in dataset:
        return
    low = float(dataset["TIME"].min())
    if low < 0:
        raise _refuse("DATA", line_of["DATA"], f"TIME {low:g} < 0: a $PRED model reading TIME needs times >= 0 (its "
                                               "TIME is a clock from 0); shift the times")


def _block_line(omega_records, names: list[str], all_etas: list[str]) -> int:
    """The line of the $OMEGA record holding the first of `names` (records in order, each
    holding as many etas as its size)."""
    k = all_etas.index(names[0])
    count = 0
    for r, line in omega_records:
        m = re.search(r"BLOCK\s*\(\s*(\d+)\s*\)", str(r), re.I)
        size = int(m.group(1)) if m else len(re.findall(r"[-+]?\d*\.?\d+(?:[EeDd][-+]?\d+)?", re.sub(r";.*", "", str(r).split("$OMEGA", 1)[-1])))
        if count <= k < count + max(size, 1):
            return line
        count += max(size, 1)
    return omega_records[0][1] if omega_records else 0


def _compartments(model, ode, advan: str, trans: str, line_of: dict):
    """(compartment names in NONMEM's numbering, dA/dt of each without dose input, the
    default dose compartment, the linear-PK declaration or None)."""
    if ode is None:
        raise _refuse("SUBROUTINES", line_of["SUBROUTINES"], "no compartments found")
    names = list(ode.compartment_names)
    if advan in LINEAR_ADVANS:
        order = ["DEPOT", "CENTRAL"] + sorted(n for n in names if n.startswith("PERIPHERAL"))
        names = [n for n in order if n in names] + [n for n in names if n not in order]
    derivatives = {}
    for eq in ode.eqs:
        lhs, rhs = sympy.sympify(eq.lhs), sympy.sympify(eq.rhs)
        fn = lhs.args[0]
        name = next(n for n in names if sympy.sympify(ode.find_compartment(n).amount) == fn)
        derivatives[name] = rhs
    dosing = [c.name for c in ode.dosing_compartments]
    dose_compartment = dosing[0] if dosing else names[0]
    linear = None
    if advan in LINEAR_ADVANS:
        central = ode.central_compartment
        depot = ode.find_depot(model.statements)
        peripherals = ode.find_peripheral_compartments()
        if len(peripherals) > 2:
            raise _refuse("SUBROUTINES", line_of["SUBROUTINES"], "more than two peripheral compartments")
        outflows = dict((getattr(c, "name", "OUTPUT"), sympy.sympify(r)) for c, r in ode.get_compartment_outflows(central))
        k10 = outflows.get("OUTPUT", sympy.Integer(0))
        linear = {
            "depots": [depot.name] if depot is not None else [],
            "central": central.name,
            "peripherals": [p.name for p in peripherals],
            "ka": [sympy.sympify(ode.get_flow(depot, central))] if depot is not None else [],
            "k10": k10,
            "k_to": [outflows[p.name] for p in peripherals],
            "k_from": [sympy.sympify(ode.get_flow(p, central)) for p in peripherals],
        }
    return names, derivatives, dose_compartment, linear
