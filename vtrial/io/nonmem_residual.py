r"""$ERROR's residual error as vtrial's combined error model, found symbolically.

NONMEM writes the residual error as code: `Y = F + F*EPS(1)`, `Y = IPRED + W*EPS(1)` with
`W = SQRT(THETA(5)**2 + THETA(6)**2*IPRED**2)` and `$SIGMA 1 FIX`, `Y = F*(1 + EPS(1)) +
EPS(2)`, ... vtrial estimates one combined error per observable, variance $a^2 + (b f)^2$
(`vtrial.design.population.ResidualError`). `residual_model` substitutes $ERROR's
statements into Y, requires Y to be linear in the EPSs and the variance
$\sum_k c_k^2 \sigma_k$ to be a polynomial $a^2 + b^2 f^2$ in the prediction $f$ (Y at
EPS = 0) whose coefficients hold only THETAs and SIGMAs; anything else is refused,
naming $ERROR's line. The THETAs found there become the residual SDs (they must appear
nowhere else).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from vtrial.errors import SpecError
from vtrial.io.nonmem_options import refuse


@dataclass
class Residual:
    """`additive2`, `proportional2`: $a^2$ and $b^2$ as sympy expressions of THETAs and
    SIGMAs; `thetas`: the THETAs they hold; `symbols`: every parameter they hold."""

    additive2: sympy.Expr
    proportional2: sympy.Expr
    thetas: list[str]
    symbols: list[str]

    def sds(self, values: dict[str, float]) -> tuple[float, float]:
        """(a, b) at parameter values `values` (name -> value)."""
        subs = {sympy.Symbol(k): v for k, v in values.items() if k in self.symbols}
        return (float(sympy.sqrt(self.additive2.subs(subs))), float(sympy.sqrt(self.proportional2.subs(subs))))

    def fixed(self, part: str, fix: dict[str, bool]) -> bool:
        expr = self.additive2 if part == "additive" else self.proportional2
        return all(fix[s.name] for s in expr.free_symbols)


def _refuse(line: int, why: str, record: str = "ERROR") -> SpecError:
    return refuse(record, line, why)


def residual_model(error, eps: list[str], params, thetas: list[str], line: int, amounts: set,
                   eps_variance: dict[str, str] | None = None, record: str = "ERROR") -> tuple[Residual, sympy.Expr]:
    """(the residual model, the prediction f: Y with every EPS = 0, $ERROR substituted).

    `error`: $ERROR's statements (`Code`); `eps`: EPS names; `params`: name -> pharmpy
    parameter (init, fix); `thetas`: THETA names; `amounts`: the compartments' amount
    functions; `eps_variance`: EPS name -> its SIGMA's name; `record`: the record refusals
    name (ERROR, or PRED: `error` is then all of $PRED, and the prediction is the last
    variable Y's EPS-free part equals, e.g. IPRED)."""
    env = _substituted(error)
    y_sym = sympy.Symbol("Y")
    if y_sym not in env:
        raise _refuse(line, f"no Y = ... statement: ${record} must define Y", record)
    line = next((c.line for c in reversed(error) if c.name == "Y" and c.line), line)  # refusals name Y's line
    eps_syms = [sympy.Symbol(n) for n in eps]
    if not eps_syms:
        raise _refuse(line, "Y has no EPS: a residual error is needed to fit", record)
    y = _unguarded(env[y_sym])
    f0 = observed = y.subs({e: 0 for e in eps_syms})
    if not any(f0.has(a) for a in amounts):
        # No amounts ($PRED): the residual is found in terms of the variable holding the
        # prediction (left unsubstituted, e.g. IPRED), as $ERROR's in terms of an amount.
        for c in reversed(error):
            if c.name != "Y" and sympy.simplify(env[sympy.Symbol(c.name)] - observed) == 0:
                y = _unguarded(_substituted(error, keep=c.name)[y_sym])
                f0, amounts = y.subs({e: 0 for e in eps_syms}), {sympy.Symbol(c.name)}
                break
    coefficients = [sympy.diff(y, e) for e in eps_syms]
    rest = sympy.simplify(y - f0 - sum(c * e for c, e in zip(coefficients, eps_syms)))
    if rest != 0 or any(c.free_symbols & set(eps_syms) for c in coefficients):
        raise _refuse(line, "Y must be linear in the EPSs (Y = F + ...*EPS(1) + ...)", record)
    if y.has(sympy.Piecewise):
        piece = [c for c in error if c.expr.has(sympy.Piecewise)]
        raise SpecError(f"${record} (line {piece[0].line if piece else line})",
                        "IF/THEN in the residual error (e.g. per DVID) is not supported: one observation type per model")
    f = sympy.Symbol("__F__")
    fns = [a for a in amounts if f0.has(a)]
    if len(fns) == 1:
        a = fns[0]
        scale = sympy.simplify(f0 / a)
        to_f = {a: f / scale} if not scale.has(a) else None
    else:
        to_f = None
    allowed = set(thetas) | {n for n in params if n not in thetas}
    variance = sympy.Integer(0)
    sigma_of = eps_variance or {}
    for e, c in zip(eps, coefficients):
        c2 = sympy.expand(c**2)
        if c2.has(*amounts) or c2.free_symbols - {sympy.Symbol(n) for n in allowed}:
            if to_f is None:
                raise _refuse(line, f"the SD of {e} depends on the prediction in a way vtrial cannot map "
                                    "(supported: additive, proportional to F, and sqrt(a^2 + b^2 F^2) forms)", record)
            c2 = sympy.simplify(sympy.expand(c2.subs(to_f)))
        extra = {s.name for s in c2.free_symbols} - allowed - {f.name}
        if extra:
            raise _refuse(line, f"the SD of {e} depends on {', '.join(sorted(extra))}: only THETAs, SIGMAs and the "
                                "prediction may appear in the residual error (vtrial's is a^2 + b^2 F^2 with a, b "
                                "estimated: not data items, ETAs or other variables)", record)
        sigma = sympy.Symbol(sigma_of[e] if e in sigma_of else _sigma_name(params, e))
        variance += c2 * sigma
    try:
        poly = sympy.Poly(sympy.expand(variance), f)
    except sympy.PolynomialError:
        raise _refuse(line, "the residual variance is not of the form a^2 + b^2 F^2", record) from None
    coeffs = {m[0]: v for m, v in zip(poly.monoms(), poly.coeffs())}
    if set(coeffs) - {0, 2}:
        raise _refuse(line, "the residual variance is not of the form a^2 + b^2 F^2 (it has a term in F or of higher order)",
                      record)
    a2, b2 = sympy.simplify(coeffs.get(0, sympy.Integer(0))), sympy.simplify(coeffs.get(2, sympy.Integer(0)))
    symbols = sorted({s.name for s in (a2.free_symbols | b2.free_symbols)})
    used_thetas = [t for t in thetas if t in symbols]
    return Residual(a2, b2, used_thetas, symbols), observed


def _substituted(statements, keep: str | None = None) -> dict:
    """Each statement's variable -> its value with the earlier statements substituted
    (`keep`: a variable left as itself)."""
    env: dict = {}
    for c in statements:
        value = c.expr.subs(env)
        if c.name != keep:
            env[sympy.Symbol(c.name)] = value
    return env


def _unguarded(y: sympy.Expr) -> sympy.Expr:
    """Y without NONMEM's guards against a zero SD (IF (W.EQ.0) W = 1, IPREDADJ for IPRED
    = 0): they change nothing but the exact-zero point, so the residual model is the
    general branch."""
    return y.replace(lambda e: isinstance(e, sympy.Piecewise) and _zero_guard(e), lambda e: e.args[-1][0])


def _zero_guard(pw: sympy.Piecewise) -> bool:
    """Whether every condition but the last (`True`) is `x == 0` (a guard against zero)."""
    *pieces, (_, last) = pw.args
    return last == sympy.true and all(isinstance(c, sympy.Eq) and (c.rhs == 0 or c.lhs == 0) for _, c in pieces)


def _sigma_name(params, eps: str) -> str:
    raise SpecError("$SIGMA", f"no variance found for {eps}")
