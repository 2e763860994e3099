"""Virtual trials: arms of animals under regimens, and the one trial pipeline.

- `prepare_trial` draws (or takes) the animals of every arm and lowers every arm's regimen
  to padded dose records (`TrialInputs`); nothing is solved.
- `trial_chunks` is the trial pipeline: one iterator over the chunks of the batched solve
  (`vtrial.engine.runner`) that yields, per chunk, the rows of its animals, their
  predictions, their observations with residual error, their status and solver steps
  (`TrialChunk`). `simulate` collects it into a `SimulationResult`; the `trial` job streams
  it to files; dose optimisation and power analysis loop over it.

Randomness: arm `a`, animal at position `i` of its arm draws its parameters from
`fold_in(fold_in(PRNGKey(seed), a), i)` and its residual error from a key derived from
the same two numbers and the observable's name, so adding arms or animals never changes
the animals already there, and no result depends on chunk size, order or devices.
Animal IDs (the `animal` column) can be any values; keys use positions, never IDs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import jax
import numpy as np
import pandas as pd

from vtrial.analysis.tables import frame, observation_columns, trajectory_columns
from vtrial.design.dosing import Regimen, lower_regimens
from vtrial.design.occasions import trial_occasions
from vtrial.design.population import Population, ResidualDraw, arm_keys
from vtrial.engine.events import CovariateChanges, DoseRecords
from vtrial.engine.exposure import exposure_spec, result_name
from vtrial.engine.runner import ChunkResult, PopulationChunks, PopulationSolution, check_times, gather, iter_population_chunks
from vtrial.engine.solve import STATUS_NAMES, SolverOptions
from vtrial.errors import SpecError
from vtrial.models.base import Endpoint, Model


@dataclass(frozen=True)
class Arm:
    """A treatment arm: a name, a regimen, how many animals, and parameter values that hold
    for every animal of this arm (e.g. a knockout switch, a strain's baseline), replacing
    both the typical value and its variability."""

    name: str
    regimen: Regimen = Regimen()
    n_animals: int = 100
    parameters: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.n_animals, bool) or not (isinstance(self.n_animals, int) and self.n_animals >= 1):
            raise SpecError(f"arms.{self.name}.n_animals", f"must be a whole number >= 1, got {self.n_animals!r}")


@dataclass(frozen=True)
class TrialInputs:
    """What a trial solves, before solving.

    - `arms`, `population`;
    - `animals`: one row per animal: `arm`, `arm_index`, `animal` (its ID), parameters,
      covariates; rows are grouped by arm (arm order), animals in order within an arm;
    - `position`: `(n_animals,)` each animal's position within its arm (keys its draws);
    - `params`: the runner's parameters (name -> `(n_animals,)`); `doses`: `DoseRecords`.
    """

    arms: tuple[Arm, ...]
    population: Population
    animals: pd.DataFrame
    position: np.ndarray
    params: dict[str, np.ndarray]
    doses: DoseRecords

    @property
    def arm_index(self) -> np.ndarray:
        return self.animals["arm_index"].to_numpy()


def _check_arms(model: Model, arms) -> tuple[Arm, ...]:
    arms = tuple(arms)
    if not arms:
        raise SpecError("arms", "at least one arm is needed")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise SpecError("arms", "arm names must be unique")
    for i, arm in enumerate(arms):
        for name in arm.parameters:
            if name not in model.parameter_names:
                raise SpecError(f"arms.{i}.parameters.{name}", f"unknown parameter of model {model.name}; known: {', '.join(model.parameter_names)}")
        model.validate_values(arm.parameters, f"arms.{i}.parameters")
    return arms


def _drawn_animals(model, population, arms, seed, typical) -> pd.DataFrame:
    needed = list(model.parameter_names) + list(model.covariate_names)
    keys = None if typical else arm_keys(seed, len(arms))
    tables = []
    for a, arm in enumerate(arms):
        p = population.typical_animals(1) if typical else population.sample(keys[a], arm.n_animals)
        n = len(next(iter(p.values())))
        df = pd.DataFrame({"arm": arm.name, "arm_index": a, "animal": np.arange(n)})
        for k in needed:
            df[k] = np.asarray(arm.parameters.get(k, p[k]), dtype=float) * np.ones(n)
        tables.append(df)
    return pd.concat(tables, ignore_index=True)


#: Columns a run writes into its animals table (`animals.parquet`) that are results, not
#: inputs: accepted in an animals table (so a run's own file can be fed back) and ignored.
OUTPUT_COLUMNS = ("status", "n_steps")


def _given_animals(model, population, arms, animals) -> pd.DataFrame:
    """The checked animals table. A column that an arm fixes (`Arm.parameters`) must hold
    the arm's value for that arm's animals (a run's own animals.parquet does); another
    value is refused, naming the row, animal, arm and column. Every arm needs animals."""
    needed = list(model.parameter_names) + list(model.covariate_names)
    if not isinstance(animals, pd.DataFrame):
        raise SpecError("animals", "must be a pandas DataFrame")
    for col in ("arm", "animal"):
        if col not in animals.columns:
            raise SpecError(f"animals.{col}", "column missing; the table needs 'arm', 'animal' and parameter columns")
    animals = animals.drop(columns=[c for c in OUTPUT_COLUMNS if c in animals.columns])
    if TIME_COLUMN in animals.columns:  # long form: an animal's first row, its covariates' changes apart
        animals = _first_rows(model, animals)
    unknown = [c for c in animals.columns if c not in set(needed) | {"arm", "animal"}]
    if unknown:
        raise SpecError(f"animals.{unknown[0]}", f"unknown parameter of model {model.name}; known: {', '.join(needed)}")
    if len(animals) == 0:
        raise SpecError("animals", "the table has no animals (only a header); give one row per animal")
    arm_names = [a.name for a in arms]
    blank = animals["arm"].isna().to_numpy()
    if blank.any():
        raise SpecError("animals.arm", f"row {int(np.flatnonzero(blank)[0]) + 1}: no arm; name one of: {', '.join(arm_names)}")
    arm_of = animals["arm"].map(str)
    bad = sorted(set(arm_of) - set(arm_names))
    if bad:
        raise SpecError("animals.arm", f"unknown arm {bad[0]!r}; arms: {', '.join(arm_names)}")
    df = pd.DataFrame({"arm": arm_of.to_numpy(), "animal": animals["animal"].to_numpy()})
    df["arm_index"] = df["arm"].map({n: i for i, n in enumerate(arm_names)}).astype(int)
    duplicated = df.duplicated(["arm_index", "animal"]).to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise SpecError("animals.animal", f"row {row + 1}: animal {df['animal'].iloc[row]!r} appears twice in arm {df['arm'].iloc[row]!r}; IDs must be unique within an arm")
    typical = population.typical_parameters()
    for k in needed:
        if k in animals.columns:
            df[k] = _numeric_column(animals[k], f"animals.{k}")
        else:
            df[k] = float(typical[k])
    for a, arm in enumerate(arms):  # an arm's own values hold; a column may repeat them, not change them
        rows = (df["arm_index"] == a).to_numpy()
        for k, v in arm.parameters.items():
            if k in animals.columns:
                differ = rows & ~np.isclose(df[k].to_numpy(), float(v), rtol=1e-12, atol=0.0)
                if differ.any():
                    r = int(np.flatnonzero(differ)[0])
                    raise SpecError(f"animals.{k}", f"row {r + 1}: animal {df['animal'].tolist()[r]!r} of arm {arm.name!r} has "
                                                    f"{k} = {df[k].iloc[r]:g}, but the arm fixes {k} = {float(v):g} "
                                                    f"(arms.{a}.parameters); give the arm's value or drop the column")
            df.loc[rows, k] = float(v)
    model.validate_values({k: df[k].to_numpy() for k in needed}, "animals")
    empty = [n for n in arm_names if n not in set(arm_of)]
    if empty:
        raise SpecError("animals.arm", f"arm {empty[0]!r} has no animals in the table; give rows for it, "
                                       f"or remove the arm from the config (arms in the table: {', '.join(sorted(set(arm_of)))})")
    try:  # animals in ID order within an arm, where the IDs can be ordered (not, e.g., 3 and "R7")
        df = df.sort_values(["arm_index", "animal"], kind="stable")
    except TypeError:
        df = df.sort_values("arm_index", kind="stable")
    return df.reset_index(drop=True)[["arm", "arm_index", "animal", *needed]]


#: The column of a long-form animals table: several rows per animal, a row's covariates
#: holding for the interval that ends at its time (NONMEM's next observation carried back).
TIME_COLUMN = "time_h"


def _long_rows(model, animals: pd.DataFrame) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """A long-form table checked and sorted by animal and time (file order kept for the
    errors' row numbers in `row`), and the row positions of each animal."""
    times = _numeric_column(animals[TIME_COLUMN], f"animals.{TIME_COLUMN}")
    if np.any(times < 0):
        row = int(np.flatnonzero(times < 0)[0])
        raise SpecError(f"animals.{TIME_COLUMN}", f"row {row + 1}: {times[row]:g} h is before the trial's start (give times >= 0)")
    df = animals.assign(**{TIME_COLUMN: times, "row": np.arange(len(animals))})
    key = [df["arm"].map(str), df["animal"].map(str)]
    groups = [g["row"].to_numpy() for _, g in df.groupby(key, sort=False)]
    covariates = [c for c in model.covariate_names if c in animals.columns]
    model.validate_values({c: _numeric_column(animals[c], f"animals.{c}") for c in covariates}, "animals")
    fixed = [c for c in animals.columns if c in model.parameter_names]
    animal_ids = animals["animal"].tolist()
    for rows in groups:
        t = times[rows]
        _, first = np.unique(t, return_index=True)
        if first.size < t.size:
            dup = int(rows[np.setdiff1d(np.arange(t.size), first)[0]])
            raise SpecError(f"animals.{TIME_COLUMN}", f"row {dup + 1}: animal {animal_ids[dup]!r} of arm "
                                                      f"{str(df['arm'].iloc[dup])!r} has two rows at {times[dup]:g} h")
        for c in fixed:  # parameters are the animal's; only covariates change over time
            v = animals[c].iloc[rows].to_numpy()
            differ = np.flatnonzero(pd.Series(v).ne(v[0]).to_numpy())
            if differ.size:
                r = int(rows[differ[0]])
                raise SpecError(f"animals.{c}", f"row {r + 1}: animal {animal_ids[r]!r} changes parameter {c} "
                                                f"over time; only covariates ({', '.join(model.covariate_names) or 'none'}) "
                                                "may change: give the same value on every row of the animal")
    return df, [rows[np.argsort(times[rows], kind="stable")] for rows in groups]


def _first_rows(model, animals: pd.DataFrame) -> pd.DataFrame:
    """Each animal's earliest row of a long-form table (its values up to that time)."""
    df, groups = _long_rows(model, animals)
    return animals.iloc[[int(rows[0]) for rows in groups]].drop(columns=[TIME_COLUMN]).reset_index(drop=True)


def animal_covariate_changes(model, animals: pd.DataFrame, table: pd.DataFrame) -> CovariateChanges | None:
    """The covariate changes of the animals of `table` (checked, one row per animal) from
    the long-form table `animals` (None without a `time_h` column or any change): a row's values hold
    for the interval that ends at its time, so a value differing from the row before
    takes effect at that earlier row's time; after an animal's last row its values hold."""
    if TIME_COLUMN not in animals.columns:
        return None
    df, groups = _long_rows(model, animals)
    names = model.covariate_names
    by_key = {}
    for rows in groups:
        t = df[TIME_COLUMN].to_numpy()[rows]
        v = np.stack([_numeric_column(animals[c].iloc[rows], f"animals.{c}") if c in animals.columns
                      else np.full(rows.size, np.nan) for c in names], axis=1) if names else np.zeros((rows.size, 0))
        differs = [k for k in range(1, rows.size) if np.any((v[k] != v[k - 1]) & ~(np.isnan(v[k]) & np.isnan(v[k - 1])))]
        by_key[(str(df["arm"].iloc[rows[0]]), str(df["animal"].iloc[rows[0]]))] = [(t[k - 1], v[k]) for k in differs]
    changes = [by_key[(str(a), str(i))] for a, i in zip(table["arm"], table["animal"])]
    if not any(changes):  # nothing changes: plain animals (no events, the one-solve path)
        return None
    m = max(len(c) for c in changes)
    times = np.zeros((len(table), m))
    values = np.full((len(table), m, len(names)), np.nan)  # NaN: the animal's own value (no change yet)
    for j, c in enumerate(changes):
        if c:
            c = c + [c[-1]] * (m - len(c))
            times[j] = [x[0] for x in c]
            values[j] = [x[1] for x in c]
    return CovariateChanges(times, values)


def _numeric_column(column: pd.Series, field: str) -> np.ndarray:
    """A column of real numbers: no text, booleans, blanks or non-finite values."""
    if pd.api.types.is_bool_dtype(column):
        raise SpecError(field, "holds true/false values; give numbers")
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna().to_numpy() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise SpecError(field, f"row {row + 1}: {column.iloc[row]!r} is not a finite number")
    return values.to_numpy(dtype=float)


def check_trial(
    model: Model,
    arms: Regimen | Sequence[Arm],
    population: Population | None = None,
    *,
    times_h: Sequence[float],
    n_animals: int = 100,
    animals: pd.DataFrame | None = None,
    t0: float = 0.0,
) -> tuple[tuple[Arm, ...], Population, DoseRecords, pd.DataFrame | None]:
    """Everything `prepare_trial` checks, without drawing animals: arms, population,
    regimens, output times and (when given) the animals table. Returns the arms, the
    population, the arms' dose records `(n_arms, n_records)` and the checked table."""
    if isinstance(arms, Regimen):
        arms = (Arm("arm", arms, n_animals),)
    arms = _check_arms(model, arms)
    population = population or Population(model)
    if population.model is not model:
        raise SpecError("population", "was built for a different model")
    arm_records = lower_regimens(model, [a.regimen for a in arms])  # (n_arms, n_records)
    check_times(times_h, t0)
    table = _given_animals(model, population, arms, animals) if animals is not None else None
    return arms, population, arm_records, table


def prepare_trial(
    model: Model,
    arms: Regimen | Sequence[Arm],
    population: Population | None = None,
    *,
    times_h: Sequence[float],
    n_animals: int = 100,
    seed: int = 0,
    typical: bool = False,
    animals: pd.DataFrame | None = None,
    t0: float = 0.0,
) -> TrialInputs:
    """Check a trial (`check_trial`) and draw (or take) its animals; arguments as
    `simulate`. Nothing is solved."""
    arms, population, arm_records, table = check_trial(model, arms, population, times_h=times_h, n_animals=n_animals,
                                                       animals=animals, t0=t0)
    if table is None:
        table = _drawn_animals(model, population, arms, seed, typical)
    arm_index = table["arm_index"].to_numpy()
    position = np.arange(len(table)) - np.searchsorted(arm_index, arm_index)  # rows are grouped by arm
    doses = arm_records.take(arm_index)
    changes = animal_covariate_changes(model, animals, table) if animals is not None else None
    if changes is not None:  # covariates that change within an animal: events of its solve
        doses = doses._replace(changes=changes)
    params = {k: table[k].to_numpy() for k in (*model.parameter_names, *model.covariate_names)}
    if population.iov and population.occasion_start_h and not typical:  # a kappa per occasion and animal
        doses = trial_occasions(population, params, doses, seed, arm_index, position)
    return TrialInputs(arms, population, table, position, params, doses)


# ---------------------------------------------------------------------------
# the trial pipeline


#: The runner's key of an endpoint computed in the solve (`vtrial.engine.exposure`).
EXACT_PREFIX = result_name("")


@dataclass(frozen=True)
class TrialChunk:
    """One chunk of a trial, in simulation order (`vtrial.engine.runner.ChunkResult` plus
    what the trial adds).

    - `rows`: `(m,)` rows of `TrialInputs.animals`;
    - `predictions`: observable -> `(m, n_times)`, NaN where the animal failed;
    - `observations`: observable -> `(m, n_times)` with residual error, for the observed
      observables (at every output time: a sampling scheme masks them);
    - `status`, `n_steps`: `(m,)`;
    - `states`: `(m, n_times, n_states)` or None; `result`: the runner's chunk;
    - `exact`: endpoint name -> `(m,)`, the endpoints computed from the solver
      (`trial_chunks(endpoints=...)`, `vtrial.engine.exposure`), NaN where the animal failed.
    """

    rows: np.ndarray
    predictions: dict[str, np.ndarray]
    observations: dict[str, np.ndarray]
    status: np.ndarray
    n_steps: np.ndarray
    states: np.ndarray | None
    result: ChunkResult
    exact: dict[str, np.ndarray] = field(default_factory=dict)


class TrialChunks:
    """The chunks of a trial, solved as they are iterated (iterate once); see `trial_chunks`.

    While and after iterating: `plan`, `compile_seconds`, `run_seconds` (wall time of the
    iteration, compilation excluded: the solve and what the pipeline does per chunk),
    `chunks_computed`, `chunks_resumed`, `lockstep_waste`, `mesh`.
    """

    def __init__(self, model: Model, inputs: TrialInputs, runner: PopulationChunks, observed: Sequence[str], with_error: bool):
        self.model, self.inputs, self.runner = model, inputs, runner
        self.observed, self.with_error = tuple(observed), with_error
        self.run_seconds = 0.0

    def __getattr__(self, name):  # plan, compile_seconds, lockstep_waste, ... of the runner
        if name == "runner":
            raise AttributeError(name)
        return getattr(self.runner, name)

    def __iter__(self) -> Iterator[TrialChunk]:
        start = time.perf_counter()
        for res in self.runner:
            source = res.extras if self.with_error else res.observables
            observations = {name: source[name] for name in self.observed}
            exact = {name.removeprefix(EXACT_PREFIX): v for name, v in res.extras.items() if name.startswith(EXACT_PREFIX)}
            yield TrialChunk(res.animals, res.observables, observations, res.status, res.n_steps, res.states, res, exact)
        self.run_seconds = time.perf_counter() - start - self.runner.compile_seconds


def check_observed(population: Population, observed: Sequence[str]) -> None:
    """Observables drawn with residual error need a residual error model."""
    for name in observed:
        if name not in population.residual:
            raise SpecError(f"residual.{name}", f"observable {name!r} is sampled but has no residual error model; add [residual.{name}]")


def trial_chunks(
    model: Model,
    inputs: TrialInputs,
    times_h,
    *,
    seed: int,
    observed: Sequence[str] = (),
    with_error: bool = True,
    options: SolverOptions = SolverOptions(),
    chunk_size: int = 4096,
    t0: float = 0.0,
    states: bool = False,
    store=None,
    devices=None,
    order="cost",
    endpoints: Sequence[Endpoint] = (),
) -> TrialChunks:
    """The trial pipeline over `inputs` (from `prepare_trial`): iterate for `TrialChunk`s.

    `observed`: observables to draw residual error for, inside the compiled solve
    (`ResidualDraw`); `with_error=False` gives the predictions instead (e.g. typical
    animals). `endpoints`: those whose statistic is an AUC, mean, maximum, minimum or
    time of maximum are computed from the solver, exactly whatever the output grid
    (`vtrial.engine.exposure`), into `TrialChunk.exact`. The other arguments are the runner's
    (`vtrial.engine.runner.iter_population_chunks`). Inputs are checked now, before
    anything is compiled; chunks are solved lazily.
    """
    observed = tuple(observed)
    residual = inputs.population.residual
    draw = None
    if observed and with_error:
        check_observed(inputs.population, observed)
        draw = ResidualDraw(observed)
    runner = iter_population_chunks(
        model, inputs.params, inputs.doses, times_h, t0=t0, options=options, chunk_size=chunk_size, order=order,
        states=states, devices=devices, store=store, lane_outputs=draw,
        lane_data=draw.lane(inputs.arm_index, inputs.position) if draw else None,
        shared=draw.shared(residual, seed) if draw else None, exposure=exposure_spec(endpoints),
    )
    return TrialChunks(model, inputs, runner, observed, with_error)


# ---------------------------------------------------------------------------
# in memory: simulate


def sampling_masks(times_h, sampling_times_h: Mapping[str, Sequence[float]], observables) -> dict[str, np.ndarray]:
    """Per sampled observable, which of `times_h` it is sampled at (checked: known
    observables, times among `times_h`)."""
    times = np.asarray(times_h, dtype=float)
    masks = {}
    for name, ts in sampling_times_h.items():
        if name not in observables:
            raise SpecError(f"sampling.{name}", f"unknown observable {name!r}; known: {', '.join(observables)}")
        ts = np.asarray(ts, dtype=float)
        missing = ts[~np.isin(ts, times)]
        if missing.size:
            raise SpecError(f"sampling.{name}", f"time {missing[0]} h is not among the simulated times")
        masks[name] = np.isin(times, ts)
    return masks


@dataclass(frozen=True)
class SimulationResult:
    """Everything one `simulate` call produced.

    - `animals`: one row per animal: `arm`, `arm_index`, `animal`, parameters,
      covariates, `status` (`ok` or the failure), `n_steps`;
    - `solution`: the batched arrays (states, observables at `times_h`);
    - `noisy`: observable -> `(n_animals, n_times)` with residual error, for every
      observable with a residual model.
    """

    model: Model
    population: Population
    arms: tuple[Arm, ...]
    animals: pd.DataFrame
    solution: PopulationSolution
    seed: int
    noisy: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def times_h(self) -> np.ndarray:
        return self.solution.times_h

    def to_frame(self, states: bool = False) -> pd.DataFrame:
        """Long table: `arm`, `animal`, `time_h`, one column per observable (and state)."""
        if states and self.solution.states is None:
            raise SpecError("states", "this result kept no states: simulate with states=True to tabulate them")
        return frame(trajectory_columns(
            self.animals["arm"].to_numpy(), self.animals["animal"].to_numpy(), self.times_h, self.solution.observables,
            states=self.solution.states if states else None,
            state_columns=[f"{s.name}_{s.unit.replace('/', '_per_')}" for s in self.model.states],
        ))

    def observations(self, sampling_times_h: Mapping[str, Sequence[float]] | None = None, *, with_error: bool = True) -> pd.DataFrame:
        """Predictions with residual error added, at each observable's sampling times.

        `sampling_times_h` maps an observable to its sampling times (each must be one of
        `times_h`); by default every observable with a residual model at every time.
        Values not sampled are NaN. The noise is keyed per animal and observable, so it is
        reproducible; `with_error=False` gives the predictions at the same cells.
        """
        sampling = sampling_times_h or {k: self.times_h for k in self.population.residual}
        masks = sampling_masks(self.times_h, sampling, self.solution.observables)
        if with_error:
            for name in masks:
                if name not in self.noisy:
                    raise SpecError(f"population.residual.{name}", "no residual error model for a sampled observable")
        values = self.noisy if with_error else self.solution.observables
        a = self.animals
        return frame(observation_columns(a["arm"].to_numpy(), a["animal"].to_numpy(), self.times_h, values, masks))


def simulate(
    model: Model,
    arms: Regimen | Sequence[Arm],
    population: Population | None = None,
    *,
    times_h: Sequence[float],
    n_animals: int = 100,
    seed: int = 0,
    typical: bool = False,
    animals: pd.DataFrame | None = None,
    options: SolverOptions = SolverOptions(),
    chunk_size: int = 4096,
    t0: float = 0.0,
    on_chunk: Callable[[int, int], None] | None = None,
    states: bool = True,
) -> SimulationResult:
    """Simulate a virtual trial.

    **Arguments:**
    - `model`: e.g. `vtrial.models.two_compartment()` or `vtrial.models.cia_rat()`;
    - `arms`: a single `Regimen` (one arm named "arm" with `n_animals`) or `Arm`s;
    - `population`: variability, covariates, residual error (default: none);
    - `times_h`: output times (h), non-decreasing;
    - `seed`: fixes every random draw;
    - `typical`: one typical animal per arm, no variability;
    - `animals`: a table of exactly the animals to simulate (`arm`, `animal`, one
      column per parameter/covariate; missing ones take typical values);
    - `options`: solver, tolerances, precision; `chunk_size`: animals per compiled batch;
    - `states`: keep every state (False: observables only, less memory and transfer).

    **Returns:** a `SimulationResult`; `.to_frame()` gives the tidy table. For
    populations too large to hold, stream with `prepare_trial` and `trial_chunks` (as
    the `trial` job does).
    """
    inputs = prepare_trial(model, arms, population, times_h=times_h, n_animals=n_animals, seed=seed, typical=typical, animals=animals, t0=t0)
    observed = tuple(inputs.population.residual)
    chunks = trial_chunks(model, inputs, times_h, seed=seed, observed=observed, options=options, chunk_size=chunk_size, t0=t0, states=states)
    parts = ((c.rows, {"states": c.states, "predictions": c.predictions, "noisy": c.observations, "status": c.status,
                       "n_steps": c.n_steps}) for c in chunks)
    got = gather(len(inputs.animals), parts, on_chunk)
    status, steps = got["status"], got["n_steps"]
    solution = PopulationSolution(
        got.get("states"), got["predictions"], status, steps, chunks.runner.times_h, chunks.compile_seconds, chunks.run_seconds,
        lockstep_waste=chunks.lockstep_waste, chunk_size=chunks.plan.chunk_size, n_chunks=chunks.plan.n_chunks,
        n_devices=chunks.mesh.size, n_processes=jax.process_count(),
    )
    table = inputs.animals.copy()
    table["status"] = np.asarray(STATUS_NAMES, dtype=object)[status]
    table["n_steps"] = steps
    return SimulationResult(model, inputs.population, inputs.arms, table, solution, seed, got.get("noisy", {}))
