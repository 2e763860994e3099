"""The tables of a population fit: parameters, individuals, predictions (pandas)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from vtrial.design.population import individual_parameters
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
            est = float(natural(xv))
            d = abs(float(jax.grad(natural)(float(xv))))
            ends = sorted(float(natural(xv + k * z * s)) for k in (-1.0, 1.0)) if np.isfinite(s) else [math.nan, math.nan]
            rse = 100 * d * s / abs(est) if est else math.nan
            rows.append((n, est, d * s, rse, ends[0], ends[1], p.unit, False, scale_label(lo, hi)))
        else:
            est = float(u.typical[n])
            rows.append((n, est, math.nan, math.nan, math.nan, math.nan, p.unit, True, ""))
    for k, (par, covariate) in enumerate(layout.effects):
        key = exponent_name(par, covariate)
        if key in by_name:
            v, s = by_name[key]
            rows.append((key, v, s, 100 * s / abs(v) if v else math.nan, v - z * s, v + z * s, "", False, "identity"))
        else:
            rows.append((key, float(u.effect_exponent[k]), math.nan, math.nan, math.nan, math.nan, "", True, ""))
    for i, n in enumerate(layout.iiv_names):
        fixed = f"omega2_{n}" not in by_name
        w, s = (float(omega[i, i]), math.nan) if fixed else by_name[f"omega2_{n}"]
        rows.append((f"omega2_{n}", w, s, 100 * s / w, w - z * s, w + z * s, "", fixed, "" if fixed else "identity"))
        if n in layout.additive:
            continue  # a normal random effect has no CV%: its SD is sqrt(omega2), in the parameter's unit
        cv = 100 * math.sqrt(math.expm1(w))
        dcv = 100 * math.exp(w) / (2 * math.sqrt(math.expm1(w)))
        lo, hi = (100 * math.sqrt(math.expm1(max(b, 0.0))) for b in (w - z * s, w + z * s))
        rows.append((f"cv_pct_{n}", cv, dcv * s, 100 * dcv * s / cv, lo, hi, "%", fixed, ""))
    for i, j in layout.block_pairs:
        key = omega_name(layout.iiv_names, i, j)
        fixed = key not in by_name
        v, s = (float(omega[i, j]), math.nan) if fixed else by_name[key]
        rows.append((key, v, s, 100 * s / abs(v) if v else math.nan, v - z * s, v + z * s, "", fixed, "" if fixed else "identity"))
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
                rows.append((key, v, s, 100 * s / v, v - z * s, v + z * s, unit, False, "identity"))
            else:
                rows.append((key, sd, math.nan, math.nan, math.nan, math.nan, unit, True, ""))
    return pd.DataFrame(rows, columns=["name", "estimate", "se", "rse_pct", "ci_low", "ci_high", "unit", "fixed", "scale"])


def individual_frame(model, data, spec, layout, constants, u, eta, ofv_i, eta_shrink) -> pd.DataFrame:
    out = {"ID": np.asarray(data.ids)}
    for i, n in enumerate(layout.iiv_names):
        out[f"eta_{n}"] = eta[:, i]
    base = dict(u.typical)
    n = data.n_subjects
    for c in model.covariates:
        base[c.name] = jnp.asarray(data.covariates.get(c.name, np.full(n, c.reference)), float)
    base = {k: jnp.broadcast_to(jnp.asarray(v, float), (n,)) for k, v in base.items()}
    indiv = jax.vmap(
        lambda p, e: model.derive(
            individual_parameters(p, layout.effects, constants.effect_reference, u.effect_exponent, layout.iiv_names, e, layout.additive)
        )
    )(base, jnp.asarray(eta))
    shown = [p for p in model.parameter_names if p in spec.typical or p in layout.iiv_names]
    for p in (*shown, *model.derived_names):  # the derived ones: NONMEM's $PK variables (CL, V)
        out[p] = np.asarray(indiv[p])
    for name in layout.iiv_names:
        out[f"shrinkage_pct_{name}"] = np.full(n, eta_shrink[name])
    out["ofv"] = ofv_i
    return pd.DataFrame(out)


def predictions_frame(model, data, order, diag) -> tuple[pd.DataFrame, dict[str, float]]:
    take = lambda a: np.take_along_axis(np.asarray(a), order, axis=1)  # noqa: E731
    mask = take(data.obs_mask).astype(bool)
    obs = take(data.obs_observable)
    dv = take(np.asarray(data.dv, float))
    pred, ipred, sd, cwres = (np.asarray(a) for a in (diag.pred, diag.ipred, diag.ipred_sd, diag.cwres))
    ids = np.broadcast_to(np.asarray(data.ids)[:, None], mask.shape)
    frame = pd.DataFrame(
        {
            "ID": ids[mask],
            "TIME": take(data.obs_time_h)[mask],
            "observable": np.asarray(model.observable_names, dtype=object)[obs[mask]],
            "DV": dv[mask],
            "PRED": pred[mask],
            "IPRED": ipred[mask],
            "RES": (dv - pred)[mask],
            "IRES": (dv - ipred)[mask],
            "IWRES": ((dv - ipred) / sd)[mask],
            "CWRES": cwres[mask],
            "row": take(data.obs_row)[mask],
        }
    )
    frame = frame.sort_values("row", kind="stable").reset_index(drop=True)
    shrink = {
        name: float(100.0 * (1.0 - np.std(frame.loc[frame.observable == name, "IWRES"], ddof=1)))
        for name in frame.observable.unique()
    }
    return frame, shrink
