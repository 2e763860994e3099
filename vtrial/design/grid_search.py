"""Regimens x animals through the trial pipeline: the grid sweep of a dose optimisation.

`draw_animals` draws the virtual animals once; `sweep` simulates every given regimen
(and vehicle, where a requirement is relative to the untreated animal) on exactly those
animals: **common random numbers**, so two candidates differ only by their regimen and a
difference in attainment is never noise between animal samples. Each regimen is an arm of
one trial whose animal table repeats the same animals (`vtrial.design.trial.prepare_trial`
with `animals=`), so the whole grid is one batched solve over animals x regimens in
fixed-size chunks (`trial_chunks`, the trial pipeline), and only the requirement values
(one number per animal, regimen and requirement) are kept: memory does not grow with the
number of output times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import numpy as np
import pandas as pd

from vtrial.analysis.endpoints import endpoint_values
from vtrial.design.dosing import Regimen
from vtrial.design.population import Population
from vtrial.design.targets import Requirement, requirement_endpoints, requirement_margins, requirement_values
from vtrial.design.trial import Arm, prepare_trial, trial_chunks
from vtrial.engine.solve import SolverOptions
from vtrial.models.base import Model

#: Stream folded into the seed for the animals of a dose optimisation.
ANIMAL_STREAM = 1_000_003


def draw_animals(population: Population, n_animals: int, seed: int, *, first: int = 0) -> pd.DataFrame:
    """Animals `first .. first + n_animals - 1` of the population's stream for `seed`:
    one row per animal (`animal`, parameters, covariates). Animals of one seed never
    change with how many are drawn, so `first = n` gives `n_animals` fresh animals
    disjoint from the first `n`."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), ANIMAL_STREAM)
    drawn = population.sample(key, n_animals, first_index=first)
    table = pd.DataFrame({"animal": np.arange(first, first + n_animals)})
    for name in (*population.model.parameter_names, *population.model.covariate_names):
        table[name] = np.asarray(drawn[name], dtype=float)
    return table


@dataclass(frozen=True)
class SweepResult:
    """Requirement values of every regimen on every animal.

    - `endpoints`: `(n_regimens, n_animals, n_requirements)` endpoint values (before
      any percent change), NaN where the solve failed;
    - `vehicle`: `(n_animals, n_requirements)` the same animals untreated (NaN when no
      requirement is relative and vehicle was not simulated);
    - `margins`: `(n_regimens, n_animals, n_requirements)`, `>= 0` where met;
    - `status`: `(n_regimens, n_animals)` solver status (0 = ok);
    - `n_steps`: `(n_regimens, n_animals)` solver steps;
    - `animal_regimens`: solves done (vehicle included); `compile_seconds`; `run_seconds`
      (the trial pipeline's: solving and reducing the chunks, compilation excluded);
      `prepare_seconds` (drawing up the animal-regimen table and lowering the regimens).
    """

    endpoints: np.ndarray
    vehicle: np.ndarray
    margins: np.ndarray
    status: np.ndarray
    n_steps: np.ndarray
    animal_regimens: int
    compile_seconds: float
    run_seconds: float
    prepare_seconds: float


def sweep(
    model: Model,
    regimens: Sequence[Regimen],
    requirements: Sequence[Requirement],
    population: Population,
    animals: pd.DataFrame,
    *,
    times_h,
    options: SolverOptions = SolverOptions(),
    chunk_size: int = 4096,
    vehicle: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SweepResult:
    """Simulate every regimen on the same `animals` (from `draw_animals`) and judge each
    animal against each requirement.

    **Arguments:** `vehicle`: also simulate the animals untreated (default: when a
    requirement is relative to untreated); `times_h`: output times covering every
    requirement's window (`vtrial.design.targets.requirement_times`); `chunk_size`:
    animal-regimens per compiled batch. The rest as `vtrial.simulate`.
    """
    requirements = tuple(requirements)
    need_vehicle = any(r.relative_to_untreated for r in requirements) if vehicle is None else vehicle
    n = len(animals)
    arms = ([Arm("vehicle", Regimen(), n)] if need_vehicle else []) + [Arm(f"regimen {i}", r, n) for i, r in enumerate(regimens)]
    table = pd.concat([animals.assign(arm=a.name) for a in arms], ignore_index=True)
    start = time.perf_counter()
    inputs = prepare_trial(model, arms, population, times_h=times_h, animals=table)
    endpoints = requirement_endpoints(requirements)
    chunks = trial_chunks(model, inputs, times_h, seed=0, with_error=False, options=options, chunk_size=chunk_size,
                          endpoints=endpoints)
    values = np.full((len(arms), n, len(requirements)), np.nan)
    status = np.zeros((len(arms), n), np.int32)
    steps = np.zeros((len(arms), n), np.int64)
    prepared = time.perf_counter() - start
    arm_index, position = inputs.arm_index, inputs.position
    done = 0
    for chunk in chunks:
        got = endpoint_values(endpoints, times_h, chunk.predictions, exact=chunk.exact)
        a, i = arm_index[chunk.rows], position[chunk.rows]
        values[a, i] = np.stack([got[e.name] for e in endpoints], axis=-1)
        status[a, i], steps[a, i] = chunk.status, chunk.n_steps
        done += chunk.rows.size
        if progress is not None:
            progress(done, len(table))
    offset = 1 if need_vehicle else 0
    vehicle_values = values[0] if need_vehicle else np.full((n, len(requirements)), np.nan)
    judged = requirement_values(requirements, values[offset:], vehicle_values[None])
    margins = requirement_margins(requirements, judged)
    return SweepResult(values[offset:], vehicle_values, margins, status[offset:], steps[offset:], len(table), chunks.compile_seconds,
                       chunks.run_seconds, prepared)
