"""Writing NONMEM-style datasets: a simulated trial in the layout `vtrial.io.nonmem` reads.

`vtrial run CONFIG --dataset FILE.csv` writes ID, TIME, AMT, RATE, EVID, CMT, DVID, DV, MDV,
one column per model covariate (upper case) and ARM (`dataset_columns`), atomically and
chunk by chunk (`DatasetWriter`); `vtrial fit` reads it back with the default `[data]`
mapping.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from vtrial.engine.events import DoseRecords
from vtrial.errors import DataError, SpecError
from vtrial.io.writers import AtomicStream
from vtrial.models.base import Model



#: Columns of a written dataset, before the covariates and ARM.
WRITTEN_COLUMNS = ("ID", "TIME", "AMT", "RATE", "EVID", "CMT", "DVID", "DV", "MDV")


def dose_cmt(model: Model) -> list[str]:
    """What a written dataset puts in CMT for each of the model's routes: the 1-based
    number of the route's state (NONMEM's compartment), or the route's name where another
    route into the same state differs in bioavailability or lag (a number could not tell
    them apart)."""
    out = []
    for r in model.routes:
        same = [o for o in model.routes if o.state == r.state]
        distinct = len({(o.bioavailability, o.lag) for o in same}) > 1
        first = same[0] is r
        out.append(r.name if distinct and not first else str(model.state_index(r.state) + 1))
    return out


def dataset_columns(
    model: Model,
    ids: np.ndarray,
    doses: DoseRecords,
    times_h: np.ndarray,
    observations: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    covariates: Mapping[str, np.ndarray],
    arm: np.ndarray | None = None,
    occasion_start_h=(),
) -> pd.DataFrame:
    """The dataset rows of `m` animals: dose rows from `doses` (`(m, n_records)`; mg/kg
    amounts times the animal's `bw`; zero-amount padding left out), and an observation
    row per sampled time of each observable (`observations[name]` `(m, n_times)`,
    `masks[name]` `(n_times,)`); at equal times doses come first (an observation at a
    dose time sees the state before the dose, as in the solve and in NONMEM). With
    `occasion_start_h` (a trial's occasions) a column OCC: the occasion in effect just
    before the row's time, so that NONMEM's next observation carried back reads the
    changes back at the same times when each start is a row's time (a dose's)."""
    m = len(ids)
    cmt_of_route = np.asarray(dose_cmt(model), dtype=object) if model.routes else np.zeros(0, object)
    bw = np.asarray(covariates["bw"], float) if "bw" in covariates else np.ones(m)
    time, amount, per_kg, duration, route = (np.asarray(a) for a in doses[:5])
    s_dose, j_dose = np.nonzero(amount > 0)
    mg = amount[s_dose, j_dose] * np.where(per_kg[s_dose, j_dose] > 0, bw[s_dose], 1.0)
    dur = duration[s_dose, j_dose]
    # Missing cells are NaN (None for CMT) and written as "." (`DatasetWriter`).
    parts = [pd.DataFrame({
        "_s": s_dose, "_order": 0, "TIME": time[s_dose, j_dose], "AMT": mg,
        "RATE": np.where(dur > 0, mg / np.where(dur > 0, dur, 1.0), 0.0), "EVID": 1,
        "CMT": cmt_of_route[route[s_dose, j_dose]] if s_dose.size else np.zeros(0, object), "DVID": np.nan, "DV": np.nan,
        "MDV": 1,
    })]
    times = np.asarray(times_h, float)
    for j, name in enumerate(model.observable_names):
        if name not in masks:
            continue
        cols = np.flatnonzero(masks[name])
        values = np.asarray(observations[name], float)[:, cols].reshape(-1)
        parts.append(pd.DataFrame({
            "_s": np.repeat(np.arange(m), cols.size), "_order": 1, "TIME": np.tile(times[cols], m), "AMT": 0.0, "RATE": 0.0,
            "EVID": 0, "CMT": None, "DVID": float(j + 1), "DV": values,
            "MDV": np.where(np.isfinite(values), 0, 1),  # a failed solve's value is missing, not a number
        }))
    rows = pd.concat(parts, ignore_index=True).sort_values(["_s", "TIME", "_order"], kind="stable")
    rows.loc[~np.isfinite(rows["DV"].to_numpy(float)), "DV"] = np.nan
    s = rows["_s"].to_numpy()
    out = pd.DataFrame({"ID": np.asarray(ids)[s]})
    for c in WRITTEN_COLUMNS[1:]:
        out[c] = rows[c].to_numpy()
    for name in model.covariate_names:
        if name in covariates:
            out[name.upper()] = np.asarray(covariates[name])[s]
    if len(occasion_start_h):
        start = np.asarray(occasion_start_h, float)
        out["OCC"] = np.maximum(np.searchsorted(start, out["TIME"].to_numpy(float), side="left"), 1)
    if arm is not None:
        out["ARM"] = np.asarray(arm)[s]
    return out


class DatasetWriter(AtomicStream):
    """A NONMEM-style CSV written frame by frame, atomically (`AtomicStream`: a dataset is
    either complete or absent). Use as a context manager."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self._file = open(self._tmp, "w", newline="")
        self._header: list[str] | None = None

    def write(self, frame: pd.DataFrame) -> None:
        if self._header is None:
            self._header = list(frame.columns)
            frame.to_csv(self._file, index=False, na_rep=".", float_format="%.10g")
        else:
            frame[self._header].to_csv(self._file, index=False, header=False, na_rep=".", float_format="%.10g")
        self.rows += len(frame)

    def _finish(self) -> None:
        self._file.close()
        if self._header is None:
            raise DataError(f"{self.path}: no rows to write")

    def _discard(self) -> None:
        self._file.close()


def check_dataset_path(path: str | os.PathLike, field: str = "--dataset") -> Path:
    """The path a dataset will be written to: a .csv file in an existing folder."""
    p = Path(path)
    if p.suffix.lower() != ".csv":
        raise SpecError(field, f"{p}: a NONMEM dataset is written as CSV; give a .csv file name")
    if p.is_dir():
        raise SpecError(field, f"{p} is a folder; give a file name")
    return p

