"""The data a population fit receives: every subject of a dataset, padded to common shapes.

Built by the NONMEM dataset reader (`vtrial.io.nonmem`) or by a simulation; consumed by
`vtrial.estimation.population.fit_population`. Host numpy arrays, leading axis: subject.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from vtrial.engine.events import DoseRecords
from vtrial.errors import DataError, SpecError
from vtrial.models.base import Model


class OccasionData(NamedTuple):
    """The subjects' occasions (NONMEM's OCC column), for inter-occasion variability.

    - `levels`: `(n_occasions,)` the dataset's occasion values, sorted: kappa k of every
      subject is that of `levels[k]` (NONMEM's coding: one kappa per OCC value);
    - `change_h`: `(n_subjects, n_changes)`: from right after this time on (-inf: from
      the subject's start) the subject is in occasion `change_level`; NONMEM's next
      observation carried back: a record's occasion holds for the interval that ends at
      it, so an occasion starts at the previous record's time. Padded by repeating the
      last change;
    - `change_level`: `(n_subjects, n_changes)` int index into `levels`;
    - `obs_level`: `(n_subjects, n_obs)` int: the occasion of each observation (-1 on
      padding).
    """

    levels: np.ndarray
    change_h: np.ndarray
    change_level: np.ndarray
    obs_level: np.ndarray

    def take(self, index) -> "OccasionData":
        return self._replace(change_h=self.change_h[index], change_level=self.change_level[index], obs_level=self.obs_level[index])


class PopulationData(NamedTuple):
    """Subjects of a dataset, padded to common shapes (leading axis: subject).

    - `ids`: `(n_subjects,)` original ID values (host, any dtype);
    - `doses`: `DoseRecords`, `(n_subjects, n_records)`; amounts in the model's dose
      unit (mg), padded with zero-amount boluses at t = 0;
    - `obs_time_h`: `(n_subjects, n_obs)` float, padded with the subject's last time;
    - `obs_observable`: `(n_subjects, n_obs)` int index into `model.observables`;
    - `dv`: `(n_subjects, n_obs)` float, in the DV unit of its observable (see `dv_scale`);
    - `obs_mask`: `(n_subjects, n_obs)` bool, False on padding;
    - `covariates`: name -> `(n_subjects,)`, e.g. "bw";
    - `dv_scale`: `(n_observables,)` factor: DV unit per model observable unit (1000 for
      ug/L when the model gives mg/L); predictions compared with DV are
      `model observable * dv_scale[observable]`, so the likelihood is that of DV in the
      dataset's own units (what NONMEM reports);
    - `obs_row`: `(n_subjects, n_obs)` int, 1-based row of the CSV file (for messages and
      outputs), -1 on padding;
    - `cens`: `(n_subjects, n_obs)` int or None (no censored rows): 1 below a lower limit
      of quantification, -1 above an upper one, 0 quantified; `dv` holds the limit on a
      censored row (`vtrial.estimation.censoring`).
    - `occasions`: `OccasionData` (an OCC column), or None.
    """

    ids: np.ndarray
    doses: DoseRecords
    obs_time_h: np.ndarray
    obs_observable: np.ndarray
    dv: np.ndarray
    obs_mask: np.ndarray
    covariates: dict[str, np.ndarray]
    dv_scale: np.ndarray
    obs_row: np.ndarray
    cens: np.ndarray | None = None
    occasions: OccasionData | None = None

    @property
    def n_subjects(self) -> int:
        return int(np.shape(self.obs_time_h)[0])

    @property
    def n_observations(self) -> int:
        return int(np.sum(self.obs_mask))

    def take(self, index) -> "PopulationData":
        """The subjects at `index` (a slice, indices or a mask over subjects), e.g. the first
        few of a dataset for a quick check."""
        return self._replace(
            ids=np.asarray(self.ids)[index], doses=self.doses.take(index),
            obs_time_h=self.obs_time_h[index], obs_observable=self.obs_observable[index], dv=self.dv[index],
            obs_mask=self.obs_mask[index], covariates={k: np.asarray(v)[index] for k, v in self.covariates.items()},
            obs_row=self.obs_row[index], cens=None if self.cens is None else self.cens[index],
            occasions=None if self.occasions is None else self.occasions.take(index),
        )


def check_population_data(model: Model, data: PopulationData, spec) -> None:
    """Shape and value checks of `data` for `model` and `spec` (an `EstimationSpec`) that
    name the offending field, before any compilation."""
    if not isinstance(data, PopulationData):
        raise DataError("data: expected a PopulationData")
    t = np.asarray(data.obs_time_h)
    if t.ndim != 2 or t.shape[0] == 0:
        raise DataError(f"data.obs_time_h: expected (n_subjects, n_obs) with at least one subject, got shape {t.shape}")
    for name in ("obs_observable", "dv", "obs_mask", "obs_row", "cens"):
        if getattr(data, name) is not None and np.shape(getattr(data, name)) != t.shape:
            raise DataError(f"data.{name}: shape {np.shape(getattr(data, name))} differs from obs_time_h's {t.shape}")
    n_subjects = t.shape[0]
    if len(data.ids) != n_subjects:
        raise DataError(f"data.ids: {len(data.ids)} IDs for {n_subjects} subjects")
    for name, arr in data.doses._asdict().items():
        if arr is not None and name != "nonmem" and np.shape(arr)[:1] != (n_subjects,):
            raise DataError(f"data.doses.{name}: leading axis must be the {n_subjects} subjects, got shape {np.shape(arr)}")
    mask = np.asarray(data.obs_mask, bool)
    rows = np.asarray(data.obs_row)
    n_obs_kinds = len(model.observables)
    if np.shape(data.dv_scale) != (n_obs_kinds,):
        raise DataError(f"data.dv_scale: expected one factor per observable of model {model.name} ({n_obs_kinds}), got shape {np.shape(data.dv_scale)}")

    def where(i, j):
        return f"row {rows[i, j]} (ID {data.ids[i]})"

    obs = np.asarray(data.obs_observable)
    bad = mask & ((obs < 0) | (obs >= n_obs_kinds))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f"{where(i, j)}: observable index {obs[i, j]} outside 0..{n_obs_kinds - 1}")
    for kind, arr in (("DV", np.asarray(data.dv, float)), ("TIME", t)):
        bad = mask & ~np.isfinite(arr)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise DataError(f"{where(i, j)}, column {kind}: {arr[i, j]!r} is not a finite number")
    for o in np.unique(obs[mask]):
        name = model.observable_names[o]
        if name not in spec.residual:
            raise SpecError(f"residual.{name}", f"the data observe {name}; give its residual error (additive and/or proportional)")
    if not mask.any():
        raise DataError("data: no observations")
    if data.cens is not None and np.any(mask & ~np.isin(np.asarray(data.cens), (-1, 0, 1))):
        i, j = np.argwhere(mask & ~np.isin(np.asarray(data.cens), (-1, 0, 1)))[0]
        raise DataError(f"{where(i, j)}, column CENS: {data.cens[i, j]!r}; give 1 (below a lower limit), -1 (above an upper one) or 0")
    for name, values in data.covariates.items():
        v = np.asarray(values, float)
        if v.shape != (n_subjects,):
            raise DataError(f"data.covariates.{name}: expected one value per subject ({n_subjects}), got shape {v.shape}")
        if name not in model.covariate_names:
            continue
        bad, rule = model.covariate(name).check(v)
        if name in {e.covariate for e in spec.covariate_effects if e.shape == "power"}:
            bad, rule = bad | ~(v > 0), f"{name} has a power covariate effect: values must be finite and > 0"
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"ID {data.ids[i]}, covariate {name}: {v[i]!r} is not allowed; {rule}")
