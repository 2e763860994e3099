"""Host-side checks of a population solve's inputs, before anything is traced."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from vtrial.engine.events import DoseRecords
from vtrial.errors import SpecError
from vtrial.models.base import Model


def check_inputs(model: Model, params: Mapping[str, np.ndarray], doses: DoseRecords, times_h, t0: float) -> int:
    """Host-side validation before anything is traced; returns the number of animals."""
    needed = set(model.parameter_names) | set(model.covariate_names)
    missing = sorted(needed - set(params))
    if missing:
        raise SpecError("parameters", f"missing {', '.join(missing)} for model {model.name}")
    unknown = sorted(set(params) - needed)
    if unknown:
        raise SpecError(f"parameters.{unknown[0]}", f"unknown parameter of model {model.name}; known: {', '.join(sorted(needed))}")
    sizes = {np.shape(v)[0] if np.ndim(v) else None for v in params.values()}
    sizes.discard(None)
    if len(sizes) > 1:
        raise SpecError("parameters", f"arrays have different numbers of animals: {sorted(sizes)}")
    n = sizes.pop() if sizes else 1
    if doses.time_h.shape[0] != n:
        raise SpecError("doses", f"{doses.time_h.shape[0]} animals of dose records for {n} animals of parameters")
    for name, v in params.items():
        if not np.all(np.isfinite(np.asarray(v, dtype=float))):
            raise SpecError(f"parameters.{name}", "contains non-finite values")
    if np.any(doses.per_kg > 0) and "bw" not in model.covariate_names:
        raise SpecError("doses", f"mg/kg doses need a body-weight covariate 'bw', which model {model.name} lacks")
    check_times(times_h, t0)
    if doses.n_records and np.any(doses.time_h < t0):
        raise SpecError("doses.time_h", f"doses must not start before the start time {t0} h")
    return n


def check_times(times_h, t0: float = 0.0) -> None:
    """Output times must be a non-empty, finite, non-decreasing 1-D list, all >= `t0`."""
    times_h = np.asarray(times_h, dtype=float)
    if times_h.ndim != 1 or times_h.size == 0:
        raise SpecError("times_h", "must be a non-empty 1-D list of times")
    if not np.all(np.isfinite(times_h)):
        raise SpecError("times_h", "must be finite")
    if np.any(np.diff(times_h) < 0):
        i = int(np.argmax(np.diff(times_h) < 0))
        raise SpecError("times_h", f"must be non-decreasing; time {times_h[i + 1]} follows {times_h[i]}")
    if times_h[0] < t0:
        raise SpecError("times_h", f"must be >= the start time {t0} h")
