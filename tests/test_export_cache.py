"""Traced solves kept on disk (`vtrial.engine.export_cache`): a new process, simulated here
by forgetting every compiled function, reads the traced solve back instead of tracing it
again, and gets the same numbers; a model that is not the shipped instance is not cached."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from vtrial.design.dosing import Bolus, Regimen, lower_regimens
from vtrial.engine import export_cache, runner
from vtrial.engine.runner import clear_compiled, simulate_population
from vtrial.models import get_model, one_compartment

TIMES = np.array([0.5, 1.0, 2.0, 4.0, 8.0])


@pytest.fixture
def cache_dir(tmp_path):
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path))
    try:
        yield tmp_path
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


@pytest.fixture
def traces(monkeypatch):
    """How many times the one-animal solve was traced."""
    count = []
    solve = runner.solve_animal

    def counting(*args, **kwargs):
        count.append(1)
        return solve(*args, **kwargs)

    monkeypatch.setattr(runner, "solve_animal", counting)
    return count


def simulate(model):
    params = {k: np.full(3, v) for k, v in model.typical_values().items()}
    params["cl"] = np.array([0.05, 0.1, 0.2])
    doses = lower_regimens(model, [Regimen((Bolus(1.0, route="oral"),))] * 3, n_records=2)
    return simulate_population(model, params, doses, TIMES, chunk_size=3, devices=jax.devices()[:1])


def forget_compiled():
    clear_compiled()
    jax.clear_caches()


def test_a_new_process_reads_the_traced_solve_instead_of_tracing(cache_dir, traces):
    model = get_model("one_compartment_absorption")
    forget_compiled()
    first = simulate(model)
    assert len(traces) == 1
    (entry,) = (cache_dir / export_cache.FOLDER).glob("one_compartment_absorption-*.jaxexport")
    forget_compiled()
    again = simulate(model)
    assert len(traces) == 1  # read back, not traced
    np.testing.assert_array_equal(first.observables["conc_mg_per_l"], again.observables["conc_mg_per_l"])
    entry.write_bytes(b"not an export")  # a damaged entry is traced afresh and rewritten
    forget_compiled()
    np.testing.assert_array_equal(simulate(model).observables["conc_mg_per_l"], first.observables["conc_mg_per_l"])
    assert len(traces) == 2 and entry.read_bytes() != b"not an export"


def test_a_model_that_is_not_the_shipped_instance_is_traced_every_time(cache_dir, traces):
    model = one_compartment(absorption=True)  # same name, another instance: may differ
    assert model is not get_model(model.name)
    forget_compiled()
    simulate(model)
    forget_compiled()
    simulate(model)
    assert len(traces) == 2 and not (cache_dir / export_cache.FOLDER).exists()


# -- the per-subject functions of a population fit -------------------------------------


def bolus_data(n_subjects: int, n_obs: int):
    """`n_subjects` subjects, one IV bolus, `n_obs` samples (DV: a smooth curve with a
    per-subject factor: an objective, not a fit, is what is compared)."""
    from vtrial.estimation import PopulationData

    model = get_model("one_compartment")
    times = np.geomspace(0.5, 12.0, n_obs)
    doses = lower_regimens(model, [Regimen((Bolus(1.0),))] * n_subjects)
    factor = 1.0 + 0.1 * np.sin(np.arange(n_subjects))[:, None]
    return model, PopulationData(
        ids=np.arange(1, n_subjects + 1), doses=doses, obs_time_h=np.tile(times, (n_subjects, 1)),
        obs_observable=np.zeros((n_subjects, n_obs), int), dv=factor * np.exp(-0.1 * times),
        obs_mask=np.ones((n_subjects, n_obs), bool), covariates={}, dv_scale=np.array([1.0]),
        obs_row=np.arange(n_subjects * n_obs).reshape(n_subjects, n_obs) + 2,
    )


def objective(n_subjects: int, n_obs: int):
    from vtrial.design.population import ResidualError
    from vtrial.estimation import EstimationSpec, population_objective

    model, data = bolus_data(n_subjects, n_obs)
    spec = EstimationSpec(typical={"cl": 0.1, "v": 1.0}, omega2={"cl": 0.1},
                          residual={"conc_mg_per_l": ResidualError(proportional=0.1)})
    return population_objective(model, data, spec, method="fo")  # FO: the quickest to compile


def test_fits_of_similar_size_share_compiled_functions_and_a_new_process_reads_them(cache_dir):
    from vtrial.estimation import focei
    from vtrial.estimation.subjects import size_bucket

    assert [size_bucket(n) for n in (1, 2, 3, 5, 7, 9, 13, 17, 25, 33, 59, 120)] == [1, 2, 3, 6, 8, 12, 16, 24, 32, 48, 64, 128]
    focei.problem.cache_clear()
    forget_compiled()
    counts = export_cache.COUNTS
    before = dict(counts)
    first = objective(9, 5)  # padded to 16 subjects x 6 observations
    traced = counts["traced"] - before["traced"]
    assert traced >= 2  # the linearisation at eta = 0 and the objective's Jacobian
    objective(11, 6)  # another dataset in the same bucket: nothing new is traced or compiled
    assert counts["traced"] - before["traced"] == traced and counts["read"] == before["read"]
    # A new process (simulated: every compiled function forgotten) reads them, not traces them.
    focei.problem.cache_clear()
    forget_compiled()
    traced_so_far = counts["traced"]
    again = objective(9, 5)
    assert counts["traced"] == traced_so_far and counts["read"] > before["read"]
    np.testing.assert_allclose(again.ofv, first.ofv, rtol=1e-12)
    np.testing.assert_allclose(again.gradient, first.gradient, rtol=1e-10)
