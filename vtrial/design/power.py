r"""Study size by replicate virtual studies: power against the number of animals per arm.

A study has a control arm (e.g. vehicle) and one or more treated arms; each animal gives
one endpoint value computed from its *observations* (predictions plus residual error at
the sampling times, e.g. the AUC of a disease score over days 22-28 from daily
measurements), and a pre-specified test compares each treated arm with the control:

- `welch`: Welch's t-test; `mann_whitney`: the Mann-Whitney U test (both two-sided;
  with several treated arms their p-values are adjusted by `correction`: Holm,
  Bonferroni or none);
- `dunnett`: Dunnett's many-to-one t-test (pooled SD, its own multiplicity control).

The power for `n` animals per arm is the share of `replicates` virtual studies in which a
comparison is significant at `alpha`, with a Clopper-Pearson 95% interval.

**Largest study first.** Every replicate study is simulated once at the largest `n`
(`n_max` animals per arm, each replicate with its own animals and residual error), and the
study with `n` animals per arm is the **first `n` animals of each replicate**. The smaller
studies are then nested in the larger ones: common random numbers across `n`, so power
grows with `n` without Monte Carlo noise between sizes, and the simulation costs
`replicates x n_max x arms` animals instead of that times the number of sizes. Each
size on its own is still an exact sample of studies of that size (the first `n` of
`n_max` independent animals are `n` independent animals).

Replicate `r`, animal `k` of an arm is the animal at position `r * n_max + k` of that arm
in the trial pipeline, so its parameters and residual error depend only on the seed, the
arm and that position (not on chunks or devices). All replicates of all arms are one
batched solve (`vtrial.design.trial.trial_chunks`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from vtrial.analysis.endpoints import endpoint_values
from vtrial.analysis.statistics import (
    bonferroni, clopper_pearson, dunnett_critical_value, dunnett_statistics, holm, mann_whitney_p, welch_p,
)
from vtrial.design.population import Population
from vtrial.design.trial import Arm, prepare_trial, trial_chunks
from vtrial.engine.solve import SolverOptions
from vtrial.errors import SpecError
from vtrial.limits import MAX_ANIMALS, check_count
from vtrial.models.base import Endpoint, Model, check_endpoints

TESTS = ("welch", "mann_whitney", "dunnett")
CORRECTIONS = ("holm", "bonferroni", "none")


@dataclass(frozen=True)
class PowerResult:
    """`table`: one row per `n`, test and comparison (`n`, `test`, `comparison`, `power`,
    `ci_low`, `ci_high`, `replicates`); `smallest_n`: per `test: comparison`, the smallest
    `n` whose power reaches `target_power` (None if none does); `endpoint_values`: arm ->
    `(replicates, n_max)`; `facts`: counts and timings."""

    table: pd.DataFrame
    smallest_n: dict
    target_power: float
    endpoint_values: dict
    facts: dict = field(default_factory=dict)


def _check(arms, control, animals_per_arm, replicates, alpha, tests, correction, target_power):
    names = [a.name for a in arms]
    if control not in names:
        raise SpecError("control_arm", f"unknown arm {control!r}; arms: {', '.join(names)}")
    if len(arms) < 2:
        raise SpecError("arms", "a control and at least one treated arm are needed")
    sizes = list(animals_per_arm)
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in sizes):
        raise SpecError("animals_per_arm", f"give whole numbers >= 2 (two animals per arm at least), got {sizes!r}")
    if isinstance(replicates, bool) or not (isinstance(replicates, int) and replicates >= 1):
        raise SpecError("replicates", f"must be a whole number >= 1, got {replicates!r}")
    if not 0 < alpha < 1:
        raise SpecError("alpha", f"must lie in (0, 1), got {alpha!r}")
    if not 0 < target_power < 1:
        raise SpecError("target_power", f"must lie in (0, 1), got {target_power!r}")
    for t in tests:
        if t not in TESTS:
            raise SpecError("tests", f"unknown test {t!r}; allowed: {', '.join(TESTS)}")
    if not tests:
        raise SpecError("tests", f"give at least one of {', '.join(TESTS)}")
    if correction not in CORRECTIONS:
        raise SpecError("correction", f"unknown correction {correction!r}; allowed: {', '.join(CORRECTIONS)}")
    return sorted(set(sizes))


def _significant(test: str, control: np.ndarray, treated: np.ndarray, alpha: float, correction: str) -> np.ndarray:
    """`(k, R)` which comparisons are significant; `control` `(R, n)`, `treated` `(k, R, n)`."""
    k = treated.shape[0]
    if test == "dunnett":
        t, df = dunnett_statistics(control, treated)
        failed = np.isnan(t)  # a replicate with a failed animal counts as not significant
        return ~failed & (np.abs(np.nan_to_num(t)) > dunnett_critical_value(k, df, alpha))
    p_of = welch_p if test == "welch" else mann_whitney_p
    p = np.stack([p_of(treated[i], control) for i in range(k)], axis=-1)  # (R, k)
    if k > 1 and correction == "holm":
        p = holm(p)
    elif k > 1 and correction == "bonferroni":
        p = bonferroni(p)
    return (np.nan_to_num(p, nan=1.0) <= alpha).T


def check_power_study(
    model: Model,
    arms: Sequence[Arm],
    population: Population,
    *,
    control: str,
    endpoint: Endpoint,
    times_h,
    sampling_times_h: Mapping[str, Sequence[float]] | None = None,
    animals_per_arm: Sequence[int] = (4, 6, 8, 10, 12, 15, 20),
    replicates: int = 1000,
    alpha: float = 0.05,
    tests: Sequence[str] = ("welch", "mann_whitney"),
    correction: str = "holm",
    target_power: float = 0.8,
) -> tuple[list[int], np.ndarray]:
    """Everything `power` checks before its first solve (the same arguments); raises
    `SpecError` naming the field. The animals simulated (replicates x the largest n x
    arms) are bounded by `vtrial.limits.MAX_ANIMALS`.

    **Returns:** `(sorted study sizes, mask of the output times at which the endpoint's
    observable is sampled)`."""
    sizes = _check(arms, control, animals_per_arm, replicates, alpha, tuple(tests), correction, target_power)
    # Name the factor at fault: the larger of the replicates and the largest study size.
    check_count("animals_per_arm" if sizes[-1] > replicates else "replicates", replicates * sizes[-1] * len(arms), MAX_ANIMALS,
                f"animals ({replicates:,} replicates x largest n {sizes[-1]:,} x {len(arms)} arms)")
    if population.model is not model:
        raise SpecError("population", "was built for a different model")
    check_endpoints(model, [endpoint], "endpoint")
    times = np.asarray(times_h, dtype=float)
    obs = endpoint.observable
    if obs not in population.residual:
        raise SpecError(f"residual.{obs}", f"the endpoint is computed from observations of {obs!r}: give its residual error")
    sampled = np.asarray((sampling_times_h or {}).get(obs, times), dtype=float)
    if not np.all(np.isin(sampled, times)):
        raise SpecError(f"sampling.{obs}", "sampling times must be among the output times")
    mask = np.isin(times, sampled)
    window = times[mask]
    if window.size == 0:
        raise SpecError(f"sampling.{obs}", "no sampling times: the endpoint needs observations")
    inside = window[(window >= (endpoint.start_h or window[0])) & (window <= (endpoint.end_h or window[-1]))]
    if inside.size < (1 if endpoint.statistic == "value" else 2) or (endpoint.statistic == "value" and endpoint.start_h not in window):
        raise SpecError("endpoint", f"the endpoint's window holds too few sampling times of {obs} ({inside.size})")
    return sizes, mask


def power(
    model: Model,
    arms: Sequence[Arm],
    population: Population,
    *,
    control: str,
    endpoint: Endpoint,
    times_h,
    sampling_times_h: Mapping[str, Sequence[float]] | None = None,
    animals_per_arm: Sequence[int] = (4, 6, 8, 10, 12, 15, 20),
    replicates: int = 1000,
    alpha: float = 0.05,
    tests: Sequence[str] = ("welch", "mann_whitney"),
    correction: str = "holm",
    target_power: float = 0.8,
    seed: int = 0,
    options: SolverOptions = SolverOptions(),
    chunk_size: int = 4096,
    progress: Callable[[int, int], None] | None = None,
) -> PowerResult:
    """Power of a study against the animals per arm, by replicate virtual studies (see
    the module docstring).

    **Arguments:**
    - `arms`: the control and the treated arms (`Arm.n_animals` is ignored);
      `control`: the control arm's name;
    - `endpoint`: the per-animal endpoint, computed from the observations of its
      observable (which needs a residual error model in `population`) at that
      observable's `sampling_times_h` (default: every output time);
    - `times_h`: output times (must contain the sampling times);
    - `animals_per_arm`: the study sizes; `replicates`: studies per size;
    - `tests`, `correction`, `alpha`, `target_power`: the analysis.

    **Returns:** a `PowerResult`."""
    sizes, mask = check_power_study(model, arms, population, control=control, endpoint=endpoint, times_h=times_h,
                                    sampling_times_h=sampling_times_h, animals_per_arm=animals_per_arm, replicates=replicates,
                                    alpha=alpha, tests=tests, correction=correction, target_power=target_power)
    times = np.asarray(times_h, dtype=float)
    obs = endpoint.observable
    window = times[mask]
    n_max = sizes[-1]
    study = [replace(a, n_animals=replicates * n_max) for a in arms]
    start = time.perf_counter()
    inputs = prepare_trial(model, study, population, times_h=times, seed=seed)
    chunks = trial_chunks(model, inputs, times, seed=seed, observed=(obs,), with_error=True, options=options, chunk_size=chunk_size)
    values = np.full((len(arms), replicates * n_max), np.nan)
    done = 0
    for chunk in chunks:
        got = endpoint_values([endpoint], window, {obs: chunk.observations[obs][:, mask]})[endpoint.name]
        values[inputs.arm_index[chunk.rows], inputs.position[chunk.rows]] = got
        done += chunk.rows.size
        if progress is not None:
            progress(done, len(inputs.animals))
    values = values.reshape(len(arms), replicates, n_max)
    c = [a.name for a in arms].index(control)
    treated_idx = [i for i in range(len(arms)) if i != c]
    rows = []
    for n in sizes:
        ctrl, treated = values[c, :, :n], values[treated_idx, :, :n]
        for test in tests:
            significant = _significant(test, ctrl, treated, alpha, correction)
            for i, a in enumerate(treated_idx):
                k = int(significant[i].sum())
                lo, hi = clopper_pearson(k, replicates)
                rows.append({"n": n, "test": test, "comparison": f"{arms[a].name} vs {control}", "power": k / replicates,
                             "ci_low": float(lo), "ci_high": float(hi), "replicates": replicates})
    table = pd.DataFrame(rows)
    smallest = {}
    for (test, comparison), group in table.groupby(["test", "comparison"], sort=False):
        reached = group[group["power"] >= target_power]
        smallest[f"{test}: {comparison}"] = int(reached["n"].min()) if len(reached) else None
    facts = {"replicates": replicates, "n_max": n_max, "n_animals_simulated": int(len(inputs.animals)),
             "compile_seconds": round(chunks.compile_seconds, 3), "run_seconds": round(chunks.run_seconds, 3),
             "seconds": round(time.perf_counter() - start, 3), "failed_animals": int(np.count_nonzero(np.isnan(values)))}
    return PowerResult(table, smallest, target_power, {a.name: values[i] for i, a in enumerate(arms)}, facts)
