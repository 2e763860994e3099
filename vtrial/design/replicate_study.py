"""Replicates of an observed study simulated from a population: the simulations of a
visual predictive check (VPC).

Each replicate gives every subject of the study its own doses, covariates and
observation times, new random effects from the population's Omega and new residual
error, and solves all subjects of all replicates in one batched run of the engine
(`vtrial.engine.runner.simulate_population`). Individual parameters follow the
population's equation: typical value x covariate effects x exp(eta).
"""

from __future__ import annotations

import numpy as np

from vtrial.design.occasions import with_occasions
from vtrial.design.population import Population, effect_factor
from vtrial.engine.events import DoseRecords
from vtrial.engine.runner import simulate_population
from vtrial.engine.solve import SolverOptions
from vtrial.errors import SpecError
from vtrial.limits import MAX_OUTPUT_TIMES

#: Replicates x subjects x simulated times held at once at most; more replicates are cut.
MAX_VPC_VALUES = 50_000_000


def simulate_replicate_studies(
    population: Population,
    doses: DoseRecords,
    covariates: dict[str, np.ndarray],
    obs_time_h: np.ndarray,
    obs_observable: np.ndarray,
    *,
    replicates: int,
    seed: int = 0,
    options: SolverOptions = SolverOptions(),
    chunk_size: int = 4096,
    occasions=None,
) -> np.ndarray:
    """Observations of `replicates` copies of a study, in the model's units.

    **Arguments:**
    - `population`: typical values, Omega, covariate effects and residual error (in the
      observables' model units) to simulate from;
    - `doses`: `(n_subjects, n_records)`; `covariates`: name -> `(n_subjects,)` (model
      covariates not given sit at the population's values);
    - `obs_time_h`, `obs_observable`: `(n_subjects, n_obs)` the study's observations;
    - `replicates`, `seed`: how many studies, and the seed of every draw;
    - `occasions`: `(change_h, change_level, n_levels)` of the subjects (a dataset's
      `OccasionData`): with the population's `iov`, every subject of every replicate
      draws a kappa per occasion (`vtrial.design.occasions`).

    **Returns:** `(replicates, n_subjects, n_obs)` simulated observations (NaN where a
    solve failed); fewer replicates when `replicates x subjects x times` would exceed
    `MAX_VPC_VALUES`.
    """
    model = population.model
    obs_time_h = np.asarray(obs_time_h, float)
    n_subjects = obs_time_h.shape[0]
    times = np.unique(obs_time_h)
    if times.size > MAX_OUTPUT_TIMES:
        raise SpecError("vpc", f"the study has {times.size:,} distinct observation times; the limit is {MAX_OUTPUT_TIMES:,}")
    replicates = max(1, min(int(replicates), MAX_VPC_VALUES // max(1, n_subjects * times.size * len(model.observables))))
    rng = np.random.default_rng(seed)
    base = population.typical_parameters()
    n = replicates * n_subjects
    params = {k: np.full(n, float(v)) for k, v in base.items() if k in model.parameter_names or k in model.covariate_names}
    for name, values in covariates.items():
        params[name] = np.tile(np.asarray(values, float), replicates)
    for e in population.covariate_effects:
        params[e.parameter] = params[e.parameter] * np.asarray(effect_factor(e.kind, params[e.covariate], e.reference, e.exponent))
    k = len(population.iiv_names)
    if k:
        chol = np.linalg.cholesky(np.asarray(population.omega, float) + 1e-300 * np.eye(k))
        eta = rng.standard_normal((n, k)) @ chol.T
        for j, name in enumerate(population.iiv_names):
            params[name] = params[name] + eta[:, j] if name in population.additive else params[name] * np.exp(eta[:, j])
    tiled = DoseRecords(*doses).map(lambda a: np.tile(np.asarray(a), (replicates,) + (1,) * (np.ndim(a) - 1)))
    if population.iov and occasions is not None:
        change_h, change_level, n_levels = occasions
        tile = lambda a: np.tile(np.asarray(a), (replicates, 1))  # noqa: E731
        t0 = float(min(0.0, np.min(obs_time_h), np.min(np.asarray(doses.time_h)) if np.size(doses.time_h) else 0.0))
        tiled = with_occasions(population, params, tiled, tile(change_h), tile(change_level), int(n_levels), seed,
                               np.repeat(np.arange(replicates), n_subjects), np.tile(np.arange(n_subjects), replicates), t0)
    solution = simulate_population(model, params, tiled, times, options=options, chunk_size=chunk_size, states=False, order="input")
    column = np.searchsorted(times, obs_time_h)  # (n_subjects, n_obs)
    out = np.full((replicates, n_subjects, obs_time_h.shape[1]), np.nan)
    names = model.observable_names
    for j, name in enumerate(names):
        pred = np.asarray(solution.observables[name]).reshape(replicates, n_subjects, times.size)
        here = np.asarray(obs_observable) == j
        values = np.take_along_axis(pred, np.broadcast_to(column, (replicates, *column.shape)), axis=2)
        out = np.where(here[None], values, out)
    failed = (np.asarray(solution.status) != 0).reshape(replicates, n_subjects)
    out[failed] = np.nan
    additive = np.array([population.residual[n].additive if n in population.residual else 0.0 for n in names])
    proportional = np.array([population.residual[n].proportional if n in population.residual else 0.0 for n in names])
    obs_index = np.asarray(obs_observable)
    sd = np.sqrt(additive[obs_index][None] ** 2 + (proportional[obs_index][None] * out) ** 2)
    return out + sd * rng.standard_normal(out.shape)
