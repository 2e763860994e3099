"""The data a population fit receives: the subjects of a dataset as padded arrays.

Built by the NONMEM dataset reader (`vtrial.io.nonmem.read_nonmem`); the estimation code
never reads files.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from vtrial.engine.events import DoseRecords


class PopulationData(NamedTuple):
    """Subjects of a dataset, padded to common shapes (leading axis: subject)."""
    ids: np.ndarray               # (n_subjects,) original ID values
    doses: DoseRecords            # vtrial.engine.events.DoseRecords (n_subjects, n_records), amounts in the model's dose unit
    obs_time_h: np.ndarray        # (n_subjects, n_obs) float, padded with the last time
    obs_observable: np.ndarray    # (n_subjects, n_obs) int index into model.observables
    dv: np.ndarray                # (n_subjects, n_obs) float in the DV unit
    obs_mask: np.ndarray          # (n_subjects, n_obs) bool, False on padding
    covariates: dict[str, np.ndarray]  # name -> (n_subjects,)
    dv_scale: np.ndarray          # (n_observables,) DV unit per model observable unit (1000 for ug/L data vs a mg/L model)
    obs_row: np.ndarray           # (n_subjects, n_obs) int, 1-based CSV row, -1 on padding
