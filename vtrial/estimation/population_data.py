"""The data a population fit receives: every subject of a dataset, padded to common shapes.

Built by the NONMEM dataset reader (`vtrial.io.nonmem`) or by a simulation; consumed by
`vtrial.estimation.population.fit_population`. Host numpy arrays, leading axis: subject.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from vtrial.engine.events import DoseRecords


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
            obs_row=self.obs_row[index], occasions=None if self.occasions is None else self.occasions.take(index),
        )
