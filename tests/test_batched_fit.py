"""Many fits at once (`vtrial.estimation.batched_fit.fit_batch`, `vtrial bootstrap`): a
replicate of weights one is the ordinary fit, a replicate's weights are its subjects'
copies, and a replicate's fit does not depend on the batch it is in. One tiny
closed-form dataset (tests/batched_fit_data.py), its compiled functions shared."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vtrial.estimation import fit_population
from vtrial.estimation.batched_fit import fit_batch
from vtrial.jobs.bootstrap import resample_counts, run_bootstrap, summarise

from batched_fit_data import tiny_population, tiny_spec, write_tiny_files

N = 10
# Replicate 1: subject 0 twice, subject 1 left out, subjects 2 and 3 three times.
DUPLICATES = np.array([2, 0, 3, 3, 1, 1, 1, 1, 1, 1], float)
TOL = 1e-5  # converged to 1e-5 SE: fits that differ in their line search agree closely


@pytest.fixture(scope="module")
def tiny():
    return tiny_population(N)


@pytest.fixture(scope="module")
def batch(tiny):
    model, data = tiny
    return fit_batch(model, data, tiny_spec(), np.stack([np.ones(N), DUPLICATES]), tolerance=TOL)


def test_weights_of_one_are_the_ordinary_fit(tiny, batch):
    model, data = tiny
    single = fit_population(model, data, tiny_spec(), covariance=None, tolerance=TOL)
    assert batch.converged[0] and single.converged
    # The same optimum to the convergence tolerance (the line searches differ).
    assert batch.ofv[0] == pytest.approx(single.ofv, abs=1e-5)
    np.testing.assert_allclose(batch.x[0], single.x, rtol=0, atol=1e-4)
    np.testing.assert_allclose(batch.estimates[0], single.estimation_values, rtol=1e-4, atol=1e-6)


def test_weights_are_duplicated_subjects_and_the_batch_does_not_matter(tiny, batch):
    model, data = tiny
    # The same subjects duplicated in the dataset itself (16 subjects after padding, as 10).
    copies = data.take(np.repeat(np.arange(N), DUPLICATES.astype(int)))
    duplicated = fit_batch(model, copies, tiny_spec(), np.ones((1, copies.n_subjects)), tolerance=TOL)
    alone = fit_batch(model, data, tiny_spec(), DUPLICATES[None], tolerance=TOL)
    assert batch.converged[1] and duplicated.converged[0] and alone.converged[0]
    assert not np.allclose(batch.x[1], batch.x[0], atol=1e-3)  # the weights matter
    np.testing.assert_allclose(duplicated.x[0], batch.x[1], rtol=0, atol=1e-5)
    assert duplicated.ofv[0] == pytest.approx(batch.ofv[1], abs=1e-7)
    # Batch-size invariance: replicate 1 alone, as in a batch of two.
    np.testing.assert_allclose(alone.x[0], batch.x[1], rtol=1e-10, atol=1e-12)
    assert alone.ofv[0] == pytest.approx(batch.ofv[1], abs=1e-9)


def test_replicates_are_chunked_under_the_lapack_threshold_and_nothing_changes(tiny, batch, monkeypatch):
    """Vmapped over replicates, every batched LAPACK call holds a subject chunk for each
    replicate: on the CPU the replicates are chunked too, so that the whole stays under
    jaxlib's parallel threshold (above it the kernels' thread pool deadlocked: 50
    Bolus_2CPT replicates at once never finished, 25 ran). With a threshold that allows
    one replicate per chunk, the fits are the same."""
    from vtrial.engine import lapack
    from vtrial.estimation import batched_fit

    model, data = tiny
    calls = []
    real = lapack.map_in_chunks

    def spy(fn, n, most, *args, **kwargs):
        calls.append((n, most))
        return real(fn, n, most, *args, **kwargs)

    monkeypatch.setattr(lapack, "map_in_chunks", spy)
    monkeypatch.setattr(lapack, "LAPACK_PARALLEL_WORK", 2)  # one item per chunk
    batched_fit._batched_evaluate.cache_clear()  # traced again, with the patched threshold
    try:
        chunked = fit_batch(model, data, tiny_spec(), np.stack([np.ones(N), DUPLICATES]), tolerance=TOL)
    finally:
        batched_fit._batched_evaluate.cache_clear()
    assert (2, 1) in calls  # two replicates, one per chunk
    np.testing.assert_allclose(chunked.x, batch.x, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(chunked.ofv, batch.ofv, rtol=1e-12)
    np.testing.assert_array_equal(chunked.iterations, batch.iterations)


@pytest.mark.long
def test_fixed_entries_stay_put(tiny):
    model, data = tiny
    free = np.ones((1, 5), bool)
    free[0, 1] = False  # V held at its start
    fit = fit_batch(model, data, tiny_spec(), np.ones((1, N)), free=free)
    assert fit.natural_names[1] == "v" and fit.natural[0, 1] == pytest.approx(0.9, rel=1e-14)
    assert fit.converged[0] and fit.gradient[0, 1] == 0.0


def test_resampling_is_per_replicate_and_stratified():
    groups = np.array([1] * 4 + [2] * 6)
    counts = resample_counts(10, [1, 2, 3], seed=5, groups=groups)
    assert np.all(counts.sum(axis=1) == 10)
    assert np.all(counts[:, :4].sum(axis=1) == 4) and np.all(counts[:, 4:].sum(axis=1) == 6)
    np.testing.assert_array_equal(resample_counts(10, [2], seed=5, groups=groups)[0], counts[1])


@pytest.mark.long
def test_bootstrap_command_writes_psn_tables_and_resumes(tmp_path, monkeypatch):
    config, data = write_tiny_files(tmp_path)
    out = tmp_path / "boot"
    # Interrupted after the first batch: the resumed run fits only the rest.
    import vtrial.jobs.bootstrap as job

    real = job.write_csv
    calls = []

    def stop_after_first(frame, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(frame, path)

    monkeypatch.setattr(job, "write_csv", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        run_bootstrap(config, data, samples=3, seed=1, out=out, batch=2, stratify="GROUP")
    monkeypatch.setattr(job, "write_csv", real)
    assert not out.exists()
    facts = run_bootstrap(config, data, samples=3, seed=1, out=out, batch=2, stratify="GROUP", resume=True)
    results = pd.read_csv(out / "bootstrap_results.csv")
    assert list(results["replicate"]) == [0, 1, 2, 3]
    assert list(results.columns[:6]) == ["replicate", "minimization_successful", "stopped", "iterations", "covariance_step_run", "ofv"]
    assert {"cl", "v", "omega2_cl", "omega2_v", "conc_mg_per_l.proportional"} <= set(results.columns)
    summary = pd.read_csv(out / "bootstrap_summary.csv")
    assert list(summary["statistic"]) == ["original", "mean", "median", "bias", "se", "percentile_2.5", "percentile_97.5",
                                          "n_used", "failed_share"]
    pd.testing.assert_frame_equal(summary, summarise(results), check_exact=False)
    assert facts["failed"] == 0 and (results["minimization_successful"] == 1).all()


def test_bootstrap_refuses_bad_input(tmp_path):
    from vtrial.errors import DataError, SpecError

    config, data = write_tiny_files(tmp_path)
    with pytest.raises(DataError, match="--stratify column 'SEX' not found"):
        run_bootstrap(config, data, samples=2, stratify="SEX", out=tmp_path / "a")
    with pytest.raises(SpecError, match="--samples"):
        run_bootstrap(config, data, samples=0, out=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


SEARCH = """
[covariate_search]
forward_p = 0.05
backward_p = 0.01

[[covariate_search.candidates]]
parameter = "cl"
covariate = "bw"
shape = "power"

[[covariate_search.candidates]]
parameter = "v"
covariate = "bw"
shape = "linear"
"""


def test_covariate_search_finds_the_strong_covariate(tmp_path):
    """CL ~ BW^1 simulated (10 subjects): forward inclusion takes it, not V ~ BW; the final
    config is a fit config with the effect, its exponent estimated near 1."""
    from vtrial.io.config import read_toml
    from vtrial.jobs.bootstrap import read_fit_inputs
    from vtrial.jobs.covariates import run_covariates

    config, data = write_tiny_files(tmp_path, extra_config=SEARCH)
    facts = run_covariates(config, data, out=tmp_path / "scm")
    assert facts["included"] == ["cl-bw-power"]
    log = pd.read_csv(tmp_path / "scm" / "scm_log.csv")
    assert list(log.columns) == ["step", "direction", "candidate", "ofv", "dOFV", "df", "p", "converged", "chosen"]
    first = log[(log["step"] == 1)].set_index("candidate")
    assert first.loc["cl-bw-power", "chosen"] and first.loc["cl-bw-power", "dOFV"] > 3.84
    assert first.loc["cl-bw-power", "p"] == pytest.approx(__import__("scipy").stats.chi2.sf(first.loc["cl-bw-power", "dOFV"], 1))
    assert "backward" in set(log["direction"])
    table, _ = read_toml(tmp_path / "scm" / "final_fit.toml")
    (effect,) = table["covariate_effects"]
    assert effect["parameter"] == "cl" and effect["covariate"] == "bw" and effect["estimate"] is True
    assert 0.5 < effect["exponent"] < 1.5
    assert "covariate_search" not in table
    built = read_fit_inputs(tmp_path / "scm" / "final_fit.toml", data).built  # vtrial fit reads it
    assert built.estimate_exponents == (("cl", "bw"),)
