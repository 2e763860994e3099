"""The tables of a population fit: parameters, individuals, predictions (pandas)."""

from __future__ import annotations

import math
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from vtrial.design.population import individual_parameters
from vtrial.estimation.censoring import censored_rows
from vtrial.estimation.occasions import iov_table_rows, occasion_individual_frame, occasion_values
from vtrial.estimation.population_spec import (
    RESIDUAL_KINDS,
    estimation_name,
    exponent_name,
    from_estimation_scale,
    omega_name,
    scale_label,
)


def parameter_table(model, spec, layout, names, values, cov, omega, u) -> pd.DataFrame:
    """One row per reported quantity, on its natural scale. `scale`: the scale its
    interval is symmetric on: a typical value's estimation scale (`scale_label`; the
    estimate and the interval's ends transformed back, the SE by the delta method), else
    `identity` (Wald: estimate +- 1.96 SE)."""
    se = np.sqrt(np.diag(cov)) if cov is not None else np.full(len(names), math.nan)
    by_name = dict(zip(names, zip(values, se)))
    rows = []
    z = 1.959963984540054
    bounds = dict(zip(layout.theta_names, layout.theta_bounds))
    for p in model.parameters:
        n = p.name
        if n in bounds:
            lo, hi = bounds[n]
            xv, s = by_name[estimation_name(n, lo, hi)]
            natural = lambda x: from_estimation_scale(x, lo, hi)  # noqa: E731
            with np.errstate(over="ignore", invalid="ignore"):  # an absurd estimate shows as inf, never raises
                est = float(natural(xv))
                d = abs(float(jax.grad(natural)(float(xv))))
                ends = sorted(float(natural(xv + k * z * s)) for k in (-1.0, 1.0)) if np.isfinite(s) else [math.nan, math.nan]
            rows.append((n, est, d * s, _ratio_pct(d * s, abs(est)), ends[0], ends[1], p.unit, False, scale_label(lo, hi, est)))
        else:
            est = float(u.typical[n])
            rows.append((n, est, math.nan, math.nan, math.nan, math.nan, p.unit, True, ""))
    for k, (par, covariate) in enumerate(layout.effects):
        key = exponent_name(par, covariate)
        if key in by_name:
            v, s = by_name[key]
            rows.append((key, v, s, _ratio_pct(s, abs(v)), v - z * s, v + z * s, "", False, "identity"))
        else:
            rows.append((key, float(u.effect_exponent[k]), math.nan, math.nan, math.nan, math.nan, "", True, ""))
    for i, n in enumerate(layout.iiv_names):
        fixed = f"omega2_{n}" not in by_name
        w, s = (float(omega[i, i]), math.nan) if fixed else by_name[f"omega2_{n}"]
        rows.append((f"omega2_{n}", w, s, _ratio_pct(s, w), w - z * s, w + z * s, "", fixed, "" if fixed else "identity"))
        if n in layout.additive:
            continue  # a normal random effect has no CV%: its SD is sqrt(omega2), in the parameter's unit
        rows.append((f"cv_pct_{n}", *cv_pct_row(w, s, z), "%", fixed, ""))
    for i, j in layout.block_pairs:
        key = omega_name(layout.iiv_names, i, j)
        fixed = key not in by_name
        v, s = (float(omega[i, j]), math.nan) if fixed else by_name[key]
        rows.append((key, v, s, _ratio_pct(s, abs(v)), v - z * s, v + z * s, "", fixed, "" if fixed else "identity"))
    rows += iov_table_rows(layout, by_name, u, z, cv_pct_row, _ratio_pct)
    for o, obs in enumerate(model.observables):
        if obs.name not in spec.residual:
            continue
        for c, kind in enumerate(RESIDUAL_KINDS):
            key = f"{obs.name}.{kind}"
            sd = float(u.residual_sd[o, c])
            if sd == 0:
                continue
            unit = "DV unit" if kind == "additive" else "fraction"
            if key in by_name:
                v, s = by_name[key]
                rows.append((key, v, s, _ratio_pct(s, v), v - z * s, v + z * s, unit, False, "identity"))
            else:
                rows.append((key, sd, math.nan, math.nan, math.nan, math.nan, unit, True, ""))
    return pd.DataFrame(rows, columns=["name", "estimate", "se", "rse_pct", "ci_low", "ci_high", "unit", "fixed", "scale"])


def _ratio_pct(se: float, estimate: float) -> float:
    """RSE% = 100 se / estimate; NaN for an estimate of 0 (never a ZeroDivisionError)."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return float(100 * np.float64(se) / np.float64(estimate)) if estimate else math.nan


def cv_pct_row(w: float, s: float, z: float) -> tuple[float, float, float, float, float]:
    """(CV%, its SE by the delta method, RSE%, CI low, CI high) of a log-normal random
    effect of variance `w` with SE `s`: CV% = 100 sqrt(exp(w) - 1). Computed in numpy so
    that extreme variances give inf or NaN in the table (never an OverflowError): a
    variance above ~709 has an infinite CV%, one of 0 an undefined SE."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        w, s = np.float64(w), np.float64(s)
        cv = 100 * np.sqrt(np.expm1(w))
        dcv = 100 * np.exp(w) / (2 * np.sqrt(np.expm1(w)))
        se = dcv * s
        lo, hi = (100 * np.sqrt(np.expm1(max(b, 0.0))) for b in (w - z * s, w + z * s))
        rse = 100 * se / cv
    return float(cv), float(se), float(rse), float(lo), float(hi)


@lru_cache(maxsize=16)
def _individual_parameters(model, layout):
    """`parameters(p, eta, (effect references, exponents), kappa=None)`: one subject's model
    and derived parameters; and it for every subject (no kappa) as one compiled program,
    the estimates its arguments, so that every fit of this model and layout reuses it
    (op by op, it would be a dozen small programs compiled one by one)."""

    def parameters(p, e, effects, kappa=None):
        reference, exponent = effects
        q = individual_parameters(p, layout.effects, reference, exponent, layout.iiv_names, e, layout.additive, layout.effect_shapes)
        if kappa is not None:  # the parameters in one occasion
            q.update(zip(layout.iov_names, occasion_values(layout._replace(n_occasions=1), q, kappa)[0]))
        return model.derive(q)

    return parameters, jax.jit(jax.vmap(parameters, in_axes=(0, 0, None)))


def individual_frame(model, data, spec, layout, constants, u, eta, ofv_i, eta_shrink) -> pd.DataFrame:
    out = {"ID": np.asarray(data.ids)}
    for i, n in enumerate(layout.iiv_names):
        out[f"eta_{n}"] = eta[:, i]
    base = dict(u.typical)
    n = data.n_subjects
    for c in model.covariates:
        base[c.name] = np.asarray(data.covariates.get(c.name, np.full(n, c.reference)), float)
    base = {k: np.broadcast_to(np.asarray(v, float), (n,)) for k, v in base.items()}
    effects = (np.asarray(constants.effect_reference), np.asarray(u.effect_exponent))
    parameters, every_subject = _individual_parameters(model, layout)
    eta = np.asarray(eta)
    indiv = every_subject(base, eta[:, : layout.n_iiv], effects)
    shown = [p for p in model.parameter_names if p in spec.typical or p in layout.iiv_names or p in layout.iov_names]
    for p in (*shown, *model.derived_names):  # the derived ones: NONMEM's $PK variables (CL, V)
        out[p] = np.asarray(indiv[p])
    for name in layout.iiv_names:
        out[f"shrinkage_pct_{name}"] = np.full(n, eta_shrink[name])
    out["ofv"] = ofv_i
    if not layout.n_kappa:
        return pd.DataFrame(out)

    def in_occasion(index, kappa):
        q = jax.vmap(parameters, in_axes=(0, 0, None, 0))({k: v[index] for k, v in base.items()}, jnp.asarray(eta[index, : layout.n_iiv]),
                                                          effects, jnp.asarray(kappa))
        return {p: np.asarray(q[p]) for p in (*shown, *model.derived_names)}

    return occasion_individual_frame(model, data, layout, pd.DataFrame(out), eta, in_occasion)


def predictions_frame(model, data, order, diag) -> tuple[pd.DataFrame, dict[str, float]]:
    take = lambda a: np.take_along_axis(np.asarray(a), order, axis=1)  # noqa: E731
    mask = take(data.obs_mask).astype(bool)
    obs = take(data.obs_observable)
    dv = take(np.asarray(data.dv, float))
    # The diagnostics' observation axis may be padded (`subject_arrays`): the dataset's width.
    pred, ipred, sd, cwres = (np.asarray(a)[:, : mask.shape[1]] for a in (diag.pred, diag.ipred, diag.ipred_sd, diag.cwres))
    # A censored row's DV is its limit: no residual (NaN), flagged by CENS (not dropped).
    cens = take(censored_rows(data))
    residual = np.where(cens == 0, 1.0, np.nan)
    ids = np.broadcast_to(np.asarray(data.ids)[:, None], mask.shape)
    frame = pd.DataFrame(
        {
            "ID": ids[mask],
            "TIME": take(data.obs_time_h)[mask],
            "observable": np.asarray(model.observable_names, dtype=object)[obs[mask]],
            "DV": dv[mask],
            "PRED": pred[mask],
            "IPRED": ipred[mask],
            "RES": (residual * (dv - pred))[mask],
            "IRES": (residual * (dv - ipred))[mask],
            "IWRES": (residual * (dv - ipred) / sd)[mask],
            "CWRES": (residual * cwres)[mask],
            "CENS": cens[mask],
            "row": take(data.obs_row)[mask],
        }
    )
    frame = frame.sort_values("row", kind="stable").reset_index(drop=True)
    shrink = {
        name: float(100.0 * (1.0 - np.std(frame.loc[(frame.observable == name) & (frame.CENS == 0), "IWRES"], ddof=1)))
        for name in frame.observable.unique()
    }
    return frame, shrink


def unfit_observation(frame: pd.DataFrame, bad_ids) -> str:
    """Why the objective is not finite at the initial values, from the predictions table
    there (`predictions_frame` at eta = 0): the first observation of the subjects `bad_ids`
    whose prediction or residual is not finite (else the one farthest from its
    prediction), with its row, and the likely cause; empty when nothing stands out."""
    rows = frame[frame["ID"].isin(list(bad_ids))].reset_index(drop=True)
    ipred, iwres = rows["IPRED"].to_numpy(float), rows["IWRES"].to_numpy(float)

    def where(k: int) -> str:
        return f"row {int(rows['row'][k])} (ID {rows['ID'][k]}, TIME {rows['TIME'][k]:g} h, DV {rows['DV'][k]:g})"

    failed = np.flatnonzero(~np.isfinite(ipred) | ~np.isfinite(iwres))
    if failed.size == 0:  # finite at eta = 0, yet the EBE search ran off: the data are far from the model there
        if not iwres.size or np.abs(iwres).max() < 100:
            return ""
        k = int(np.argmax(np.abs(iwres)))
        return (f"{where(k)} is {abs(iwres[k]):.3g} residual SDs from the prediction {ipred[k]:.3g} at the initial values; "
                "check the units (data.time_unit, data.amt_unit, the DV unit in [data.observables]) and the initial values")
    k = int(failed[0])
    if not np.isfinite(ipred[k]):
        return (f"{where(k)}: the prediction is {ipred[k]} at the initial values, the solve failed there; check the initial "
                "values in [parameters] and the subject's doses (AMT, RATE, their units)")
    if ipred[k] == 0:
        return (f"{where(k)}: the prediction is 0 at the initial values, and with a proportional residual error only its "
                "variance is 0; check the units (data.time_unit, data.amt_unit), the subject's doses and the initial values, "
                "or give an additive SD too")
    return (f"{where(k)}: the residual is not finite (prediction {ipred[k]:g}); check the units of DV and the residual "
            "error's initial values")
