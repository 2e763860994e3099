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
