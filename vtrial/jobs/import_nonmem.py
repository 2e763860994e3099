"""`vtrial import-nonmem RUN.ctl [--out DIR] [--check]`: a NONMEM control stream as a vtrial
model file and fit config, checked against NONMEM's own outputs.

`import_nonmem` reads the control stream (`vtrial.io.nonmem_control`), writes
`<stem>.py` (the model) and `<stem>_fit.toml` (the fit config; `vtrial fit` runs it with
no edit) into `out`, and loads them back as `vtrial fit` would. With `check=True`,
`check_import` evaluates the imported model at NONMEM's final estimates (the .ext file;
pharmpy reads it) with the EBEs re-optimised (MAXEVAL=0) and compares, over observation
rows, PRED and IPRED (and CWRES where tabled) with NONMEM's $TABLE file, the EBEs with
the .phi file, and the OFV with NONMEM's. It matches when PRED and IPRED (and CWRES where
tabled: vtrial's are NONMEM's definition, `vtrial.estimation.focei_diagnostics`) differ by
less than 1e-4 (median) and 1e-3 (95th percentile) relatively and |dOFV| < 0.01. Where
NONMEM's .cov sits beside it, the standard errors of vtrial's covariance step at NONMEM's
estimates are compared with NONMEM's (reported, not part of the match).
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from vtrial.errors import DataError, SpecError
from vtrial.io.config import validate
from vtrial.io.fit_config import BuiltFit, FitConfig
from vtrial.io.nonmem import read_nonmem
from vtrial.io.nonmem_codegen import fit_config, model_file
from vtrial.io.nonmem_control import ControlStream, read_control_stream

#: `--check` thresholds (the issue's): relative differences of PRED/IPRED/CWRES, and |dOFV|.
MEDIAN_TOLERANCE = 1e-4
P95_TOLERANCE = 1e-3
OFV_TOLERANCE = 0.01
#: NONMEM table columns of the individual prediction, in order of preference.
IPRED_COLUMNS = ("IPRED", "CIPREDI", "CIPRED", "IPRE")
LOG_2PI = math.log(2 * math.pi)


def import_nonmem(control_stream: str | Path, out: str | Path | None = None) -> tuple[ControlStream, Path, Path]:
    """Write the model file and fit config of `control_stream` into `out` (default
    `runs/<stem>-import`); returns (the read control stream, model file, config file).
    The config is loaded back (model built, mapping checked) before returning."""
    cs = read_control_stream(control_stream)
    out = Path(out) if out is not None else Path("runs") / f"{cs.path.stem}-import"
    out.mkdir(parents=True, exist_ok=True)
    model_path, config_path = out / f"{cs.path.stem}.py", out / f"{cs.path.stem}_fit.toml"
    text, names = model_file(cs, "model")
    config = fit_config(cs, names, f"{model_path.name}:model", out)
    for path, content in ((model_path, text), (config_path, config)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(content)
        tmp.replace(path)
    load_config(config_path)
    return cs, model_path, config_path


def load_config(path: Path, override: dict | None = None) -> BuiltFit:
    """The fit config at `path` lowered (`override`: TOML tables replaced, e.g. estimates)."""
    data = tomllib.loads(path.read_text())
    data.pop("kind", None)
    for k, v in (override or {}).items():
        data[k] = v
    return BuiltFit(validate(FitConfig, data, config_folder=path.parent))


def read_table(path: Path) -> pd.DataFrame:
    """A NONMEM table file (`TABLE NO.` lines, a header, blank-separated numbers)."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("TABLE NO.")]
    header = lines[0].split()
    rows = [ln.split() for ln in lines[1:] if ln.split() != header]
    return pd.DataFrame(np.asarray(rows, float), columns=header)


def _table_file(cs: ControlStream) -> Path | None:
    text = cs.path.read_text()
    m = re.search(r"\$TABLE[^$]*?\bFILE\s*=\s*(\S+)", text, re.I)
    if not m:
        return None
    path = cs.path.parent / m.group(1)
    return path if path.is_file() else None


def _relative(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    scale = np.maximum(np.abs(theirs), 1e-12)
    return np.where((ours == 0) & (theirs == 0), 0.0, np.abs(ours - theirs) / scale)


def check_import(cs: ControlStream, config_path: Path) -> dict:
    """Compare the imported model with NONMEM's outputs beside the control stream (see the
    module docstring); returns the facts, `matches` among them."""
    try:
        from pharmpy.tools import read_modelfit_results
    except ImportError:
        raise SpecError("--check", "needs pharmpy-core: pip install \"vtrial[nonmem]\"") from None
    try:
        results = read_modelfit_results(str(cs.path))
    except Exception as e:  # pharmpy raises many types for missing or odd output files
        raise DataError(f"{cs.path}: NONMEM's outputs cannot be read ({type(e).__name__}: {e})") from None
    if results is None or results.ofv is None or results.parameter_estimates is None:
        raise DataError(f"{cs.path}: --check needs NONMEM's outputs beside it (.ext with the final estimates, .phi, "
                        "the $TABLE file)")
    estimates = results.parameter_estimates.to_dict()
    final = replace(cs, thetas=[replace(t, init=float(estimates.get(t.name, t.init))) for t in cs.thetas],
                    sigma_inits={k: float(estimates.get(k, v)) for k, v in cs.sigma_inits.items()},
                    omega_blocks=[(etas, _omega_at(etas, m, cs, estimates), f, line) for etas, m, f, line in cs.omega_blocks])
    if cs.occasions:  # the occasions' variance ($OMEGA BLOCK(1) ... SAME) at NONMEM's estimate too
        carriers = {e: (name, float(estimates.get(name, v)), f, line) for e, (name, v, f, line) in cs.occasions.carriers.items()}
        final = replace(final, occasions=replace(cs.occasions, carriers=carriers))
    text, names = model_file(final, "model")
    data = tomllib.loads(fit_config(final, names, f"{config_path.stem.removesuffix('_fit')}.py:model", config_path.parent))
    data.pop("kind", None)
    built = BuiltFit(validate(FitConfig, data, config_folder=config_path.parent))
    population = read_nonmem(built.cfg.data_file(), built.model, built.cfg.data)
    from vtrial.estimation import fit_population

    # NONMEM's .cov (its $COVARIANCE step) beside the control stream: vtrial's covariance
    # step runs at NONMEM's estimates too (the matrix $COVARIANCE names; R^-1 S R^-1 without one).
    covariance = None
    if cs.path.with_suffix(".cov").is_file() and getattr(results, "standard_errors", None) is not None:
        covariance = cs.covariance if cs.covariance != "none" else "sandwich"
    fit = fit_population(built.model, population, built.estimation_spec(), method=built.method, solver=built.options,
                         max_iterations=0, covariance=covariance)
    frame = fit.predictions_frame()
    facts: dict = {"ofv": float(fit.ofv), "nonmem_ofv": float(results.ofv), "d_ofv": float(fit.ofv - results.ofv)}
    n_obs = len(frame)
    facts["ofv_with_constant"] = float(fit.ofv + n_obs * LOG_2PI)
    facts["nonmem_ofv_with_constant"] = float(results.ofv + n_obs * LOG_2PI)
    table_path = _table_file(cs)
    matches = abs(facts["d_ofv"]) < OFV_TOLERANCE
    worst: list[str] = []
    if table_path is None:
        facts["table"] = "no $TABLE FILE beside the control stream: PRED and IPRED not compared"
        matches = False
    else:
        table = read_table(table_path)
        facts["table"] = str(table_path)
        rows = frame["row"].to_numpy(int) - 1
        if rows.max(initial=-1) >= len(table):
            raise DataError(f"{table_path}: {len(table)} rows, but the dataset has observation row {rows.max() + 1}")
        ours_theirs = [("PRED", "PRED")]
        ipred = next((c for c in IPRED_COLUMNS if c in table.columns), None)
        if ipred:
            ours_theirs.append(("IPRED", ipred))
        if "CWRES" in table.columns:
            ours_theirs.append(("CWRES", "CWRES"))
        for ours, theirs in ours_theirs:
            if theirs not in table.columns:
                continue
            rel = _relative(frame[ours].to_numpy(float), table[theirs].to_numpy(float)[rows])
            facts[f"{ours.lower()}_median_relative_difference"] = float(np.median(rel))
            facts[f"{ours.lower()}_p95_relative_difference"] = float(np.percentile(rel, 95))
            if ours in ("PRED", "IPRED", "CWRES"):
                ok = np.median(rel) < MEDIAN_TOLERANCE and np.percentile(rel, 95) < P95_TOLERANCE
                matches &= bool(ok)
                if not ok:
                    for k in np.argsort(rel)[::-1][:5]:
                        worst.append(f"{ours} row {rows[k] + 1} (ID {frame['ID'][k]}, TIME {frame['TIME'][k]:g}): "
                                     f"{frame[ours][k]:.6g} vs NONMEM's {table[theirs].to_numpy(float)[rows[k]]:.6g}")
        if ipred is None:
            facts["ipred"] = "not tabled by NONMEM (IPRED/CIPREDI): not compared"
    if results.individual_estimates is not None:
        ours = fit.individual_frame()
        theirs = results.individual_estimates
        cols = [e for e in cs.etas if e in theirs.columns and f"eta_{names.of[e]}" in ours.columns]
        if cols:
            diff = np.abs(ours[[f"eta_{names.of[e]}" for e in cols]].to_numpy(float) - theirs[cols].to_numpy(float))
            facts["ebe_max_abs_difference"] = float(diff.max())
    if covariance is not None:
        facts.update(_compare_standard_errors(fit, results.standard_errors, final, names))
    facts["matches"] = bool(matches)
    facts["worst_rows"] = worst
    return facts


def _omega_at(etas: list[str], matrix, cs: ControlStream, estimates: dict) -> list[list[float]]:
    """An $OMEGA block's matrix at NONMEM's estimates (pharmpy names OMEGA(i,j) by the
    block's parameters, in the order of the etas)."""
    import sympy

    from pharmpy.modeling import read_model

    model = read_model(str(cs.path))
    for dist in model.random_variables.etas:
        if list(dist.names) == list(etas):
            var = sympy.Matrix(sympy.sympify(dist.variance)) if len(etas) > 1 else sympy.Matrix([[sympy.sympify(dist.variance)]])
            subs = {s: estimates.get(s.name, model.parameters[s.name].init) for s in var.free_symbols}
            return [[float(var[i, j].subs(subs)) for j in range(len(etas))] for i in range(len(etas))]
    return matrix


def _compare_standard_errors(fit, nonmem_se, cs: ControlStream, names) -> dict:
    """`se_relative_difference_<NONMEM name>`: |SE_vtrial - SE_NONMEM| / SE_NONMEM of each
    estimated parameter on NONMEM's scales (THETA, OMEGA (occasions' too) and SIGMA as variances: a
    residual SD b = sqrt(SIGMA) gives SE(SIGMA) = 2 b SE(b) by the delta method), and the
    largest. Reported, not part of "matches" (see the README)."""
    if fit.covariance is None:
        return {"standard_errors": f"vtrial's covariance step failed ({fit.covariance_step}): not compared"}
    table = fit.to_frame().set_index("name")
    ours: dict[str, float] = {}
    residual_thetas = set(cs.residual.thetas)
    for t in cs.thetas:
        if t.name not in residual_thetas and names.of[t.name] in table.index:
            ours[t.name] = float(table.at[names.of[t.name], "se"])
    import sympy

    from pharmpy.modeling import read_model

    for dist in read_model(str(cs.path)).random_variables.etas:
        etas = list(dist.names)
        var = sympy.Matrix(sympy.sympify(dist.variance)) if len(etas) > 1 else sympy.Matrix([[sympy.sympify(dist.variance)]])
        for i, a in enumerate(etas):
            for j, b in enumerate(etas[: i + 1]):
                rows = [f"omega2_{names.of[a]}"] if a == b else [f"omega_{names.of[b]}_{names.of[a]}",
                                                               f"omega_{names.of[a]}_{names.of[b]}"]
                row = next((r for r in rows if r in table.index), None)
                if row is not None and isinstance(var[i, j], sympy.Symbol) and not bool(table.at[row, "fixed"]):
                    ours[var[i, j].name] = float(table.at[row, "se"])

    for e, (name, _, fix, _) in (cs.occasions.carriers.items() if cs.occasions else ()):
        row = f"iov_omega2_{names.of[e]}"
        if row in table.index and not fix:
            ours[name] = float(table.at[row, "se"])
    for part, expr in (("additive", cs.residual.additive2), ("proportional", cs.residual.proportional2)):
        row = f"y.{part}"
        if row not in table.index or expr == 0:
            continue
        sd, se_sd = float(table.at[row, "estimate"]), float(table.at[row, "se"])
        if isinstance(expr, sympy.Symbol):  # a^2 = SIGMA
            ours[expr.name] = 2 * sd * se_sd
        elif isinstance(expr, sympy.Pow) and expr.exp == 2 and isinstance(expr.base, sympy.Symbol):  # a^2 = THETA^2
            ours[expr.base.name] = se_sd
    out: dict = {}
    for name, theirs in nonmem_se.items():
        if name in ours and math.isfinite(ours[name]) and theirs > 0:
            out[f"se_relative_difference_{name}"] = abs(ours[name] - float(theirs)) / float(theirs)
    if out:
        out["se_max_relative_difference"] = max(out.values())
    return out

