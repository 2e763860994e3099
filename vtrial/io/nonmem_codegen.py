"""A read control stream (`vtrial.io.nonmem_control.ControlStream`) written as a vtrial
model file and a fit config.

The model file uses the public model API (`vtrial.models`): `individual` is $PK, the
vector field is $DES (or, for ADVAN1-4/11/12, the compartments' linear ODEs, with a
`LinearPK` declaration so the closed form is used), the observable is $ERROR's Y at
EPS = 0. Expressions are printed by sympy's own JAX printer (`JaxPrinter`), IF/THEN/ELSE
as `jnp.where`; every statement carries its control-stream line as a comment.

How NONMEM's statistical model maps onto vtrial's: each THETA not in the residual error
is a model parameter (its $THETA bounds are `[bounds]`, FIX goes to `fixed`); each ETA is
a model parameter with typical value 0, fixed, and an additive random effect whose
variance is OMEGA's (`[variability.kind] = "additive"`), so $PK uses ETA(k) exactly as
written; the residual error is `[residual.y]` (`vtrial.io.nonmem_residual`).
"""

from __future__ import annotations

import keyword
import math
import os
import re
from pathlib import Path

import sympy
from sympy.printing.numpy import JaxPrinter

from vtrial.io.nonmem_control import PRED, ControlStream

#: Names the generated functions use themselves.
_RESERVED = {"p", "y", "t", "rate", "jnp", "math", "out"}
#: NONMEM's data items with a meaning of their own (never covariates).
DATA_ITEMS = {"ID", "TIME", "AMT", "RATE", "EVID", "MDV", "CMT", "DVID", "DV", "II", "ADDL", "SS"}
#: The one observable an imported model declares (NONMEM's Y at EPS = 0).
OBSERVABLE = "y"


class Names:
    """NONMEM names -> Python identifiers, unique within one model file."""

    def __init__(self):
        self.of: dict[str, str] = {}
        self.taken: set[str] = set(_RESERVED)

    def add(self, name: str, prefix: str = "") -> str:
        if name in self.of:
            return self.of[name]
        base = prefix + re.sub(r"[^a-z0-9_]", "_", name.lower()).strip("_")
        base = re.sub(r"_+", "_", base) or "x"
        if base[0].isdigit() or keyword.iskeyword(base):
            base = "v_" + base
        ident, k = base, 2
        while ident in self.taken:
            ident, k = f"{base}_{k}", k + 1
        self.of[name] = ident
        self.taken.add(ident)
        return ident


class _Printer(JaxPrinter):
    """sympy's JAX printer, with readable comparisons and IF/ELSE as nested `jnp.where`."""

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        return f"({self._print(expr.lhs)} {op} {self._print(expr.rhs)})"

    def _print_Piecewise(self, expr):
        *pieces, (last, cond) = expr.args
        out = self._print(last) if cond == sympy.true else f"jnp.where({self._print(cond)}, {self._print(last)}, jnp.nan)"
        for value, c in reversed(pieces):
            out = f"jnp.where({self._print(c)}, {self._print(value)}, {out})"
        return out


def _print(expr: sympy.Expr, names: Names, amounts: dict) -> str:
    subs = {fn: sympy.Symbol(names.of[str(c)]) for c, fn in amounts.items()}
    subs.update({s: sympy.Symbol(names.of[s.name]) for s in expr.free_symbols if s.name in names.of})
    text = _Printer().doprint(expr.xreplace(subs))
    return text.replace("jax.numpy.", "jnp.").replace("numpy.", "jnp.")


def _unpack(symbols: set[str], names: Names, order: list[str]) -> list[str]:
    """`x = p["x"]` lines for the model inputs among `symbols`, in `order`."""
    return [f'    {names.of[s]} = p["{names.of[s]}"]' for s in order if s in symbols]


def _free(exprs) -> set[str]:
    out: set[str] = set()
    for e in exprs:
        out |= {s.name for s in e.free_symbols}
    return out


def _code_line(c, names: Names, amounts: dict, zero: dict | None = None) -> str:
    expr = c.expr.subs(zero) if zero else c.expr
    where = f"line {c.line}: {c.text}" if c.line else c.text
    return f"    {names.of[c.name]} = {_print(expr, names, amounts)}  # {where}"


def model_file(cs: ControlStream, factory: str) -> tuple[str, Names]:
    """The model file's text (its factory named `factory`) and the names it uses."""
    names = Names()
    pred = cs.advan == PRED
    if pred:
        names.add("TIME")  # the clock state: `time`
    code_names = [c.name for c in cs.pk + cs.des + cs.error]
    for n in code_names:
        names.add(n)
    for c in cs.compartments:
        names.add(c, "a_")
    theta_names = [t.name for t in cs.thetas if t.name not in cs.residual.thetas]
    for t in theta_names:
        names.add(t)
    for e in cs.etas:
        names.add(e)
    for c in cs.covariates:
        names.add(c)
    inputs = theta_names + cs.etas + list(cs.covariates)
    amounts = cs.amounts
    thetas = {t.name: t for t in cs.thetas}
    pk_names = list(dict.fromkeys(names.of[c.name] for c in cs.pk))
    structure = ("$PRED: no compartments; the one state is TIME (dTIME/dt = 1 from 0), which the observation reads."
                 if pred else f"{cs.advan} {cs.trans}; compartments "
                              f"{', '.join(f'{k + 1} {c}' for k, c in enumerate(cs.compartments))}.")
    lines = [f'"""{cs.problem or cs.path.stem}: imported from {cs.path.name} by `vtrial import-nonmem`.', "", structure,
             "THETAs are parameters; each ETA is a parameter with typical value 0 and an additive random effect",
             f"(the fit config fixes the typical value and gives OMEGA), so {'$PRED' if pred else '$PK'} reads ETA(k) as "
             "written.", '"""', "",
             "from __future__ import annotations", "", "import math", "", "import jax.numpy as jnp", "",
             "from vtrial.models.base import Covariate, Model, Observable, Parameter, Route, State"]
    if cs.linear:
        lines.append("from vtrial.models.linear_pk import LinearPK, MammillaryConstants")
    first = cs.pk[0].line if cs.pk else 0
    lines += ["", "", "def individual(p):", f'    """$PRED\'s statements per subject (line {first})."""' if pred
              else f'    """$PK (line {first})."""']
    lines += _unpack(_free(c.expr for c in cs.pk), names, inputs)
    lines += [_code_line(c, names, amounts) for c in cs.pk]
    lines += ["    return {" + ", ".join(f'"{n}": {n}' for n in pk_names) + "}"]

    state_of = {c: k for k, c in enumerate(cs.compartments)}
    des_inputs = inputs + [c.name for c in cs.pk]
    lines += ["", "", "def vector_field(t, y, p, rate):",
              '    """$PRED\'s clock: dTIME/dt = 1 (no doses)."""' if pred else
              f'    """{"$DES (line " + str(cs.des[0].line) + ")" if cs.des else "The compartments of " + cs.advan}: dA/dt."""']
    lines += [f"    {', '.join(names.of[c] for c in cs.compartments)}{',' if len(cs.compartments) == 1 else ''} = y"]
    lines += _unpack(_free([c.expr for c in cs.des] + list(cs.derivatives.values())), names, des_inputs)
    lines += [_code_line(c, names, amounts) for c in cs.des]
    lines += ["    return jnp.stack(["]
    lines += [f"        {_print(cs.derivatives.get(c, sympy.Integer(0)), names, amounts)} + rate[{state_of[c]}],  # dA({state_of[c] + 1})/dt"
              for c in cs.compartments]
    lines += ["    ])"]

    # $ERROR: only what Y needs, with every EPS = 0
    eps_zero = {sympy.Symbol(e): 0 for e in _eps_names(cs)}
    needed, wanted = [], {"Y"}
    for c in reversed(cs.error):
        if c.name in wanted:
            needed.append(c)
            wanted |= {s.name for s in c.expr.subs(eps_zero).free_symbols}
    needed.reverse()
    err_inputs = inputs + [c.name for c in cs.pk]
    record = "$PRED" if pred else "$ERROR"
    lines += ["", "", "def observe(y, p):", f'    """{record} (line {min([c.line for c in cs.error if c.line] or [0])}): Y with every EPS = 0."""']
    lines += [f"    {', '.join(names.of[c] for c in cs.compartments)}{',' if len(cs.compartments) == 1 else ''} = y"]
    lines += _unpack(_free(c.expr.subs(eps_zero) for c in needed) - {c.name for c in needed}, names, err_inputs)
    lines += [_code_line(c, names, amounts, eps_zero) for c in needed]
    lines += [f"    return {names.of['Y']}"]

    if cs.linear:
        lin = cs.linear
        cl, v1 = sympy.fraction(sympy.together(lin["k10"]))
        qs = [sympy.simplify(k * v1) for k in lin["k_to"]]
        vs = [sympy.simplify(q / k) for q, k in zip(qs, lin["k_from"])]
        exprs = list(lin["ka"]) + [cl, v1] + qs + vs
        lines += ["", "", "def constants(p):", f'    """The rate constants of {cs.advan} {cs.trans} (the closed form\'s)."""']
        lines += _unpack(_free(exprs), names, des_inputs)
        stack = lambda xs: f"jnp.stack([{', '.join(_print(x, names, amounts) for x in xs)}])" if xs else "jnp.zeros(0)"  # noqa: E731
        # A rate-constant TRANS (ADVAN2 TRANS1: K) has CL = K and V1 = 1: numbers, made arrays.
        scalar = lambda x: f"jnp.asarray({_print(x, names, amounts)}, dtype=float)" if x.is_number else _print(x, names, amounts)  # noqa: E731
        lines += [f"    return MammillaryConstants({stack(lin['ka'])}, {scalar(cl)}, {scalar(v1)}, "
                  f"{stack(qs)}, {stack(vs)})"]

    lines += ["", "", f"def {factory}() -> Model:", f'    """{cs.path.name} as a vtrial model."""', "    return Model(",
              f"        name={cs.path.stem!r},", f"        description={('imported from ' + cs.path.name + ': ' + cs.problem)!r},",
              ("        states=(State(\"time\", \"h\", description=\"TIME of $PRED (a clock: dTIME/dt = 1 from 0)\"),)," if pred else
               "        states=(" + " ".join(f"State({names.of[c]!r}, \"mg\", description=\"compartment {k + 1} ({c})\")," for k, c in enumerate(cs.compartments)) + "),"),
              "        parameters=("]
    for t in theta_names:
        th = thetas[t]
        lo, hi = _bound(th.lower), _bound(th.upper)
        lines.append(f"            Parameter({names.of[t]!r}, {th.init!r}, \"-\", {lo}, {hi}, \"THETA {t} ($THETA line {th.line})\"),")
    for k, e in enumerate(cs.etas):
        lines.append(f"            Parameter({names.of[e]!r}, 0.0, \"-\", -math.inf, math.inf, \"random effect {e} (ETA({k + 1}))\"),")
    lines.append("        ),")
    if cs.covariates:
        lines.append("        covariates=(" + " ".join(
            f"Covariate({names.of[c]!r}, \"-\", {v!r}, \"data item {c} (reference: its median)\", positive=False)," for c, v in cs.covariates.items()) + "),")
    lines += ["        individual=individual,", "        vector_field=vector_field,",
              f"        observables=(Observable({OBSERVABLE!r}, observe, \"Y of {record} at EPS = 0 (IPRED)\"),),",
              "        routes=(" + " ".join(_route(cs, c, names) for c in route_compartments(cs)) + "),"]
    if cs.linear:
        lin = cs.linear
        tup = lambda xs: "(" + "".join(f"{names.of[x]!r}, " for x in xs) + ")"  # noqa: E731
        lines.append(f"        linear_pk=LinearPK({tup(lin['depots'])}, {names.of[lin['central']]!r}, {tup(lin['peripherals'])}, constants),")
    lines += ["        report_time_unit=\"h\",", "    )", ""]
    return "\n".join(lines), names


def _eps_names(cs: ControlStream) -> list[str]:
    names = set()
    for c in cs.error:
        names |= {s.name for s in c.expr.free_symbols if re.match(r"^(EPS|ERR)", s.name) or s.name.startswith("EPS")}
    return sorted(names | set(getattr(cs, "eps", [])))


def route_compartments(cs: ControlStream) -> list[str]:
    """The compartments doses may go into: the default dose compartment first (the only
    one when the dataset has no CMT); none for a $PRED model."""
    if cs.advan == PRED:
        return []
    dropped = {c.upper() for c in cs.data["drop"]}
    if "CMT" not in [c.upper() for c in cs.data["columns"] if c.upper() not in dropped]:  # CMT=DROP: no CMT
        return [cs.dose_compartment]
    return [cs.dose_compartment] + [c for c in cs.compartments if c != cs.dose_compartment]


def _route(cs: ControlStream, comp: str, names: Names) -> str:
    k = cs.compartments.index(comp) + 1
    defined = {c.name.upper(): c.name for c in cs.pk}
    extra = ""
    for key, nm in (("bioavailability", f"F{k}"), ("lag", f"ALAG{k}"), ("rate", f"R{k}"), ("duration", f"D{k}")):
        if nm in defined:
            extra += f", {key}={names.of[defined[nm]]!r}"
    return f"Route({names.of[comp]!r}, {names.of[comp]!r}{extra}),"


def _bound(x: float) -> str:
    return "math.inf" if x == math.inf else "-math.inf" if x == -math.inf else repr(float(x))


def _toml(x) -> str:
    if isinstance(x, str):
        return '"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float):
        return "inf" if x == math.inf else "-inf" if x == -math.inf else repr(x)
    if isinstance(x, list | tuple):
        return "[" + ", ".join(_toml(v) for v in x) + "]"
    return str(x)


def fit_config(cs: ControlStream, names: Names, model_ref: str, out_dir: Path) -> str:
    """The fit config's text (`model_ref`: the model file reference; `out_dir`: where the
    config goes, which the data file's path is made relative to)."""
    fix = {t.name: t.fix for t in cs.thetas}
    theta_rows = [t for t in cs.thetas if t.name not in cs.residual.thetas]
    fixed = [names.of[t.name] for t in theta_rows if t.fix] + [names.of[e] for e in cs.etas]
    # $OMEGA 0 FIX switches an ETA off: its parameter stays at 0 with no random effect.
    off = {etas[0] for etas, m, f, _ in cs.omega_blocks if len(etas) == 1 and f and m[0][0] == 0}
    fixed += [f"omega2_{names.of[e]}" for etas, _, f, _ in cs.omega_blocks if f for e in etas if e not in off]
    occasions = cs.occasions.carriers if cs.occasions else {}
    fixed += [f"iov_omega2_{names.of[e]}" for e, (_, _, f, _) in occasions.items() if f]
    from_pharmpy = _residual_values(cs)
    add, prop = cs.residual.sds(from_pharmpy)
    fixes = {**fix, **_sigma_fix(cs)}
    if add > 0 and cs.residual.fixed("additive", fixes):
        fixed.append(f"{OBSERVABLE}.additive")
    if prop > 0 and cs.residual.fixed("proportional", fixes):
        fixed.append(f"{OBSERVABLE}.proportional")
    rel = os.path.relpath(Path(cs.data["file"]).resolve(), out_dir.resolve())
    lines = [f"# {cs.path.name} imported by vtrial import-nonmem: {cs.problem}",
             f"#   vtrial fit {out_dir.name}/{cs.path.stem}_fit.toml   (reads [data.source].file)",
             'kind = "fit"', f"name = {_toml(cs.path.stem)}", f"description = {_toml('imported from ' + cs.path.name + ': ' + cs.problem)}",
             *[f"# note: {n}" for n in cs.notes],
             f"model = {_toml(model_ref)}",
             f"fixed = {_toml(fixed)}  # THETA FIX, each ETA's typical value (0), OMEGA FIX, SIGMA FIX", "",
             "[parameters]  # $THETA (and each ETA's typical value, 0)"]
    lines += [f"{names.of[t.name]} = {t.init!r}  # {t.name}, $THETA line {t.line}{' FIX' if t.fix else ''}" for t in theta_rows]
    lines += [f"{names.of[e]} = 0.0  # {e}" for e in cs.etas]
    bounded = [t for t in theta_rows if not (t.lower == -math.inf and t.upper == math.inf)]
    if bounded:
        lines += ["", "[bounds]  # $THETA (low, init, up): the scale each is estimated on"]
        lines += [f"{names.of[t.name]} = [{_toml(t.lower)}, {_toml(t.upper)}]" for t in bounded]
    lines += ["", "[variability.omega]  # $OMEGA: variances of the ETAs"]
    for etas, matrix, f, line in cs.omega_blocks:
        if len(etas) == 1 and etas[0] in off:
            lines.append(f"# {names.of[etas[0]]}: $OMEGA line {line} is 0 FIX, no random effect")
        elif len(etas) == 1:
            lines.append(f"{names.of[etas[0]]} = {matrix[0][0]!r}  # $OMEGA line {line}{' FIX' if f else ''}")
    if occasions:
        lines += ["", f"[variability.occasions]  # $OMEGA BLOCK(1) ... SAME: one effect per value of "
                      f"{cs.occasions.column}, added to the ETA it adds to in $PK"]
        lines += [f"{names.of[e]} = {v!r}  # {name}, $OMEGA line {line}{' FIX' if f else ''}"
                  for e, (name, v, f, line) in occasions.items()]
    lines += ["", "[variability.kind]  # ETA(k) enters $PK as written: an additive effect on a parameter fixed at 0"]
    lines += [f'{names.of[e]} = "additive"' for e in cs.etas if e not in off]
    for etas, matrix, f, line in cs.omega_blocks:
        if len(etas) > 1:
            lines += ["", f"[[variability.block]]  # $OMEGA BLOCK({len(etas)}) line {line}{' FIX' if f else ''}",
                      f"parameters = {_toml([names.of[e] for e in etas])}", f"covariance = {_toml(matrix)}"]
    lines += ["", f"[residual.{OBSERVABLE}]  # $ERROR's Y: variance a^2 + (b F)^2 with a^2 = {cs.residual.additive2}, "
                  f"b^2 = {cs.residual.proportional2}"]
    lines += [f"additive = {add!r}", f"proportional = {prop!r}"]
    lines += ["", "[data]  # NONMEM has no units: amounts and DV as in the dataset, time as the dataset's",
              'amt_unit = "mg"', 'time_unit = "h"']
    if cs.occasions:
        lines.append(f"occasion = {_toml(cs.occasions.column)}  # the data item selecting the occasion ETAs")
    if route_compartments(cs):
        lines += ["", "[data.routes]  # compartment numbers (CMT) of doses"]
        lines += [f"{names.of[c]} = [{cs.compartments.index(c) + 1}]" for c in route_compartments(cs)]
    if cs.covariates:
        lines += ["", "[data.covariates]  # data items read by $PK/$DES/$ERROR"]
        lines += [f"{names.of[c]} = {_toml(c)}" for c in cs.covariates]
    src = cs.data
    lines += ["", "[data.source]  # $INPUT and $DATA", f"file = {_toml(rel)}", f"columns = {_toml(src['columns'])}",
              f"drop = {_toml(src['drop'])}", f"ignore_lines = {_toml(src['ignore_lines'])}",
              f"ignore = {_toml(src['ignore'])}", f"accept = {_toml(src['accept'])}"]
    lines += ["", "[estimation]  # $ESTIMATION and $COVARIANCE", f"method = {_toml(cs.method)}"]
    if cs.max_iterations:
        lines.append(f"max_iterations = {min(max(cs.max_iterations, 1), 100_000)}  # MAXEVAL (vtrial counts outer iterations)")
    lines += [f"covariance = {_toml(cs.covariance)}"]
    if cs.des:
        lines += ["", "# $DES: integrated with vtrial's [solver] defaults (tsit5, rtol 1e-8, atol 1e-10), tighter than "
                      "NONMEM's TOL; set [solver] to change them"]
    lines += ["", "[vpc]", "replicates = 0", ""]
    return "\n".join(lines)


def _residual_values(cs: ControlStream) -> dict[str, float]:
    values = {t.name: t.init for t in cs.thetas}
    values.update(cs.sigma_inits)
    return values


def _sigma_fix(cs: ControlStream) -> dict[str, bool]:
    return dict(cs.sigma_fix)
