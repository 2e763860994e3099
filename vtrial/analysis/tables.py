"""Long (tidy) tables of a trial: one row per animal and time.

Built column by column from the batched arrays, so the same builders serve
`SimulationResult.to_frame()` and the streamed Parquet files of the `trial` job. `arm` and
`animal` may be given as `pd.Categorical` (codes plus names), which stays categorical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def _repeat(values, times: int):
    """Each value `times` times; a `pd.Categorical` (arm names, text IDs) stays categorical,
    so that millions of rows never become Python strings."""
    if isinstance(values, pd.Categorical):
        return pd.Categorical.from_codes(np.repeat(values.codes, times), dtype=values.dtype)
    return np.repeat(np.asarray(values), times)


def trajectory_columns(arm, animal, times_h, observables: Mapping[str, np.ndarray], *, states=None,
                       state_columns: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Columns `arm`, `animal`, `time_h`, one per observable (`observables[name]` is
    `(m, n_times)`), and one per state when `states` `(m, n_times, n_states)` is given
    (named by `state_columns`)."""
    t = len(times_h)
    cols = {"arm": _repeat(arm, t), "animal": _repeat(animal, t), "time_h": np.tile(np.asarray(times_h, float), len(animal))}
    for name, v in observables.items():
        cols[name] = np.asarray(v).reshape(-1)
    if states is not None:
        for j, column in enumerate(state_columns):
            cols[column] = states[:, :, j].reshape(-1)
    return cols


def observation_columns(arm, animal, times_h, observations: Mapping[str, np.ndarray],
                        masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Columns `arm`, `animal`, `time_h`, one per sampled observable: the values of
    `observations[name]` (`(m, n_times)`) where `masks[name]` (`(n_times,)`) samples them,
    NaN elsewhere; only the times at which some observable is sampled get rows."""
    times = np.asarray(times_h, dtype=float)
    sampled = np.logical_or.reduce(list(masks.values())) if masks else np.zeros(times.size, bool)
    rows = np.flatnonzero(sampled)
    cols = {"arm": _repeat(arm, rows.size), "animal": _repeat(animal, rows.size), "time_h": np.tile(times[rows], len(animal))}
    for name, mask in masks.items():
        values = np.where(mask[None, :], np.asarray(observations[name]), np.nan)
        cols[name] = values[:, rows].reshape(-1)
    return cols


def frame(columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame(dict(columns))
