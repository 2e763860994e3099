"""Virtual trials: arms of animals under regimens, simulated in one batched solve.

`simulate` is the one entry point for the library user: it draws (or takes) the animals
of every arm, lowers every arm's regimen to padded dose records, runs the chunked,
vmapped solve once over all arms together, and returns a `SimulationResult` that turns
into tidy tables.

Randomness: arm `a`, animal `i` draws from `fold_in(fold_in(PRNGKey(seed), a), i)`,
so adding arms or animals never changes the animals already there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import jax
import numpy as np
import pandas as pd

from vtrial.dosing import DoseRecords, Regimen, lower_regimens
from vtrial.errors import SpecError
from vtrial.models.base import Model
from vtrial.population import Population, residual_keys
from vtrial.simulate import PopulationSolution, check_times, simulate_population
from vtrial.solve import SolverOptions


@dataclass(frozen=True)
class Arm:
    """A treatment arm: a name, a regimen and how many animals."""

    name: str
    regimen: Regimen = Regimen()
    n_animals: int = 100

    def __post_init__(self):
        if not (isinstance(self.n_animals, int) and self.n_animals >= 1):
            raise SpecError(f"arms.{self.name}.n_animals", f"must be a whole number >= 1, got {self.n_animals!r}")


@dataclass(frozen=True)
class SimulationResult:
    """Everything one `simulate` call produced.

    - `animals`: one row per animal: `arm`, `animal`, parameters, covariates,
      `status` (`ok` or the failure), `n_steps`;
    - `solution`: the batched arrays (states, observables at `times_h`).
    """

    model: Model
    population: Population
    arms: tuple[Arm, ...]
    animals: pd.DataFrame
    solution: PopulationSolution
    seed: int

    @property
    def times_h(self) -> np.ndarray:
        return self.solution.times_h

    def to_frame(self, states: bool = False) -> pd.DataFrame:
        """Long table: `arm`, `animal`, `time_h`, one column per observable (and state)."""
        if states and self.solution.states is None:
            raise SpecError("states", "this result kept no states: simulate with states=True to tabulate them")
        return trajectory_frame(
            self.animals["arm"].to_numpy(), self.animals["animal"].to_numpy(), self.times_h, self.solution.observables,
            states=self.solution.states if states else None, model=self.model,
        )

    def observations(self, sampling_times_h: Mapping[str, Sequence[float]] | None = None, *, with_error: bool = True) -> pd.DataFrame:
        """Predictions with residual error added, at each observable's sampling times.

        `sampling_times_h` maps an observable to its sampling times (each must be one of
        `times_h`); by default every observable with a residual model at every time.
        Values not sampled are NaN. The noise is keyed per animal, so it is reproducible;
        `with_error=False` gives the predictions at the same cells.
        """
        masks = sampling_masks(self.times_h, sampling_times_h or {k: self.times_h for k in self.population.residual}, self.solution.observables)
        a = self.animals
        return observation_frame(
            a["arm"].to_numpy(), a["arm_index"].to_numpy(), a["animal"].to_numpy(), self.times_h, self.solution.observables,
            masks, self.population, self.seed, with_error=with_error,
        )


def trajectory_frame(arm, animal, times_h, observables: Mapping[str, np.ndarray], *, states=None, model: Model | None = None) -> pd.DataFrame:
    """Long table of `m` animals: `arm`, `animal`, `time_h`, one column per observable
    (`observables[name]` is `(m, n_times)`), and per state when `states` `(m, n_times, n_states)` is given."""
    t = len(times_h)
    frame = {"arm": np.repeat(np.asarray(arm), t), "animal": np.repeat(np.asarray(animal), t), "time_h": np.tile(times_h, len(animal))}
    for name, v in observables.items():
        frame[name] = np.asarray(v).reshape(-1)
    if states is not None:
        for j, s in enumerate(model.states):
            frame[f"{s.name}_{s.unit.replace('/', '_per_')}"] = states[:, :, j].reshape(-1)
    return pd.DataFrame(frame)


def sampling_masks(times_h, sampling_times_h: Mapping[str, Sequence[float]], observables) -> dict[str, np.ndarray]:
    """Per sampled observable, which of `times_h` it is sampled at (checked: known
    observables, times among `times_h`)."""
    times = np.asarray(times_h, dtype=float)
    masks = {}
    for name, ts in sampling_times_h.items():
        if name not in observables:
            raise SpecError(f"sampling.{name}", f"unknown observable; known: {', '.join(observables)}")
        ts = np.asarray(ts, dtype=float)
        missing = ts[~np.isin(ts, times)]
        if missing.size:
            raise SpecError(f"sampling.{name}", f"time {missing[0]} h is not among the simulated times")
        masks[name] = np.isin(times, ts)
    return masks


def observation_frame(
    arm, arm_index, animal, times_h, predictions: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
    population: Population, seed: int, *, with_error: bool = True, pad_to: int | None = None,
) -> pd.DataFrame:
    """Observations of `m` animals (`predictions[name]` is `(m, n_times)`) at the times of
    `masks` (from `sampling_masks`), with residual error keyed per animal: the values
    of an animal do not depend on which other animals are in the call.

    `pad_to` (>= m): draw the noise for this many animals (the last one repeated) so
    that calls with different `m` share one compiled function (chunked callers)."""
    times = np.asarray(times_h, dtype=float)
    key = jax.random.PRNGKey(seed)
    arm_index, animal = np.asarray(arm_index), np.asarray(animal)
    m = animal.size
    pad = np.minimum(np.arange(max(m, pad_to or 0)), m - 1) if m else np.arange(0)
    rows = np.flatnonzero(np.logical_or.reduce(list(masks.values())) if masks else np.zeros(times.size, bool))
    out = {
        "arm": np.repeat(np.asarray(arm), rows.size),
        "animal": np.repeat(animal, rows.size),
        "time_h": np.tile(times[rows], animal.size),
    }
    for j, (name, mask) in enumerate(masks.items()):
        pred = predictions[name]
        res = population.residual.get(name)
        if not with_error:
            noisy = pred
        elif res is None:
            raise SpecError(f"population.residual.{name}", "no residual error model for a sampled observable")
        else:
            noisy = _add_residual(res, key, arm_index[pad], animal[pad], j, np.asarray(pred)[pad])[:m]
        noisy = np.where(mask[None, :], noisy, np.nan)
        out[name] = noisy[:, rows].reshape(-1)
    return pd.DataFrame(out)


def _add_residual(res, key, arm_index, animal, obs_index, pred):
    return np.asarray(_noisy(res, key, arm_index, animal, obs_index, pred))


@partial(jax.jit, static_argnums=0)
def _noisy(res, key, arm_index, animal, obs_index, pred):
    # Module-level and keyed on the (hashable) residual model, so a second call with the
    # same shapes reuses the compiled function.
    def one(a, i, f):
        k = jax.random.fold_in(residual_keys(jax.random.fold_in(key, a), i), obs_index)
        return res.sample(k, f)

    return jax.vmap(one)(arm_index, animal, pred)


def _animal_parameters(model, population, arms, seed, typical, animals):
    needed = list(model.parameter_names) + list(model.covariate_names)
    if animals is not None:
        return _parameters_from_table(model, population, arms, animals, needed)
    key = jax.random.PRNGKey(seed)
    tables = []
    for a, arm in enumerate(arms):
        if typical:
            p = population.typical_animals(1)
        else:
            p = population.sample(jax.random.fold_in(key, a), arm.n_animals)
        n = len(next(iter(p.values())))
        df = pd.DataFrame({"arm": arm.name, "arm_index": a, "animal": np.arange(n)})
        for k in needed:
            df[k] = np.asarray(p[k], dtype=float)
        tables.append(df)
    return pd.concat(tables, ignore_index=True)


def _parameters_from_table(model, population, arms, animals, needed):
    if not isinstance(animals, pd.DataFrame):
        raise SpecError("animals", "must be a pandas DataFrame")
    for col in ("arm", "animal"):
        if col not in animals.columns:
            raise SpecError(f"animals.{col}", f"column missing; the table needs 'arm', 'animal' and parameter columns")
    known = set(needed)
    unknown = [c for c in animals.columns if c not in known | {"arm", "animal"}]
    if unknown:
        raise SpecError(f"animals.{unknown[0]}", f"unknown parameter of model {model.name}; known: {', '.join(needed)}")
    arm_names = [a.name for a in arms]
    bad = sorted(set(animals["arm"].astype(str)) - set(arm_names))
    if bad:
        raise SpecError("animals.arm", f"unknown arm {bad[0]!r}; arms: {', '.join(arm_names)}")
    typical = population.typical_parameters()
    df = pd.DataFrame({"arm": animals["arm"].astype(str), "animal": animals["animal"]})
    df["arm_index"] = df["arm"].map({n: i for i, n in enumerate(arm_names)}).astype(int)
    for k in needed:
        if k in animals.columns:
            col = pd.to_numeric(animals[k], errors="coerce")
            if col.isna().any():
                row = int(np.flatnonzero(col.isna().to_numpy())[0]) + 1
                raise SpecError(f"animals.{k}", f"row {row} is not a number")
            df[k] = col.to_numpy(dtype=float)
        else:
            df[k] = float(typical[k])
    model.validate_values({k: df[k].to_numpy() for k in model.parameter_names}, "animals")
    df = df.sort_values(["arm_index", "animal"], kind="stable").reset_index(drop=True)
    return df[["arm", "arm_index", "animal", *needed]]


@dataclass(frozen=True)
class TrialInputs:
    """What a trial solves, before solving: `arms`, `population`, `animals` (one row per
    animal: `arm`, `arm_index`, `animal`, parameters, covariates), the runner's
    `params` (name -> `(n_animals,)`) and `doses` (`DoseRecords`, one row per animal)."""

    arms: tuple[Arm, ...]
    population: Population
    animals: pd.DataFrame
    params: dict[str, np.ndarray]
    doses: DoseRecords


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
    """Check a trial and draw (or take) its animals; arguments as `simulate`. Nothing is solved."""
    if isinstance(arms, Regimen):
        arms = (Arm("arm", arms, n_animals),)
    arms = tuple(arms)
    if not arms:
        raise SpecError("arms", "at least one arm is needed")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise SpecError("arms", "arm names must be unique")
    population = population or Population(model)
    if population.model is not model:
        raise SpecError("population", "was built for a different model")
    # Everything that can be checked on the host is checked before animals are drawn
    # (which compiles): regimens, then output times.
    arm_records = lower_regimens(model, [a.regimen for a in arms])  # (n_arms, n_records)
    check_times(times_h, t0)
    table = _animal_parameters(model, population, arms, seed, typical, animals)
    doses = arm_records.take(table["arm_index"].to_numpy())
    params = {k: table[k].to_numpy() for k in (*model.parameter_names, *model.covariate_names)}
    return TrialInputs(arms, population, table, params, doses)


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
    populations too large to hold, stream with `prepare_trial` and
    `vtrial.simulate.iter_population_chunks` (as the `trial` job does).
    """
    inputs = prepare_trial(model, arms, population, times_h=times_h, n_animals=n_animals, seed=seed, typical=typical, animals=animals, t0=t0)
    solution = simulate_population(
        model, inputs.params, inputs.doses, times_h, t0=t0, options=options, chunk_size=chunk_size, on_chunk=on_chunk,
        states=states,
    )
    table = inputs.animals.copy()
    table["status"] = solution.status_names
    table["n_steps"] = solution.n_steps
    return SimulationResult(model, inputs.population, inputs.arms, table, solution, seed)
