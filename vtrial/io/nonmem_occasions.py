"""Occasions of NONMEM's: the occasion column of a dataset (`OCC`, or the column `[data]
occasion` names: each row's occasion, for inter-occasion variability,
`vtrial.estimation.occasions`), and a control stream's IOV coding (`$OMEGA BLOCK(1)
SAME`, ETAs selected by IF (OCC.EQ.k)) mapped onto `[variability.occasions]`
(`occasion_effects`, for `vtrial import-nonmem`)."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class ControlStreamOccasions:
    """Inter-occasion variability of a control stream in NONMEM's usual coding, as
    vtrial's (`occasion_effects`): `column` selects the occasion; `carriers`: the ETA each
    group of occasion ETAs adds to -> (the group's OMEGA name, initial variance, FIX,
    $OMEGA line); `occasion_etas`: the ETAs per occasion, which vtrial's kappas replace."""

    column: str
    carriers: dict[str, tuple[str, float, bool, int]]
    occasion_etas: list[str]


def occasion_effects(model, statements, data_columns: list[str], omega_line, refuse) -> ControlStreamOccasions | None:
    """NONMEM's usual IOV coding mapped onto vtrial's `[variability.occasions]`, or None
    when no $OMEGA is SAME. `model`: pharmpy's; `statements`: its statements in order
    ($PK, $DES, $ERROR; `.symbol`, `.expression`); `omega_line(eta)`: the $OMEGA line of an
    ETA; `refuse(line, why)`: the `SpecError` to raise.

    Exact when: each occasion group is `$OMEGA BLOCK(1) v` then `BLOCK(1) SAME` (one
    variance); one data item selects, through IF(COL.EQ.k) flags, one ETA of each group
    per value k the dataset has (distinct ETAs for distinct values); and every statement
    reads that ETA only as an addition to one between-subject ETA (`CL =
    THETA(1)*EXP(ETA(1) + KPCL)`): then the occasion's ETA is vtrial's kappa on that ETA's
    parameter (additive), and the statements read it with the occasion ETAs at 0."""
    import sympy  # the nonmem extra's (pharmpy's): not needed to read datasets

    groups: dict[str, list[str]] = {}
    blocks: set[str] = set()
    for dist in model.random_variables.etas:
        names = list(dist.names)
        key = str(dist.variance)
        if len(names) > 1:
            if key in blocks:  # named at the SAME record
                raise refuse(omega_line(names[0]), "BLOCK(n) SAME with n > 1 (correlated occasion effects) is not "
                                                   "converted: vtrial's occasions have one variance per parameter")
            blocks.add(key)
            continue
        groups.setdefault(key, []).append(names[0])
    groups = {k: v for k, v in groups.items() if len(v) > 1}
    if not groups:
        return None
    occasion = {sympy.Symbol(e) for g in groups.values() for e in g}
    env: dict = {}
    values = []
    for st in statements:
        value = sympy.sympify(st.expression).subs(env)
        env[sympy.Symbol(str(st.symbol))] = value
        values.append((str(st.symbol), value))
    reading = [(n, v) for n, v in values if v.free_symbols & occasion]
    columns = set()
    for _, v in reading:
        for pw in v.atoms(sympy.Piecewise):
            for _, cond in pw.args:
                columns |= {s.name for s in cond.free_symbols if s.name in data_columns}
    first = omega_line(sorted(occasion, key=str)[0].name)
    if len(columns) != 1:
        raise refuse(first, "$OMEGA SAME (inter-occasion variability) needs the occasion ETAs selected by one data item "
                            f"(IF (OCC.EQ.1) ...); found {', '.join(sorted(columns)) or 'none'}")
    column = columns.pop()
    col = sympy.Symbol(column)
    dataset = model.dataset
    if dataset is None or column not in dataset:
        raise refuse(first, f"the occasion item {column} is not in the dataset")
    levels = sorted(float(x) for x in dataset[column].dropna().unique())
    kappa = {g: sympy.Symbol(f"__KAPPA_{k}__") for k, g in enumerate(groups)}
    templates: dict[str, sympy.Expr] = {}
    for name, v in reading:
        template = None
        for level in levels:
            at = v.subs(col, level)
            subs = {}
            for g, etas in groups.items():
                present = [e for e in etas if at.has(sympy.Symbol(e))]
                if len(present) > 1:
                    raise refuse(first, f"{name} reads two ETAs of one occasion group at {column} = {level:g}")
                if present:
                    subs[sympy.Symbol(present[0])] = kappa[g]
            t = at.subs(subs)
            if template is None:
                template = t
            elif sympy.simplify(t - template) != 0:
                raise refuse(first, f"{name} is not the same statement in every occasion (at {column} = {level:g} it "
                                    f"reads no occasion ETA, or another one); vtrial's occasions give every value of "
                                    f"{column} in the dataset its own effect")
        templates[name] = template
    for g, etas in groups.items():
        seen: dict[str, float] = {}
        for level in levels:
            for name, v in reading:
                at = v.subs(col, level)
                for e in etas:
                    if at.has(sympy.Symbol(e)):
                        if seen.setdefault(e, level) != level:
                            raise refuse(omega_line(e), f"{e} is the occasion effect of two values of {column} "
                                                        f"({seen[e]:g} and {level:g}); vtrial's occasions are one per value")
    carriers: dict[str, tuple[str, float, bool, int]] = {}
    params = model.parameters
    all_values = dict(values)
    between_subject = {sympy.Symbol(e) for e in model.random_variables.etas.names} - occasion
    read_by_statements = {s.name for st in statements for s in sympy.sympify(st.expression).free_symbols}
    for g, etas in groups.items():
        k = kappa[g]
        candidates = sorted({s.name for t in templates.values() if t.has(k) for s in t.free_symbols}
                            & set(model.random_variables.etas.names) - {e for gg in groups.values() for e in gg})
        carrier = None
        for e in candidates:
            es = sympy.Symbol(e)
            exact = True
            for name, v in all_values.items():
                t = templates.get(name, v)
                if name in read_by_statements and not (t.free_symbols & between_subject):
                    continue  # the occasion effect itself (KPCL = VIS3*ETA(4) + ...), read by the statements checked
                if (t.has(es) or t.has(k)) and sympy.simplify(t - t.subs(k, 0).subs(es, es + k)) != 0:
                    exact = False
                    break
            if exact:
                carrier = e
                break
        if carrier is None or carrier in carriers:
            raise refuse(omega_line(etas[0]), f"the occasion ETAs {', '.join(etas)} do not enter only as an addition to "
                                              "one between-subject ETA of their own (CL = THETA(1)*EXP(ETA(1) + IOV)); "
                                              "vtrial's occasion effects add to a parameter's random effect")
        carriers[carrier] = (g, float(params[g].init), bool(params[g].fix), omega_line(etas[0]))
    return ControlStreamOccasions(column, carriers, [e for g in groups.values() for e in g])
