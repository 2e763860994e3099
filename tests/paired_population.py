"""Helpers for the card tests: a config's trial with the same animals in every arm.

The cards' population statements compare arms animal by animal (a pig's two kidneys; a
mouse with and without anakinra), so every arm gets the same animals: row 0 is the
typical animal (the card's numbers), rows 1..n are drawn from the config's population.
An arm's own parameters (a knockout switch, a mock infection) still hold for its rows.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pandas as pd

import vtrial as vt
from vtrial.io.trial_config import BuiltTrial

from conftest import trial_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def built_trial(name: str) -> BuiltTrial:
    """The library objects of `configs/<name>.toml` (one animal per arm)."""
    return BuiltTrial(trial_config(CONFIGS / f"{name}.toml"), animals_per_arm=1)


def paired_animals(built: BuiltTrial, n: int, seed: int) -> pd.DataFrame:
    """`n + 1` animals (typical first) given to every arm of `built`."""
    pop = built.population
    drawn = pop.sample(jax.random.PRNGKey(seed), n)
    typical = pop.typical_parameters()
    base = pd.DataFrame({k: np.concatenate([[typical[k]], np.asarray(drawn[k], float)]) for k in drawn})
    tables = []
    for arm in built.arms:
        t = base.copy()
        t.insert(0, "arm", arm.name)
        t.insert(1, "animal", np.arange(n + 1))
        for k, v in arm.parameters.items():
            t[k] = v
        tables.append(t)
    return pd.concat(tables, ignore_index=True)


def simulate_paired(built: BuiltTrial, n: int, seed: int = 1) -> dict:
    """Simulate the config's arms on `paired_animals` with the config's solver and times.

    The chunk holds one animal per arm, the shape `vtrial run --typical` compiles, so the
    command-line runs of the same config reuse this compilation. Returns arm name ->
    {observable: (n + 1, n_times)} of predictions, `"noisy"` -> the same with residual
    error, and `"times_h"`.
    """
    animals = paired_animals(built, n, seed)
    res = vt.simulate(built.model, built.arms, built.population, times_h=built.times_h, animals=animals,
                      options=built.options, chunk_size=len(built.arms), states=False, seed=seed)
    assert (res.animals["status"] == "ok").all()
    arm = res.animals["arm"].to_numpy()
    order = res.animals["animal"].to_numpy()
    out = {"times_h": res.times_h, "noisy": {}}
    for a in built.arms:
        rows = np.flatnonzero(arm == a.name)
        rows = rows[np.argsort(order[rows])]
        out[a.name] = {k: v[rows] for k, v in res.solution.observables.items()}
        out["noisy"][a.name] = {k: v[rows] for k, v in res.noisy.items()}
    return out
