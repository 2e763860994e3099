"""Streaming: chunk-by-chunk summaries and outputs, with memory bounded by the chunk size.

- the quantile sketch keeps its stated accuracy (relative 1e-3 of the bracketing order
  statistics) and does not depend on how the values are batched;
- summaries streamed chunk by chunk equal the in-memory `summary_table` (exactly in
  exact mode; n and mean to rounding, quantiles within the stated accuracy in sketch
  mode);
- the `trial` job's streamed files equal the in-memory tables of `vt.simulate`;
- a 20,000-animal run with a small chunk size never holds a population-sized array.

A one-compartment oral PK model keeps it cheap (closed form: no ODE steps).
"""

from __future__ import annotations

import io
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import vtrial as vt
from vtrial.analysis import summaries
from vtrial.cli import app
from vtrial.io.trial_config import BuiltTrial, TrialConfig
from vtrial.jobs import RunContext
from vtrial.analysis.quantiles import QuantileSketch
from vtrial.engine.runner import iter_population_chunks
from vtrial.analysis.summaries import QUANTILES, SummaryAccumulator, summary_table
from vtrial.design.trial import prepare_trial
from vtrial.jobs.trial import run_trial

from conftest import trial_config

PK_TRIAL = """
kind = "trial"
name = "pk_stream"
model = "one_compartment_absorption"
seed = 3
animals_per_arm = 40
chunk_size = 64

[variability.cv_percent]
cl = 30
v = 20
ka = 40

[covariates.bw]
median = 0.25
cv_percent = 10

[residual.conc_mg_per_l]
proportional = 0.1
additive = 0.01

[[arms]]
name = "vehicle"
doses = []

[[arms]]
name = "low"
doses = [{{ type = "bolus", route = "oral", amount = 2, unit = "mg/kg", every_h = 12, count = 3 }}]

[[arms]]
name = "high"
doses = [{{ type = "bolus", route = "oral", amount = 20, unit = "mg/kg", every_h = 12, count = 3 }}]

[output]
end_h = 48
every_h = {every_h}

[sampling.conc_mg_per_l]
times_h = [1, 2, 4, 8, 24, 48]

[endpoints]
reference_arm = "low"
inhibition_window_days = [0, 1]
concentration = "conc_mg_per_l"
response = "conc_mg_per_l"
"""

runner = CliRunner()


def pk_config(tmp_path: Path, every_h: float = 1.0) -> Path:
    path = tmp_path / "pk_stream.toml"
    path.write_text(PK_TRIAL.format(every_h=every_h))
    return path


def built_trial(path: Path, animals_per_arm: int | None = None) -> tuple[TrialConfig, BuiltTrial]:
    cfg = trial_config(path)
    return cfg, BuiltTrial(cfg, animals_per_arm)


def bracket_bound(values: np.ndarray, q: float, accuracy: float) -> np.ndarray:
    """The sketch's guarantee per column: accuracy x the larger |order statistic| that
    percentile q interpolates between."""
    x = np.sort(values, axis=0)
    n = np.sum(np.isfinite(x), axis=0)
    k = np.floor((n - 1) * q / 100).astype(int)
    cols = np.arange(x.shape[1])
    lo, hi = np.abs(x[k, cols]), np.abs(x[np.minimum(k + 1, n - 1), cols])
    return accuracy * np.maximum(lo, hi) + 1e-300


def test_sketch_accuracy_and_batching():
    rng = np.random.default_rng(0)
    cols = 12
    x = np.concatenate(
        [
            rng.lognormal(0.0, 1.5, (300, cols)) * np.where(np.arange(cols) % 3 == 0, -1.0, 1.0),
            np.zeros((20, cols)),
            rng.normal(0.0, 1e-6, (100, cols)),
        ]
    )[rng.permutation(420)]
    x[:, 5] = np.nan
    x[7, 2] = np.nan
    whole, pieces = QuantileSketch(cols), QuantileSketch(cols)
    whole.add(np.arange(cols), x)
    for lo in range(0, len(x), 37):
        pieces.add(np.arange(cols), x[lo : lo + 37])
    np.testing.assert_array_equal(whole.count, np.isfinite(x).sum(axis=0))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN column
        np.testing.assert_allclose(whole.mean(), np.nanmean(x, axis=0), rtol=1e-12)
    for sketch in (whole, pieces):
        est = sketch.quantiles(list(QUANTILES.values()))
        assert np.all(np.isnan(est[5]))
        for j, q in enumerate(QUANTILES.values()):
            ok = np.arange(cols) != 5
            exact = np.nanpercentile(x[:, ok], q, axis=0)
            assert np.all(np.abs(est[ok, j] - exact) <= bracket_bound(x[:, ok], q, 1e-3))
    # integer counts per bin: the same bins whatever the batching
    np.testing.assert_array_equal(whole._keys, pieces._keys)
    np.testing.assert_array_equal(whole._counts, pieces._counts)


@pytest.fixture(scope="module")
def pk_population(tmp_path_factory):
    cfg, built = built_trial(pk_config(tmp_path_factory.mktemp("pk")), animals_per_arm=150)
    res = vt.simulate(built.model, built.arms, built.population, times_h=built.times_h, seed=cfg.seed, options=built.options, chunk_size=64)
    return cfg, built, res


@pytest.mark.parametrize("mode", ["exact", "sketch"])
def test_streamed_summary_matches_in_memory(pk_population, mode):
    cfg, built, res = pk_population
    arm_order = [a.name for a in built.arms]
    exact = summary_table(res.animals["arm"].to_numpy(), res.times_h, res.solution.observables, arm_order)
    inputs = prepare_trial(built.model, built.arms, built.population, times_h=built.times_h, seed=cfg.seed)
    acc = SummaryAccumulator(arm_order, built.times_h, built.model.observable_names, len(inputs.animals), exact_limit=None if mode == "exact" else 0)
    assert acc.exact == (mode == "exact")
    arm_index = inputs.animals["arm_index"].to_numpy()
    for chunk in iter_population_chunks(built.model, inputs.params, inputs.doses, built.times_h, options=built.options, chunk_size=64, states=False):
        acc.add(arm_index[chunk.animals], chunk.observables)
    got = acc.table()
    pd.testing.assert_frame_equal(got[["arm", "time_h", "observable"]], exact[["arm", "time_h", "observable"]])
    np.testing.assert_array_equal(got["n_animals"], exact["n_animals"])
    if mode == "exact":
        pd.testing.assert_frame_equal(got, exact)
        return
    np.testing.assert_allclose(got["mean"], exact["mean"], rtol=1e-12, atol=1e-300)
    values = res.solution.observables["conc_mg_per_l"]
    arms = res.animals["arm"].to_numpy()
    for arm in arm_order:
        rows = (got["arm"] == arm).to_numpy()
        for name, q in QUANTILES.items():
            bound = bracket_bound(values[arms == arm], q, 1e-3)
            assert np.all(np.abs(got.loc[rows, name].to_numpy() - exact.loc[rows, name].to_numpy()) <= bound), (arm, name)


@pytest.mark.long  # the streamed tables against the in-memory ones for a whole trial job: a validation (the streaming writers are checked by default)
def test_trial_job_streams_the_in_memory_tables(tmp_path, pk_population):
    config = pk_config(tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(config), "--out", str(out), "--chunk-size", "7"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cfg, built = built_trial(config)
    res = vt.simulate(built.model, built.arms, built.population, times_h=built.times_h, seed=cfg.seed, options=built.options)
    keys = ["arm", "animal", "time_h"]

    def same(file, expected):
        got = pd.read_parquet(out / file).sort_values(keys, kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected.sort_values(keys, kind="stable").reset_index(drop=True), check_exact=False, rtol=1e-13)

    same("trajectories.parquet", res.to_frame())
    same("observations.parquet", res.observations({"conc_mg_per_l": built.sampling["conc_mg_per_l"]}))
    summary = pd.read_csv(out / "summary.csv")
    expected = summary_table(res.animals["arm"].to_numpy(), res.times_h, res.solution.observables, [a.name for a in built.arms])
    pd.testing.assert_frame_equal(summary, pd.read_csv(io.StringIO(expected.to_csv(index=False))), rtol=1e-13)
    animals = pd.read_parquet(out / "animals.parquet")
    # The trial also integrates its endpoints' AUCs (`vtrial.engine.exposure`): more steps.
    expected = res.animals.drop(columns=["arm_index"])
    pd.testing.assert_frame_equal(animals.drop(columns=["n_steps"]), expected.drop(columns=["n_steps"]), check_dtype=False)
    assert (animals["n_steps"].to_numpy() >= expected["n_steps"].to_numpy()).all()

    quiet = tmp_path / "quiet"
    result = runner.invoke(app, ["run", str(config), "--out", str(quiet), "--no-trajectories"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not (quiet / "trajectories.parquet").exists() and not (quiet / "observations.parquet").exists()
    pd.testing.assert_frame_equal(pd.read_csv(quiet / "summary.csv"), summary)


@pytest.mark.long  # memory measurement of a large run
def test_memory_is_bounded_by_the_chunk_size(tmp_path, monkeypatch):
    """20,001 animals x 577 times (every 5 min for 48 h): one population-sized array of one
    observable would be 92 MB, so holding any (animals x times) array would push the
    run's traced peak (numpy, pandas: everything the host holds) past it; the peak
    stays under half of it. Variability is narrow so the quantile sketch
    (bounded by the spread of the values, not their number) stays small too."""
    monkeypatch.setattr(summaries, "EXACT_LIMIT", 0)  # stream the summaries (the default keeps up to 10M values)
    path = pk_config(tmp_path, every_h=1 / 12)
    path.write_text(path.read_text().replace("cl = 30\nv = 20\nka = 40", "cl = 5\nv = 5\nka = 5").replace("cv_percent = 10", "cv_percent = 2"))
    cfg, built = built_trial(path)
    per_arm, chunk = 6667, 250
    n_animals, n_times = 3 * per_arm, built.times_h.size
    population_bytes = n_animals * n_times * 8
    cfg_big = cfg.model_copy(update={"chunk_size": chunk, "animals_per_arm": per_arm})
    warm = tmp_path / "warm"
    warm.mkdir()
    # Compile outside the trace: the same chunk shape (3 arms x 84 animals fill a chunk of 250).
    run_trial(cfg_big, RunContext(out_dir=warm, animals_per_arm=84, trajectories=False))
    out = tmp_path / "big"
    out.mkdir()
    tracemalloc.start()
    try:
        facts = run_trial(cfg_big, RunContext(out_dir=out, trajectories=False))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert facts["n_animals"] == n_animals and facts["n_chunks"] == -(-n_animals // chunk)
    assert facts["summary_quantiles"].startswith("sketch") and not facts["trajectories"]
    assert peak < population_bytes / 2, f"peak {peak / 1e6:.1f} MB vs population array {population_bytes / 1e6:.1f} MB"
    summary = pd.read_csv(out / "summary.csv")
    assert (summary["n_animals"] == per_arm).all()
    assert sorted(p.name for p in out.iterdir()) == ["animals.parquet", "endpoints.csv", "report.png", "summary.csv"]
