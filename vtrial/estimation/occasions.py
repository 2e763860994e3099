r"""Inter-occasion variability (IOV): one random effect per occasion and subject.

NONMEM's usual coding: `$OMEGA BLOCK(1) pi2` for the first occasion and `$OMEGA BLOCK(1)
SAME` for the others, so every occasion's kappa has the one estimated variance
$\pi^2$: $\kappa_{ik} \sim N(0, \pi^2)$, and in the records of occasion $k$ the
parameter is $\theta_i e^{\kappa_{ik}}$ ($\theta_i$ the subject's individual value,
covariates and eta included; $\theta_i + \kappa_{ik}$ for an additive random effect).

In the estimation (`vtrial.estimation.focei`) a subject's random effects are
`[eta | kappa]`, kappa occasion-major `(n_occasions, n_iov)`, with the block-diagonal
$\Omega_i = \mathrm{diag}(\Omega, \pi^2 I, \ldots)$. Occasions are the dataset's OCC
levels, the same kappa slots for every subject; a level a subject does not have is
masked: its kappa gets variance 1 in that subject's $\Omega_i$ and no record reads it,
so its EBE is 0 and it adds exactly 0 to the prior, $\log|\Omega_i|$ and $\log|\tilde
H_i|$ (the integral of a density with no data is 1): padding changes nothing.

An occasion change is a parameter change at an event time: the parameters of the
occasion are columns of the subject's `CovariateChanges` (`parameters`), which the solve
meets exactly (`vtrial.engine.events.parameters_at`), as time-varying covariates.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from vtrial.design.occasions import merge_occasion_changes
from vtrial.engine.events import DoseRecords
from vtrial.errors import SpecError
from vtrial.estimation.population_data import OccasionData
from vtrial.estimation.population_spec import iov_name


def occasions_from_rows(subject, time_h, occ, obs_rows, obs_shape) -> OccasionData:
    """`OccasionData` from a dataset's rows: `subject` (row -> subject index, contiguous),
    `time_h` and `occ` (the OCC value of every row), `obs_rows` (the observation rows in
    the order they fill the subjects' `(n_subjects, n_obs)` observation slots)."""
    subject, time_h, occ = np.asarray(subject), np.asarray(time_h, float), np.asarray(occ, float)
    levels = np.unique(occ)
    level = np.searchsorted(levels, occ)
    n_subjects = int(obs_shape[0])
    per_subject = []
    for s in range(n_subjects):
        rows = np.flatnonzero(subject == s)
        changes = [(-math.inf, level[rows[0]])]
        changes += [(time_h[rows[k - 1]], level[rows[k]]) for k in range(1, rows.size) if level[rows[k]] != level[rows[k - 1]]]
        per_subject.append(changes)
    m = max(len(c) for c in per_subject)
    change_h = np.zeros((n_subjects, m))
    change_level = np.zeros((n_subjects, m), np.int64)
    for s, changes in enumerate(per_subject):
        changes = changes + [changes[-1]] * (m - len(changes))
        change_h[s] = [c[0] for c in changes]
        change_level[s] = [c[1] for c in changes]
    obs_level = np.full(obs_shape, -1, np.int64)
    obs_rows = np.asarray(obs_rows)
    obs_subject = subject[obs_rows]
    position = np.arange(obs_rows.size) - np.searchsorted(obs_subject, obs_subject)
    obs_level[obs_subject, position] = level[obs_rows]
    return OccasionData(levels, change_h, change_level, obs_level)


def occasion_arrays(model, doses: DoseRecords, occasions: OccasionData, t0: float):
    """The subjects' dose records with their occasion changes merged into their covariate
    changes (host numpy), the occasion in effect from each change on `(n_subjects,
    n_changes)` and the occasion levels each subject has `(n_subjects, n_occasions)`
    (1/0): `vtrial.design.occasions.merge_occasion_changes`. A subject's first occasion
    starts at `t0`."""
    return merge_occasion_changes(model, doses, occasions.change_h, occasions.change_level, occasions.levels.size, t0)


def subject_omega_chol(layout, u, s):
    """The Cholesky factor of the subject's $\\Omega_i$ over `[eta | kappa]` (module
    docstring): Omega's own without occasions."""
    if not layout.n_kappa:
        return u.chol
    present = s.occasion_present[:, None] > 0
    sd = jnp.where(present, u.iov_sd[None, :], 1.0).reshape(-1)
    if not layout.n_iiv:
        return jnp.diag(sd)
    return jax.scipy.linalg.block_diag(u.chol, jnp.diag(sd))


def occasion_values(layout, p, kappa):
    """`(n_occasions, n_iov)`: each occasion's value of each IOV parameter."""
    k = jnp.reshape(kappa, (layout.n_occasions, len(layout.iov_names)))
    cols = [p[n] + k[:, j] if n in layout.additive else p[n] * jnp.exp(k[:, j]) for j, n in enumerate(layout.iov_names)]
    return jnp.stack(cols, axis=1)


def occasion_inputs(model, layout, s, p, kappa):
    """The subject's parameters and dose records for a solve with kappa `(n_kappa,)`: the
    occasions' values as parameter changes; `p` itself takes the first occasion's (what
    the initial state and the records read)."""
    values = occasion_values(layout, p, kappa)
    level = s.occasion_level
    cols = []
    for name in model.parameter_names:
        if name in layout.iov_names:
            cols.append(values[level, layout.iov_names.index(name)])
        else:
            cols.append(jnp.full(level.shape, jnp.nan, values.dtype))
    changes = s.doses.changes._replace(parameters=jnp.stack(cols, axis=1))
    q = dict(p)
    for j, name in enumerate(layout.iov_names):
        q[name] = values[level[0], j]
    return q, s.doses._replace(changes=changes)


def iov_table_rows(layout, by_name, u, z, cv_pct_row, ratio_pct) -> list[tuple]:
    """`parameters.csv` rows of the IOV variances: `iov_omega2_<p>` and (exponential
    effects) `iov_cv_pct_<p>`, as Omega's rows."""
    rows = []
    for j, n in enumerate(layout.iov_names):
        key = iov_name(n)
        fixed = key not in by_name
        w, s = (float(u.iov_sd[j]) ** 2, math.nan) if fixed else by_name[key]
        rows.append((key, w, s, ratio_pct(s, w), w - z * s, w + z * s, "", fixed, "" if fixed else "identity"))
        if n not in layout.additive:
            rows.append((f"iov_cv_pct_{n}", *cv_pct_row(w, s, z), "%", fixed, ""))
    return rows


def occasion_individual_frame(model, data, layout, frame: pd.DataFrame, eta, individual) -> pd.DataFrame:
    """individual.csv in long form with occasions: one row per subject and occasion it
    has (`ID`, `OCC`, the etas, `kappa_<p>`, the individual parameters in that occasion,
    then the subject's columns of `frame`). `individual(eta_with_kappa_folded)` maps
    `(n, n_iiv)` random effects to the parameters."""
    occ = data.occasions
    n = data.n_subjects
    kappa = np.asarray(eta)[:, layout.n_iiv:].reshape(n, layout.n_occasions, len(layout.iov_names))
    rows = []
    for k, level in enumerate(occ.levels):
        has = np.any(occ.change_level == k, axis=1)
        if not has.any():
            continue
        label = int(level) if float(level).is_integer() else float(level)  # as the dataset writes it
        out = {"ID": np.asarray(data.ids)[has], "OCC": np.full(int(has.sum()), label)}
        for i, name in enumerate(layout.iiv_names):
            out[f"eta_{name}"] = np.asarray(eta)[has, i]
        for j, name in enumerate(layout.iov_names):
            out[f"kappa_{name}"] = kappa[has, k, j]
        params = individual(np.flatnonzero(has), kappa[has, k, :])
        for name, values in params.items():
            out[name] = values
        extra = frame.loc[has, [c for c in frame.columns if c not in out and not c.startswith("eta_")]]
        rows.append(pd.concat([pd.DataFrame(out).reset_index(drop=True), extra.reset_index(drop=True)], axis=1))
    result = pd.concat(rows, ignore_index=True)
    order = np.argsort(pd.Categorical(result["ID"], categories=pd.unique(np.asarray(data.ids))).codes, kind="stable")
    return result.iloc[order].reset_index(drop=True)


def n_occasions(data, spec) -> int:
    """The occasion levels a fit of `data` with `spec` has kappas for (0 without IOV)."""
    if not spec.iov_omega2:
        return 0
    if data.occasions is None:
        raise SpecError("variability.occasions", "the dataset has no occasions: give an OCC column with a number on every row (or name "
                                                    "the column in [data] occasion)")
    return int(np.asarray(data.occasions.levels).size)
