"""NONMEM-style datasets in and out: the only place a dataset file becomes `PopulationData`.

Reading (`read_nonmem`): one row per event, columns (upper or lower case)

| column | meaning |
|---|---|
| `ID` | subject; its rows must be contiguous (as NONMEM reads them) |
| `TIME` | time in `time_unit` (h by default), >= 0, non-decreasing within a subject |
| `AMT` | dose amount in `amt_unit` (mg by default; "ug", "mg/kg", ...) |
| `RATE` | infusion rate in `amt_unit` per `time_unit` (the duration is F x AMT / RATE); 0 or "." for a bolus; -1: the rate comes from the model (the route's `rate`), -2: the duration does (the route's `duration`) |
| `EVID` | 0 observation, 1 dose, 2 other (ignored), 3 reset (states to their initial values, infusions and pending doses cancelled), 4 reset and dose; anywhere in a subject; without `EVID`: a row with AMT > 0 is a dose, MDV = 1 other, else an observation |
| `MDV` | 1: DV missing; an EVID 0 row with MDV = 1 is ignored (an excluded observation) |
| `CMT` | dose compartment (number: the model's state, 1-based; or a route or state name), or the observable of an observation row |
| `DVID` | which observable an observation is (default: the model's observables numbered from 1) |
| `DV` | the observation, in the observable's DV unit |
| `CENS`, `BLQ`, `LLOQ` | censored observations (below/above a limit of quantification): `vtrial.io.nonmem_censoring` |
| `II`, `ADDL` | repeated doses: ADDL more doses every II after TIME (expanded into dose records) |
| `SS` | steady state of the dose repeated every II: 1 resets and starts from it, 2 adds it (boluses and infusions, any duration against II, lag and F included; AMT = 0 with RATE > 0 and II = 0: a constant infusion's); closed form for a model that is linear PK throughout, else the periodic state of the model's ODE (Newton's method on one dosing interval); SS = 3 is refused |
| `OCC` | occasion (a number on every row; another column named in `[data] occasion`): inter-occasion variability's kappas are per OCC value; a row's occasion holds for the interval that ends at it (next observation carried back) |
| any other | a covariate when it names one of the model's (`bw` from `BW`, or from `WT` when there is no `BW`; others mapped in `[data.covariates]`, e.g. `bw = "WEIGHT"`); one value per subject, except a covariate a route names as its lag, bioavailability, rate or duration: each dose record takes its own row's value (e.g. `LAGT` feeding ALAG2) |

"." and empty cells are missing values. Every malformed row raises a `DatasetError`
naming the file, the row, the column and the rule it breaks, before anything is compiled.
Doses are lowered to `DoseRecords` (amounts in mg, padded with zero-amount boluses at
t = 0 as `vtrial.design.dosing.lower_regimens` pads), observations to padded arrays.

Writing the same layout from a simulated trial is `vtrial.io.nonmem_writer`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from vtrial.errors import DataError, DatasetError, SpecError
from vtrial.estimation.population_data import PopulationData
from vtrial.io.nonmem_censoring import censored_observations
from vtrial.io.nonmem_checks import check_magnitudes, check_shape, require_covariates
from vtrial.io.nonmem_occasions import read_occasions
from vtrial.io.nonmem_records import dose_records, dose_route
from vtrial.io.nonmem_records import value_key as _key
from vtrial.io.nonmem_source import NonmemSource, read_source
from vtrial.limits import MAX_DOSE_RECORDS
from vtrial.models.base import Model
from vtrial.schema import Strict
from vtrial.units import amount_to_mg, conversion_factor

#: Columns with a NONMEM meaning; every other column may hold a covariate.
STANDARD_COLUMNS = ("ID", "TIME", "AMT", "RATE", "EVID", "MDV", "CMT", "DVID", "DV", "II", "ADDL", "SS", "OCC")

CmtValue = int | Annotated[str, Field(min_length=1)]


# ---------------------------------------------------------------------------
# the mapping of a dataset onto a model (the fit config's [data] table)


class ObservableData(Strict):
    """Which observation rows are one model observable, and the unit of their DV.

    - `dvid`: DVID values (numbers or names) of this observable;
    - `cmt`: CMT values of this observable (when the dataset tells observables apart by CMT);
    - `unit`: DV unit (default: the observable's own unit), e.g. "ug/L" for a mg/L model.
    """

    dvid: list[CmtValue] = []
    cmt: list[CmtValue] = []
    unit: str | None = None


class DataSpec(Strict):
    """How a dataset maps onto a model (`[data]` of a fit config).

    - `amt_unit`: unit of AMT (and of RATE per `time_unit`): "mg" (default), "ug", "mg/kg", ...
    - `time_unit`: unit of TIME and II: "h" (default), "min", "day";
    - `routes`: model route -> the CMT values (numbers or names) of its dose rows; without
      it, a CMT number k doses the model's k-th state (by the first route into it), a
      name names a route or a state;
    - `observables`: model observable -> which rows (`dvid`, `cmt`) and DV `unit`;
      without it, DVID k (or, with no DVID column, every observation) is the model's
      k-th observable (its only one) in the model's unit;
    - `covariates`: model covariate -> dataset column (default: the column of the same
      name, any case);
    - `bioavailability_scales`: what a route's bioavailability F scales in an infusion
      given by RATE > 0: "duration" (default, NONMEM: the rate is kept, the infusion lasts
      F x AMT / RATE) or "rate" (vtrial's regimens and the datasets `vtrial run --dataset`
      writes: the duration AMT / RATE is kept, the rate is F x RATE);
    - `occasion`: the column of occasions (default: `OCC` when the dataset has it).
    """

    amt_unit: str = "mg"
    time_unit: str = "h"
    routes: dict[str, list[CmtValue]] = {}
    observables: dict[str, ObservableData] = {}
    covariates: dict[str, str] = {}
    bioavailability_scales: Literal["duration", "rate"] = "duration"
    source: NonmemSource | None = None  # read as a control stream's $INPUT/$DATA (vtrial.io.nonmem_source)
    occasion: str | None = None


@dataclass(frozen=True)
class _Resolved:
    """A `DataSpec` checked against a model (every name known, every unit converted)."""

    amt_factor: float
    per_kg: bool
    time_factor: float
    route_of_cmt: dict[str, int]
    observable_by: str  # "dvid", "cmt" or "single"
    observable_of_key: dict[str, int]
    dv_scale: np.ndarray
    covariate_columns: dict[str, str]
    rate_kept: bool = True  # F scales a given RATE's duration (NONMEM), not its rate


def _resolve(model: Model, spec: DataSpec) -> _Resolved:
    amt_factor, per_kg = amount_to_mg(1.0, spec.amt_unit, "data.amt_unit")
    if per_kg and "bw" not in model.covariate_names:
        raise SpecError("data.amt_unit", f"mg/kg amounts need a body-weight covariate 'bw', which model {model.name} lacks")
    time_factor = conversion_factor(spec.time_unit, "h", "data.time_unit")
    route_of_cmt: dict[str, int] = {}
    for route, values in spec.routes.items():
        if route not in [r.name for r in model.routes]:
            allowed = ", ".join(r.name for r in model.routes) or "(none: this model takes no doses)"
            raise SpecError(f"data.routes.{route}", f"unknown route of model {model.name}; routes: {allowed}")
        for v in values:
            k = _key(v)
            if k in route_of_cmt and route_of_cmt[k] != model.route_index(route):
                raise SpecError(f"data.routes.{route}", f"CMT {v!r} is mapped to two routes")
            route_of_cmt[k] = model.route_index(route)
    names = model.observable_names
    dv_scale = np.ones(len(names))
    observable_of_key: dict[str, int] = {}
    by = set()
    for name, o in spec.observables.items():
        if name not in names:
            raise SpecError(f"data.observables.{name}", f"unknown observable of model {model.name}; known: {', '.join(names)}")
        j = names.index(name)
        if o.unit is not None:
            dv_scale[j] = conversion_factor(model.observable(name).unit, o.unit, f"data.observables.{name}.unit")
        if o.dvid and o.cmt:
            raise SpecError(f"data.observables.{name}", "give dvid or cmt (the column that tells observables apart), not both")
        for column, values in (("dvid", o.dvid), ("cmt", o.cmt)):
            if values:
                by.add(column)
            for v in values:
                k = _key(v)
                if k in observable_of_key and observable_of_key[k] != j:
                    raise SpecError(f"data.observables.{name}.{column}", f"{v!r} is mapped to two observables")
                observable_of_key[k] = j
    if len(by) > 1:
        raise SpecError("data.observables", "tell observables apart by one column: dvid everywhere or cmt everywhere")
    if by:
        observable_by = by.pop()
    elif len(spec.observables) == 1:
        observable_by = "single"
        observable_of_key = {"": names.index(next(iter(spec.observables)))}
    elif spec.observables:
        raise SpecError("data.observables", "several observables: say which rows are which with dvid = [...] or cmt = [...]")
    else:
        observable_by = "default"
    for cov in spec.covariates:
        if cov not in model.covariate_names:
            raise SpecError(f"data.covariates.{cov}", f"unknown covariate of model {model.name}; known: {', '.join(model.covariate_names) or 'none'}")
    return _Resolved(amt_factor, per_kg, time_factor, route_of_cmt, observable_by, observable_of_key, dv_scale,
                     dict(spec.covariates), spec.bioavailability_scales == "duration")


def check_data_spec(model: Model, spec: DataSpec) -> None:
    """Check a mapping against a model without a dataset (every name known, units convert);
    a `SpecError` naming `data.<key>` otherwise."""
    _resolve(model, spec)


def data_spec(data: DataSpec | Mapping | None) -> DataSpec:
    """A `DataSpec` from itself, a mapping (validated; errors name `data.<key>`) or None."""
    if data is None:
        return DataSpec()
    if isinstance(data, DataSpec):
        return data
    from vtrial.io.config import validate

    try:
        return validate(DataSpec, dict(data))
    except SpecError as e:
        raise SpecError(f"data.{e.field}", e.problem) from None


# ---------------------------------------------------------------------------
# reading


class _Table:
    """The raw cells of a dataset (text), with its columns found case-insensitively."""

    def __init__(self, path: Path, source: NonmemSource | None = None):
        self.file = str(path)
        if source is not None:
            raw = read_source(source, path)
        else:
            raw = self._csv(path)
        self.names: dict[str, str] = {str(c).upper(): str(c) for c in raw.columns}
        self.raw = raw
        self.n = len(raw)
        if self.n == 0:
            raise DatasetError(self.file, None, None, "the file has no data rows")
        for required in ("ID", "TIME"):
            if required not in self.names:
                raise DatasetError(self.file, None, required, f"required column missing (columns: {', '.join(raw.columns)})")

    @staticmethod
    def _csv(path: Path) -> pd.DataFrame:
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        header = check_shape(path)
        try:
            raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except Exception as e:  # pandas raises many types for unreadable files
            raise DataError(f"{path}: cannot be read as CSV ({e})") from None
        if len(raw.columns) != len(header):
            raise DataError(f"{path}: cannot be read as CSV ({len(raw.columns)} columns read, {len(header)} in the header)")
        raw.columns = [name or str(c).strip() for name, c in zip(header, raw.columns)]  # pandas names unnamed columns
        return raw

    def has(self, column: str) -> bool:
        return column in self.names

    def text(self, column: str) -> np.ndarray:
        return self.raw[self.names[column]].astype(str).str.strip().to_numpy()

    def error(self, i: int | None, column: str | None, rule: str) -> DatasetError:
        shown = self.names.get(column, column) if column is not None else None
        return DatasetError(self.file, None if i is None else int(i) + 1, shown, rule)

    def numbers(self, column: str, default: float = np.nan) -> tuple[np.ndarray, np.ndarray]:
        """(values, missing) of a numeric column; "." and blanks are missing (value `default`)."""
        if not self.has(column):
            return np.full(self.n, default), np.ones(self.n, bool)
        cells = self.text(column)
        missing = (cells == ".") | (cells == "")
        values = pd.to_numeric(pd.Series(np.where(missing, "nan", cells)), errors="coerce").to_numpy(dtype=float, copy=True)
        bad = np.flatnonzero(~missing & ~np.isfinite(values))
        if bad.size:
            i = bad[0]
            raise self.error(i, column, f"{cells[i]!r} is not a finite number (use plain numbers; '.' for missing)")
        values[missing] = default
        return values, missing

    def whole(self, column: str, values: np.ndarray, missing: np.ndarray, lo: int, hi: int | None, what: str) -> np.ndarray:
        bad = np.flatnonzero(~missing & ((values != np.round(values)) | (values < lo) | ((values > hi) if hi is not None else False)))
        if bad.size:
            i = bad[0]
            raise self.error(i, column, f"{values[i]:g} is not {what}")
        return values


def _first_row(ids: np.ndarray) -> np.ndarray:
    return np.r_[True, ids[1:] != ids[:-1]] if ids.size else np.zeros(0, bool)


def read_nonmem(
    path: str | os.PathLike, model: Model, data: DataSpec | Mapping | None = None, *, dv_required: bool = True,
    required_covariates: Mapping[str, str] | None = None, max_dose_records: int = MAX_DOSE_RECORDS,
) -> PopulationData:
    """Read a NONMEM-style CSV dataset for `model` (see the module's table of columns).

    **Arguments:**
    - `path`: the CSV file;
    - `model`: the registry model the data will be fitted with (its routes, observables,
      covariates and units);
    - `data`: how the dataset maps onto the model (`DataSpec`, or the `[data]` table of
      a fit config as a mapping): units of AMT, TIME and DV, CMT/DVID values of routes
      and observables, covariate columns;
    - `required_covariates`: covariate -> what needs it (e.g. "covariate_effects.0"): a
      covariate the dataset lacks is an error then (otherwise the model's reference value
      stands in for it, which the caller reports);
    - `max_dose_records`: dose records per subject after ADDL expansion (a fit passes its
      own, lower limit).
    - `dv_required`: False accepts observation rows without a DV (their `dv` is NaN):
      records to predict rather than fit.

    **Returns:** `PopulationData`, subjects in file order; dose amounts in mg (mg/kg
    with `per_kg` 1 when `amt_unit` is per kg), observations sorted as in the file, each
    with its 1-based data row (`obs_row`).

    **Raises:** `SpecError` naming `data.<key>` for a bad mapping; `DatasetError` (a
    `DataError`) naming the file, row, column and rule for a malformed row.
    """
    spec = data_spec(data)
    res = _resolve(model, spec)
    t = _Table(Path(path), spec.source)
    n = t.n

    id_cells = t.text("ID")
    blank = np.flatnonzero((id_cells == ".") | (id_cells == ""))
    if blank.size:
        raise t.error(blank[0], "ID", "every row needs a subject ID")
    ids = np.array([_id_key(v) for v in id_cells], dtype=object)
    starts = np.flatnonzero(_first_row(ids))
    seen: dict[str, int] = {}
    for s in starts:
        if ids[s] in seen:
            raise t.error(s, "ID", f"ID {id_cells[s]} appears again after other subjects (first at row {seen[ids[s]] + 1}); "
                                   "a subject's rows must be contiguous (NONMEM would read a new subject here): sort by ID, TIME")
        seen[ids[s]] = s
    subject = np.cumsum(_first_row(ids)) - 1

    time, miss = t.numbers("TIME")
    if miss.any():
        raise t.error(np.flatnonzero(miss)[0], "TIME", "every row needs a time")
    if np.any(time < 0):
        raise t.error(np.flatnonzero(time < 0)[0], "TIME", f"negative time {time[time < 0][0]:g}; shift TIME so that it starts at 0")
    back = np.flatnonzero((np.diff(time) < 0) & (subject[1:] == subject[:-1]))
    if back.size:
        i = back[0] + 1
        raise t.error(i, "TIME", f"time {time[i]:g} is before the previous row's {time[i - 1]:g}; times must not decrease within a subject")
    time_h = time * res.time_factor

    amt, amt_missing = t.numbers("AMT", 0.0)
    mdv, mdv_missing = t.numbers("MDV", 0.0)
    t.whole("MDV", mdv, mdv_missing, 0, 1, "0 or 1")
    if t.has("EVID"):
        evid, evid_missing = t.numbers("EVID")
        if evid_missing.any():
            raise t.error(np.flatnonzero(evid_missing)[0], "EVID", "missing; give 0 (observation), 1 (dose) or 2 (other)")
        t.whole("EVID", evid, evid_missing, 0, 4, "an event type 0-4 (0 observation, 1 dose, 2 other, 3 reset, 4 reset and dose)")
    else:  # NONMEM without EVID: a row with an amount is a dose, MDV = 1 marks other rows
        evid = np.where(amt > 0, 1.0, np.where(mdv == 1, 2.0, 0.0))
    evid_given = evid
    first = np.zeros(n, bool)
    first[starts] = True
    # A reset (EVID 3, or 4: reset and dose) is a record of its own; at a subject's first
    # row it changes nothing.
    is_reset = (evid >= 3) & ~first
    evid = np.where(evid == 4, 1.0, np.where(evid == 3, 2.0, evid))
    is_dose = evid == 1
    is_obs = (evid == 0) & (mdv == 0)

    # -- doses -----------------------------------------------------------------------
    bad = np.flatnonzero(is_dose & ~mdv_missing & (mdv == 0)) if t.has("MDV") else np.zeros(0, int)
    if bad.size:
        raise t.error(bad[0], "MDV", "a dose row (EVID 1) must have MDV = 1; put an observation at the dose time on its own row")
    bad = np.flatnonzero(is_dose & (amt_missing | (amt < 0)))
    if bad.size:
        raise t.error(bad[0], "AMT", "a dose row needs an amount >= 0")
    bad = np.flatnonzero(~is_dose & ~amt_missing & (amt != 0))
    if bad.size:
        raise t.error(bad[0], "AMT", f"amount {amt[bad[0]]:g} on a row that is not a dose (EVID {int(evid_given[bad[0]])}); "
                                     "give EVID 1 (or 4) or set AMT to 0 or '.'")
    rate, rate_missing = t.numbers("RATE", 0.0)
    bad = np.flatnonzero((rate < 0) & ~(is_dose & np.isin(rate, (-1.0, -2.0))))
    if bad.size:
        raise t.error(bad[0], "RATE", f"rate {rate[bad[0]]:g} is negative; give 0 for a bolus, the infusion rate, or -1/-2 "
                                      "on a dose row (rate/duration from the model)")
    bad = np.flatnonzero(~is_dose & (rate != 0))
    if bad.size:
        raise t.error(bad[0], "RATE", "a rate on a row that is not a dose")
    ss, ss_missing = t.numbers("SS", 0.0)
    t.whole("SS", ss, ss_missing, 0, 3, "a steady-state flag 0, 1 or 2")
    bad = np.flatnonzero(ss == 3)
    if bad.size:
        raise t.error(bad[0], "SS", "SS = 3 (steady state added to the current amounts with a reset of PREDPP's "
                                    "steady-state bookkeeping) is not supported; use SS = 1 or 2")
    bad = np.flatnonzero(~is_dose & (ss != 0))
    if bad.size:
        raise t.error(bad[0], "SS", "a steady-state flag on a row that is not a dose")
    ii, _ = t.numbers("II", 0.0)
    addl, addl_missing = t.numbers("ADDL", 0.0)
    t.whole("ADDL", addl, addl_missing, 0, None, "a whole number of additional doses >= 0")
    bad = np.flatnonzero(ii < 0)
    if bad.size:
        raise t.error(bad[0], "II", f"interdose interval {ii[bad[0]]:g} is negative")
    bad = np.flatnonzero(~is_dose & ((ii != 0) | (addl != 0)))
    if bad.size:
        raise t.error(bad[0], "II" if ii[bad[0]] != 0 else "ADDL", "II/ADDL on a row that is not a dose")
    constant_ss = (ss > 0) & (ii == 0) & (amt == 0) & (rate > 0)  # an infusion at steady state, never stopping
    bad = np.flatnonzero(is_dose & (ss > 0) & (ii <= 0) & ~constant_ss)
    if bad.size:
        raise t.error(bad[0], "SS", f"a steady-state dose (SS = {int(ss[bad[0]])}) needs its interdose interval II > 0 "
                                    "(or AMT = 0 with RATE > 0 and II = 0: an infusion at steady state)")
    bad = np.flatnonzero(is_dose & (addl > 0) & (ii <= 0))
    if bad.size:
        raise t.error(bad[0], "II", f"ADDL = {int(addl[bad[0]])} additional doses need an interdose interval II > 0")
    limit = f"{max_dose_records:,}" + ("" if max_dose_records == MAX_DOSE_RECORDS else " in a fit (see the README's fit limits)")
    bad = np.flatnonzero(is_dose & (addl + 1 > max_dose_records))
    if bad.size:
        raise t.error(bad[0], "ADDL", f"{int(addl[bad[0]])} additional doses; the limit of dose records per subject is {limit}")

    cmt_cells = t.text("CMT") if t.has("CMT") else np.full(n, ".", dtype=object)
    route = np.zeros(n, np.int64)
    routes_of: dict[str, int] = {}  # each distinct CMT is resolved once, at its first row (which errors name)
    for i in np.flatnonzero(is_dose):
        if cmt_cells[i] not in routes_of:
            routes_of[cmt_cells[i]] = dose_route(model, res, t, i, cmt_cells[i])
        route[i] = routes_of[cmt_cells[i]]
    for code, attr, what in ((-1, "rate", "rate"), (-2, "duration", "duration")):
        for i in np.flatnonzero(is_dose & (rate == code)):
            r = model.routes[route[i]]
            if getattr(r, attr) is None:
                raise t.error(i, "RATE", f"RATE = {code} takes the infusion's modelled {what} from the model, but route "
                                         f"{r.name!r} of model {model.name} names no {what} (Route.{attr}); give the rate in RATE")

    # -- observations ------------------------------------------------------------------
    dv, dv_missing = t.numbers("DV")
    cens, dv, dv_missing = censored_observations(t, is_obs, dv, dv_missing)  # CENS, BLQ, LLOQ
    if not t.has("DV") and is_obs.any():
        raise t.error(None, "DV", "required column missing: the dataset has observation rows")
    bad = np.flatnonzero(is_obs & dv_missing) if dv_required else np.zeros(0, int)
    if bad.size:
        raise t.error(bad[0], "DV", "an observation row (EVID 0, MDV 0) needs a value; set MDV = 1 to leave it out")
    if not is_obs.any():
        raise t.error(None, "EVID", "the dataset has no observation rows (EVID 0 with MDV 0)")
    observable = np.full(n, -1, np.int64)
    dvid_cells = t.text("DVID") if t.has("DVID") else None
    observable_of: dict[tuple, int] = {}
    for i in np.flatnonzero(is_obs):
        key = (cmt_cells[i], None if dvid_cells is None else dvid_cells[i])
        if key not in observable_of:
            observable_of[key] = _observable(model, res, t, i, *key)
        observable[i] = observable_of[key]

    if res.observable_by == "single" and dvid_cells is not None:
        _check_single_dvid(model, res, t, is_obs, dvid_cells)

    record_items = {c.name for c in model.covariates} & {
        getattr(r, a) for r in model.routes for a in ("bioavailability", "lag", "rate", "duration")
    }
    covariates, row_covariates = _covariates(model, res, t, subject, starts, record_items)
    require_covariates(res, t, covariates, required_covariates or {})
    if res.per_kg and "bw" not in covariates:
        raise t.error(None, res.covariate_columns.get("bw", "BW"), "amounts are per kg (data.amt_unit); the dataset needs a body-weight column")

    check_magnitudes(t, res, time, time_h, amt, rate, ii, addl, dv, is_dose, is_obs)

    # -- padding -------------------------------------------------------------------------
    n_subjects = starts.size
    records = np.bincount(subject[is_dose], weights=addl[is_dose] + 1, minlength=n_subjects)
    if records.size and records.max() > max_dose_records:
        s = int(np.argmax(records))
        raise t.error(starts[s], "ADDL", f"subject {id_cells[starts[s]]} has {int(records[s]):,} dose records after ADDL "
                                         f"expansion; the limit is {limit}")
    doses = dose_records(model, res, t, subject, starts, time_h, amt, rate, ss, ii, addl, route, is_dose, is_reset,
                         row_covariates, record_items)

    obs_rows = np.flatnonzero(is_obs)
    per_subject = np.bincount(subject[obs_rows], minlength=n_subjects)
    n_obs = int(per_subject.max())
    obs_time = np.zeros((n_subjects, n_obs))
    obs_observable = np.zeros((n_subjects, n_obs), np.int64)
    dv_out = np.zeros((n_subjects, n_obs))
    obs_mask = np.zeros((n_subjects, n_obs), bool)
    obs_row = np.full((n_subjects, n_obs), -1, np.int64)
    position = np.arange(obs_rows.size) - np.searchsorted(subject[obs_rows], subject[obs_rows])
    s, j = subject[obs_rows], position
    obs_time[s, j], obs_observable[s, j], dv_out[s, j] = time_h[obs_rows], observable[obs_rows], dv[obs_rows]
    obs_mask[s, j], obs_row[s, j] = True, obs_rows + 1
    obs_cens = np.zeros((n_subjects, n_obs), np.int64)
    obs_cens[s, j] = cens[obs_rows]
    for k in range(n_subjects):  # padding repeats the last time (save times stay sorted)
        m = per_subject[k]
        if 0 < m < n_obs:
            obs_time[k, m:] = obs_time[k, m - 1]
            obs_observable[k, m:] = obs_observable[k, m - 1]
    return PopulationData(
        ids=_id_values(id_cells[starts]), doses=doses, obs_time_h=obs_time, obs_observable=obs_observable, dv=dv_out,
        obs_mask=obs_mask, covariates=covariates, dv_scale=res.dv_scale.copy(), obs_row=obs_row,
        cens=obs_cens if obs_cens.any() else None,
        occasions=read_occasions(t, spec.occasion, subject, time_h, obs_rows, obs_time.shape),
    )


def _id_key(cell: str) -> str:
    """An ID as compared: numbers by value ("7" and "7.0" are one subject), text as written."""
    try:
        number = float(cell)
    except ValueError:
        return cell
    if not math.isfinite(number):
        return cell
    return str(int(number)) if number.is_integer() else repr(number)


def _id_values(cells: np.ndarray) -> np.ndarray:
    """Subject IDs as whole numbers where they all are, as numbers where they all are
    finite numbers, as text otherwise."""
    try:
        values = np.array([float(c) for c in cells])
    except ValueError:
        return np.asarray(cells, dtype=object)
    if not np.all(np.isfinite(values)):
        return np.asarray(cells, dtype=object)
    return values.astype(np.int64) if np.all(values == np.round(values)) else values


def _observable(model: Model, res: _Resolved, t: _Table, i: int, cmt: str, dvid: str | None) -> int:
    names = model.observable_names
    if res.observable_by == "single":
        return res.observable_of_key[""]  # rows with other DVID values are refused by `_check_single_dvid`
    if res.observable_by in ("dvid", "cmt"):
        column = res.observable_by.upper()
        cell = dvid if column == "DVID" else cmt
        if column == "DVID" and dvid is None:
            raise t.error(None, "DVID", "[data.observables] maps DVID values, but the dataset has no DVID column")
        k = _key(cell)
        if k not in res.observable_of_key:
            raise t.error(i, column, f"{column} {cell!r} is not mapped to an observable in [data.observables] "
                                     f"(mapped: {', '.join(res.observable_of_key)})")
        return res.observable_of_key[k]
    # default: DVID numbers (or names) the model's observables; without DVID, the only observable
    if dvid is not None and dvid not in (".", ""):
        k = _key(dvid)
        if k.isdigit() and 1 <= int(k) <= len(names):
            return int(k) - 1
        if k in [o.lower() for o in names]:
            return [o.lower() for o in names].index(k)
        raise t.error(i, "DVID", f"DVID {dvid!r} is neither an observable number 1-{len(names)} nor a name "
                                 f"({', '.join(names)}); map it in [data.observables]")
    if len(names) == 1:
        return 0
    if cmt not in (".", "") and _key(cmt) in [o.lower() for o in names]:
        return [o.lower() for o in names].index(_key(cmt))
    raise t.error(i, "DVID", f"model {model.name} has several observables ({', '.join(names)}): say which this row is "
                             "with a DVID column, or map CMT/DVID values in [data.observables]")


def _check_single_dvid(model: Model, res: _Resolved, t: _Table, is_obs: np.ndarray, dvid_cells: np.ndarray) -> None:
    """With one observable in [data.observables] and no `dvid`/`cmt` there, every
    observation is that observable: a DVID column that tells several apart contradicts it."""
    name = model.observable_names[res.observable_of_key[""]]
    rows = np.flatnonzero(is_obs & ~np.isin(dvid_cells, (".", "")))
    keys = [_key(dvid_cells[i]) for i in rows]
    if len(set(keys)) > 1:
        first = keys[0]
        i = rows[next(k for k, key in enumerate(keys) if key != first)]
        raise t.error(i, "DVID", f"DVID {dvid_cells[i]} differs from DVID {dvid_cells[rows[0]]} of row {rows[0] + 1}, but "
                                 f"[data.observables] maps every observation to {name!r} (it gives no dvid); say which DVID "
                                 f"values are {name!r}: dvid = [{dvid_cells[rows[0]]}] (rows with other DVID values are then "
                                 "refused: set their MDV = 1 to leave them out)")


def _covariates(model: Model, res: _Resolved, t: _Table, subject: np.ndarray, starts: np.ndarray,
                record_items: set[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(per subject: its first value; per row: the row's value, missing cells carried
    forward within the subject from its first value). Covariates may change within a
    subject (`_dose_records` makes the changes events); a covariate that a route names
    (lag, bioavailability, rate, duration) is taken by each dose from its own row."""
    out, per_row = {}, {}
    for cov in model.covariate_names:
        column = res.covariate_columns.get(cov, cov).upper()
        if cov == "bw" and "bw" not in res.covariate_columns and not t.has("BW") and t.has("WT"):
            column = "WT"  # NONMEM datasets usually call the body weight WT
        if not t.has(column):
            if cov in res.covariate_columns:
                raise t.error(None, res.covariate_columns[cov], f"column missing (data.covariates.{cov} names it)")
            continue
        values, missing = t.numbers(column)
        first = np.full(starts.size, np.nan)
        first_row = np.full(starts.size, -1)
        for i in np.flatnonzero(~missing):  # the first value given in each subject
            s = subject[i]
            if first_row[s] < 0:
                first[s], first_row[s] = values[i], i
        lacking = np.flatnonzero(first_row < 0)
        if lacking.size:
            raise t.error(starts[lacking[0]], column, f"subject {t.text('ID')[starts[lacking[0]]]} has no value of covariate {cov}")
        if cov in record_items and cov != "bw":
            bad = np.flatnonzero(~missing & ~(values >= 0))
            if bad.size:
                raise t.error(bad[0], column, f"{values[bad[0]]:g} is not allowed: dose item {cov} must be >= 0")
        else:
            # The model's own rule (> 0, any number, codes), on every row's value.
            not_allowed, rule = model.covariate(cov).check(values)
            bad = np.flatnonzero(~missing & not_allowed)
            if bad.size:
                raise t.error(bad[0], column, f"{values[bad[0]]:g} is not allowed: {rule}")
        out[cov] = first
        filled = pd.Series(np.where(missing, np.nan, values)).groupby(subject).ffill().to_numpy()
        per_row[cov] = np.where(np.isnan(filled), first[subject], filled)
    return out, per_row

