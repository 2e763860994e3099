r"""Dose optimisation: the least drug that meets a target attainment, by two searches that
must agree.

`optimize` draws the virtual animals once and then

1. **grid** (`vtrial.design.grid_search.sweep`): every candidate of the `RegimenSpace`
   (every shape at every grid dose) on the same animals, plus the animals untreated;
   a candidate *meets the target* when the share of animals meeting each requirement is
   at least that requirement's fraction (for the target: PTA >= the PTA to reach). The
   answer is the candidate with the least total drug per animal (mg/kg) that meets every
   requirement (ties: the higher PTA);
2. **gradient** (`vtrial.design.gradient_search`): per shape, the least daily dose meeting
   every requirement, found with exact gradients through the solver on the same (training)
   animals; its answer is the shape with the least total drug;
3. **verification**: each answer is simulated on fresh animals of the same population
   (the next animals of the same stream), so its PTA and Clopper-Pearson interval are not
   those of the animals it was chosen on (the chosen animals flatter it slightly);
4. **agreement**: the two answers' total drug must lie within one grid step
   (`space.grid_step_ratio`) of each other, and they must agree on whether the target can
   be met at all.

The answer (`OptimizationResult.chosen`) is the grid's when the grid ran, else the
gradient's. When no regimen meets every requirement the result says so
(`feasible = False`), with the best attainable PTA and the regimen that gives it (among
candidates meeting every exposure constraint, or among all if none does): a failing
regimen is never returned as the answer.

**Binding constraints.** For the grid's answer, the requirements that fail at the next
lower grid dose of the same shape (the lowest grid dose: "the lower end of the dose
range"); for the gradient's, those with a positive Lagrange multiplier.

**Parameter uncertainty** (optional, `uncertainty`): typical values are drawn from a
log-normal distribution (a `Population` of typical values, e.g. built from a fit's
covariance) and the answer's PTA is recomputed per draw on the same animals' random
effects: the spread of PTA across draws is what the typical-value uncertainty does to it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import jax
import numpy as np
import pandas as pd

from vtrial.analysis.statistics import clopper_pearson
from vtrial.design.gradient_search import GradientSettings, gradient_search
from vtrial.design.grid_search import ANIMAL_STREAM, draw_animals, sweep
from vtrial.design.population import Population
from vtrial.design.regimen_space import Candidate, RegimenShape, RegimenSpace
from vtrial.design.targets import Requirement, attained, check_requirements, requirement_times
from vtrial.engine.solve import SolverOptions
from vtrial.errors import SpecError
from vtrial.limits import MAX_ANIMALS, MAX_GRID, check_count
from vtrial.models.base import Model

METHODS = ("grid", "gradient")


@dataclass(frozen=True)
class Uncertainty:
    """Typical-value uncertainty: `population` draws typical values (its `typical` are the
    centre, its `omega` the log-scale covariance of the uncertain ones); `draws` of them."""

    population: Population
    draws: int = 50


@dataclass(frozen=True)
class OptimizationResult:
    """What `optimize` found (see the module docstring).

    - `feasible`: a regimen meets every requirement; `chosen`: it (a dict: regimen,
      shape, daily and total dose, PTA with interval on the training and fresh animals,
      shares per requirement, binding constraints, method), or None;
    - `best_attainable`: when infeasible, the regimen with the best PTA;
    - `attainment`: one row per grid candidate (None without a grid);
    - `gradient`: the gradient search per shape, its answer and verification (or None);
    - `agreement`: the two answers compared (None unless both ran);
    - `uncertainty`: PTA of the answer across typical-value draws (or None);
    - `animals`: the training animals; `facts`: counts and timings.
    """

    feasible: bool
    chosen: dict | None
    best_attainable: dict | None
    attainment: pd.DataFrame | None
    gradient: dict | None
    agreement: dict | None
    uncertainty: dict | None
    requirements: tuple[Requirement, ...]
    space: RegimenSpace
    animals: pd.DataFrame
    facts: dict = field(default_factory=dict)


def _interval(k: int, n: int) -> tuple[float, float]:
    lo, hi = clopper_pearson(k, n)
    return float(lo), float(hi)


def _describe(candidate: Candidate, mean_bw: float) -> dict:
    s = candidate.shape
    return {
        "regimen": f"{s.label}, {candidate.daily_dose_mg_per_kg:.4g} mg/kg/day",
        "shape": s.label,
        "route": s.route,
        "delivery": "pump" if s.continuous else "bolus",
        "interval_h": s.interval_h,
        "start_day": s.start_h / 24.0,
        "duration_days": s.duration_h / 24.0,
        "loading_dose_days": s.loading_dose_days,
        "daily_dose_mg_per_kg": candidate.daily_dose_mg_per_kg,
        "total_mg_per_kg": candidate.total_mg_per_kg,
        "total_mg_per_animal": candidate.total_mg_per_kg * mean_bw,
    }


def _shares(margins: np.ndarray) -> np.ndarray:
    """`(..., n_animals, J)` margins -> `(..., J)` counts of animals meeting each."""
    return attained(margins).sum(axis=-2)


def attainment_table(space: RegimenSpace, requirements, margins, endpoints, mean_bw: float) -> pd.DataFrame:
    """One row per candidate: the regimen, its PTA (target share) with a Clopper-Pearson
    95% interval, whether it meets every requirement, and per requirement the share of
    animals meeting it and the median of its endpoint."""
    n = margins.shape[1]
    counts = _shares(margins)
    fractions = np.array([r.fraction for r in requirements])
    rows = []
    for c, cand in enumerate(space.candidates()):
        lo, hi = _interval(int(counts[c, 0]), n)
        row = {"candidate": c, **_describe(cand, mean_bw), "pta": counts[c, 0] / n, "pta_ci_low": lo, "pta_ci_high": hi,
               "meets_all": bool(np.all(counts[c] / n >= fractions - 1e-12))}
        with np.errstate(all="ignore"):
            for j, r in enumerate(requirements):
                row[f"{r.name}_share"] = counts[c, j] / n
                row[f"{r.name}_median"] = float(np.nanmedian(endpoints[c, :, j])) if np.isfinite(endpoints[c, :, j]).any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _grid_answer(space: RegimenSpace, requirements, table: pd.DataFrame) -> tuple[int | None, list[str], int]:
    """(index of the least-drug candidate meeting everything or None, binding, best index)."""
    meets = table["meets_all"].to_numpy()
    total = table["total_mg_per_kg"].to_numpy()
    pta = table["pta"].to_numpy()
    if meets.any():
        order = np.lexsort((-pta, total))  # least drug, then the higher PTA
        best = int(next(i for i in order if meets[i]))
        dose_index = best % space.grid_points
        if dose_index == 0:
            binding = ["dose range (its lowest daily dose already meets every requirement)"]
        else:
            below = table.iloc[best - 1]
            binding = [r.name for r in requirements if below[f"{r.name}_share"] < r.fraction - 1e-12]
        return best, binding, best
    others = [f"{r.name}_share" for r in requirements[1:]]
    exposure_ok = np.all([table[c].to_numpy() >= r.fraction - 1e-12 for c, r in zip(others, requirements[1:])], axis=0) if others else np.ones(len(table), bool)
    pool = np.flatnonzero(exposure_ok) if exposure_ok.any() else np.arange(len(table))
    best = int(pool[np.lexsort((total[pool], -pta[pool]))[0]])
    return None, [], best


def _verify(model, candidate, requirements, population, fresh, times_h, options, chunk_size) -> dict:
    """PTA and shares of one regimen on fresh animals."""
    got = sweep(model, [candidate.regimen()], requirements, population, fresh, times_h=times_h, options=options, chunk_size=chunk_size)
    counts = _shares(got.margins)[0]
    n = len(fresh)
    lo, hi = _interval(int(counts[0]), n)
    return {"n_animals": n, "pta": counts[0] / n, "pta_ci_low": lo, "pta_ci_high": hi,
            "shares": {r.name: counts[j] / n for j, r in enumerate(requirements)},
            "meets_all": bool(all(counts[j] / n >= r.fraction - 1e-12 for j, r in enumerate(requirements))),
            "animal_regimens": got.animal_regimens}


def _check_methods(methods) -> tuple[str, ...]:
    methods = tuple(methods)
    if not methods or any(m not in METHODS for m in methods) or len(set(methods)) != len(methods):
        raise SpecError("methods", f"give one or both of {', '.join(METHODS)}, got {list(methods)!r}")
    return methods


def _whole(field: str, value, limit: int, what: str) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
        raise SpecError(field, f"must be a whole number >= 1, got {value!r}")
    return check_count(field, value, limit, what)


def check_optimization(
    model: Model,
    space: RegimenSpace,
    target: Requirement,
    constraints: Sequence[Requirement] = (),
    population: Population | None = None,
    *,
    n_animals: int = 1000,
    verify_animals: int | None = None,
    methods: Sequence[str] = METHODS,
    every_h: float = 6.0,
    uncertainty: Uncertainty | None = None,
) -> tuple[tuple[str, ...], tuple[Requirement, ...], np.ndarray]:
    """Everything `optimize` checks before its first solve (the same arguments); raises
    `SpecError` naming the field. Sizes are bounded (`vtrial.limits`): candidates and
    shapes by `MAX_GRID`, the grid's animal-regimens (candidates + vehicle, times the
    animals), the fresh animals and the uncertainty's draws x animals by `MAX_ANIMALS`.

    **Returns:** `(methods, requirements, output times)`."""
    methods = _check_methods(methods)
    population = population or Population(model)
    if population.model is not model:
        raise SpecError("population", "was built for a different model")
    _whole("animals", n_animals, MAX_ANIMALS, "animals")
    verify_animals = n_animals if verify_animals is None else verify_animals
    _whole("verify_animals", verify_animals, MAX_ANIMALS, "fresh animals")
    if not (isinstance(every_h, int | float) and math.isfinite(every_h) and every_h > 0):
        raise SpecError("output.every_h", f"must be > 0 h, got {every_h!r}")
    check_count("space", space.n_shapes, MAX_GRID, "regimen shapes")
    check_count("space.grid_points", space.n_shapes * space.grid_points, MAX_GRID, "candidate regimens (shapes x grid points)")
    space.check(model)
    requirements = check_requirements(model, [target, *constraints])
    times = requirement_times(requirements, every_h)
    if "grid" in methods:
        check_count("animals", (len(space.candidates()) + 1) * n_animals, MAX_ANIMALS, "animal-regimens in the grid (candidates and vehicle x animals)")
    if uncertainty is not None:
        if uncertainty.population.model is not model:
            raise SpecError("uncertainty", "was built for a different model")
        _whole("uncertainty.draws", uncertainty.draws, MAX_ANIMALS, "draws")
        check_count("uncertainty.draws", uncertainty.draws * n_animals, MAX_ANIMALS, "animal-regimens (draws x animals)")
    return methods, requirements, times


def optimize(
    model: Model,
    space: RegimenSpace,
    target: Requirement,
    constraints: Sequence[Requirement] = (),
    population: Population | None = None,
    *,
    n_animals: int = 1000,
    verify_animals: int | None = None,
    seed: int = 0,
    methods: Sequence[str] = METHODS,
    every_h: float = 6.0,
    options: SolverOptions = SolverOptions(),
    chunk_size: int = 4096,
    gradient: GradientSettings = GradientSettings(),
    uncertainty: Uncertainty | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> OptimizationResult:
    """Find the regimen of `space` with the least total drug that meets `target` (its
    `fraction` is the PTA to reach) and every constraint; see the module docstring.

    **Arguments:**
    - `model`, `population`: the virtual animals (variability, covariates; `bw` in kg);
    - `space`: the regimens to search; `target`, `constraints`: `Requirement`s;
    - `n_animals`: animals every candidate is simulated on (the gradient search's
      training animals too); `verify_animals`: fresh animals for the verification
      (default `n_animals`);
    - `methods`: "grid", "gradient" or both; `every_h`: output step inside the
      requirements' windows (h); `options`, `chunk_size`: the solver and batch size;
    - `gradient`: the gradient search's settings; `uncertainty`: typical-value draws;
    - `progress(phase, done, total)`: called as chunks finish.

    **Returns:** an `OptimizationResult`. **Raises:** `SpecError` on bad input, before
    anything is solved."""
    population = population or Population(model)
    verify_animals = n_animals if verify_animals is None else verify_animals
    methods, requirements, times = check_optimization(model, space, target, constraints, population, n_animals=n_animals,
                                                      verify_animals=verify_animals, methods=methods, every_h=every_h,
                                                      uncertainty=uncertainty)

    def report(phase):
        return None if progress is None else (lambda done, total: progress(phase, done, total))

    start = time.perf_counter()
    animals = draw_animals(population, n_animals, seed)
    fresh = draw_animals(population, verify_animals, seed, first=n_animals)
    mean_bw = float(animals["bw"].mean())
    facts: dict = {"n_animals": n_animals, "verify_animals": verify_animals, "methods": list(methods),
                   "n_shapes": len(space.shapes()), "n_candidates": len(space.candidates()), "times_h": len(times)}
    table = vehicle = grid_choice = None
    best_attainable = None
    chosen = None
    if "grid" in methods:
        got = sweep(model, [c.regimen() for c in space.candidates()], requirements, population, animals, times_h=times,
                    options=options, chunk_size=chunk_size, vehicle=True, progress=report("grid"))
        vehicle = got.vehicle
        table = attainment_table(space, requirements, got.margins, got.endpoints, mean_bw)
        index, binding, best = _grid_answer(space, requirements, table)
        facts.update(grid_animal_regimens=got.animal_regimens, grid_compile_seconds=round(got.compile_seconds, 3),
                     grid_run_seconds=round(got.run_seconds, 3), grid_failed=int(np.count_nonzero(got.status)),
                     grid_steps_mean=round(float(np.mean(got.n_steps)), 2))
        if index is not None:
            grid_choice = space.candidates()[index]
            row = table.iloc[index]
            chosen = {**_describe(grid_choice, mean_bw), "method": "grid", "pta": float(row["pta"]),
                      "pta_ci_low": float(row["pta_ci_low"]), "pta_ci_high": float(row["pta_ci_high"]),
                      "shares": {r.name: float(row[f"{r.name}_share"]) for r in requirements}, "binding_constraints": binding}
        else:
            row = table.iloc[best]
            best_attainable = {**_describe(space.candidates()[best], mean_bw), "method": "grid", "pta": float(row["pta"]),
                               "pta_ci_low": float(row["pta_ci_low"]), "pta_ci_high": float(row["pta_ci_high"]),
                               "shares": {r.name: float(row[f"{r.name}_share"]) for r in requirements},
                               "failing": [r.name for r in requirements if row[f"{r.name}_share"] < r.fraction - 1e-12]}

    gradient_out = None
    if "gradient" in methods:
        if vehicle is None and any(r.relative_to_untreated for r in requirements):
            got = sweep(model, [], requirements, population, animals, times_h=times, options=options, chunk_size=chunk_size, vehicle=True)
            vehicle = got.vehicle
            facts["vehicle_animal_regimens"] = got.animal_regimens
        g = gradient_search(model, space.shapes(), requirements, animals, daily_dose_range=space.daily_dose_range, times_h=times,
                            vehicle=vehicle, options=options, settings=gradient)
        gradient_out = _gradient_summary(space, requirements, g, mean_bw)
        facts.update(gradient_animal_regimens=g.animal_regimens, gradient_evaluations=g.evaluations,
                     gradient_seconds=round(g.seconds, 3), gradient_compile_seconds=round(g.compile_seconds, 3))
        pick = gradient_out["answer_candidate"]
        if pick is not None:
            gradient_out["verification"] = _verify(model, pick, requirements, population, fresh, times, options, chunk_size)
        if chosen is None and "grid" not in methods and pick is not None:
            chosen = {**gradient_out["answer"], "method": "gradient"}
        if best_attainable is None and "grid" not in methods and pick is None:
            best_attainable = gradient_out["best_attainable"]

    if chosen is not None:
        candidate = grid_choice if chosen["method"] == "grid" else gradient_out["answer_candidate"]
        if chosen["method"] == "grid" or gradient_out.get("verification") is None:
            chosen["verification"] = _verify(model, candidate, requirements, population, fresh, times, options, chunk_size)
        else:
            chosen["verification"] = gradient_out["verification"]
        if uncertainty is not None:
            chosen["uncertainty"] = _uncertain_pta(model, candidate, requirements, population, uncertainty, n_animals, seed,
                                                   times, options, chunk_size)
    agreement = _agreement(space, chosen if chosen and chosen["method"] == "grid" else None, gradient_out) \
        if len(methods) == 2 else None
    if gradient_out is not None:
        gradient_out.pop("answer_candidate", None)
    facts["seconds"] = round(time.perf_counter() - start, 3)
    return OptimizationResult(chosen is not None, chosen, best_attainable, table, gradient_out, agreement,
                              chosen.get("uncertainty") if chosen else None, requirements, space, animals, facts)


def _gradient_summary(space: RegimenSpace, requirements, g, mean_bw: float) -> dict:
    shapes = space.shapes()
    per_shape = []
    for s, shape in enumerate(shapes):
        d = float(g.daily_dose_mg_per_kg[s])
        per_shape.append({
            "shape": shape.label, "pruned": bool(g.pruned[s]), "feasible": bool(g.feasible[s]),
            "daily_dose_mg_per_kg": None if math.isnan(d) else d,
            "total_mg_per_kg": None if math.isnan(d) else d * shape.drug_days,
            "shares": {r.name: (None if math.isnan(g.attainment[s, j]) else float(g.attainment[s, j])) for j, r in enumerate(requirements)},
            "binding_constraints": [] if g.pruned[s] else [r.name for j, r in enumerate(requirements) if g.multipliers[s, j] > 0],
        })
    feasible = np.flatnonzero(g.feasible)
    out = {"per_shape": per_shape, "animal_regimens": g.animal_regimens, "evaluations": g.evaluations,
           "history": g.history, "notes": list(g.notes), "answer": None, "answer_candidate": None, "best_attainable": None}
    if feasible.size:
        s = int(feasible[np.argmin(g.daily_dose_mg_per_kg[feasible] * np.array([shapes[i].drug_days for i in feasible]))])
        cand = Candidate(s, shapes[s], float(g.daily_dose_mg_per_kg[s]))
        out["answer_candidate"] = cand
        out["answer"] = {**_describe(cand, mean_bw), "pta": float(g.attainment[s, 0]),
                         "shares": per_shape[s]["shares"], "binding_constraints": per_shape[s]["binding_constraints"]}
    else:
        tried = np.flatnonzero(~g.pruned)
        s = int(tried[np.nanargmax(g.attainment[tried, 0])])
        cand = Candidate(s, shapes[s], float(g.daily_dose_mg_per_kg[s]))
        out["best_attainable"] = {**_describe(cand, mean_bw), "method": "gradient", "pta": float(g.attainment[s, 0]),
                                  "shares": per_shape[s]["shares"],
                                  "failing": [r.name for j, r in enumerate(requirements) if g.attainment[s, j] < r.fraction - 1e-12]}
    return out


def _agreement(space: RegimenSpace, grid_choice: dict | None, gradient_out: dict | None) -> dict:
    """Both answers' total drug within one grid step of each other, or both infeasible."""
    step = space.grid_step_ratio
    grad = gradient_out["answer"] if gradient_out else None
    out = {"grid_step_ratio": step, "grid_feasible": grid_choice is not None, "gradient_feasible": grad is not None}
    if grid_choice is None or grad is None:
        out["agree"] = (grid_choice is None) == (grad is None)
        return out
    ratio = grad["total_mg_per_kg"] / grid_choice["total_mg_per_kg"]
    out.update(grid_regimen=grid_choice["regimen"], gradient_regimen=grad["regimen"], total_drug_ratio_gradient_to_grid=ratio,
               same_shape=grid_choice["shape"] == grad["shape"], agree=bool(1.0 / step - 1e-9 <= ratio <= step + 1e-9))
    return out


def _uncertain_pta(model, candidate, requirements, population, uncertainty: Uncertainty, n_animals, seed, times, options, chunk_size) -> dict:
    """PTA of `candidate` under `uncertainty.draws` draws of the typical values (each on
    the same random effects of the training animals)."""
    names = uncertainty.population.iiv_names
    key = jax.random.fold_in(jax.random.PRNGKey(seed), ANIMAL_STREAM + 1)
    typical = uncertainty.population.sample(key, uncertainty.draws)
    ptas = []
    for d in range(uncertainty.draws):
        drawn = replace(population, typical={**population.typical, **{k: float(typical[k][d]) for k in names}})
        animals = draw_animals(drawn, n_animals, seed)
        got = sweep(model, [candidate.regimen()], requirements, drawn, animals, times_h=times, options=options, chunk_size=chunk_size)
        ptas.append(_shares(got.margins)[0, 0] / n_animals)
    ptas = np.asarray(ptas)
    return {"draws": uncertainty.draws, "parameters": list(names), "pta_median": float(np.median(ptas)),
            "pta_p05": float(np.percentile(ptas, 5)), "pta_p95": float(np.percentile(ptas, 95)),
            "share_of_draws_meeting_target": float(np.mean(ptas >= requirements[0].fraction - 1e-12)), "pta_per_draw": ptas.tolist()}
