"""The in vitro assays: EL4 displacement (Ki), functional IC50s, PBMC + LPS, and `vtrial run` on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import vtrial  # noqa: F401  (float64)
from vtrial.assays.calibration import calibrate
from vtrial.io.config import write_calibrated_value
from vtrial.assays.common import compile_timer, fit_logistic4_scaled
from vtrial.assays.displacement import fit_displacement, simulate_displacement
from vtrial.assays.functional import fit_functional, simulate_functional
from vtrial.assays.pbmc import simulate_pbmc, summarise_pbmc
from vtrial.assays.specs import DisplacementSpec, FunctionalSpec, PbmcSpec
from vtrial.cli import app
from vtrial.estimation.curvefit import cheng_prusoff_ki
from vtrial.errors import SpecError
from vtrial.io.config import read_toml, validate

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
KI_TRUE = 0.21
runner = CliRunner()


def load(name: str, schema):
    data, _ = read_toml(CONFIGS / f"{name}.toml")
    data.pop("kind")
    return validate(schema, data)


@pytest.fixture(scope="module")
def el4():
    return load("el4_displacement", DisplacementSpec)


def _fit(spec, plate):
    w = plate.wells
    return fit_displacement(w["concentration_nM"], w["counts_cpm"], plate.design, spec.trust, well_cv=spec.counting.well_cv)


@pytest.fixture(scope="module")
def el4_typical(el4):
    plate = simulate_displacement(el4, typical=True)
    return plate, _fit(el4, plate)


# ---------------------------------------------------------------------------
# EL4 6.1 displacement


def test_el4_noise_free_ki_within_2_percent(el4_typical):
    plate, fit = el4_typical
    assert len(plate.wells) == 12 and np.all(plate.wells["status"] == "ok")
    np.testing.assert_allclose(plate.wells["counts_cpm"], plate.wells["expected_counts_cpm"])  # no noise
    assert fit.logistic.converged and fit.full_model.converged
    np.testing.assert_allclose(fit.logistic.estimates["ic50"], 0.294, rtol=0.01)  # card: about 0.294 nM
    np.testing.assert_allclose(fit.logistic.estimates["hill"], 1.0, rtol=0.01)
    np.testing.assert_allclose(fit.cheng_prusoff.ki, KI_TRUE, rtol=0.02)
    np.testing.assert_allclose(fit.full_model.estimates["ki"], KI_TRUE, rtol=1e-4)
    assert fit.assumptions.ligand_depletion < 0.01  # card: under 1%
    assert fit.assumptions.recommended == "ki_cheng_prusoff"


def test_el4_curve_fit_table_contract(el4_typical):
    _, fit = el4_typical
    table = fit.table()
    assert list(table.columns[:6]) == ["parameter", "estimate", "se", "ci_low", "ci_high", "unit"]
    rows = table.set_index("parameter")
    for name in ("ic50", "hill", "ki_cheng_prusoff", "ki_full_model", "ki_recommended", "ligand_depletion_fraction",
                 "equilibration_fraction"):
        assert name in rows.index, name
    assert rows.loc["ic50", "unit"] == "nM" and rows.loc["ki_full_model", "unit"] == "nM"
    assert rows.loc["ki_recommended", "note"].startswith("trust ki_cheng_prusoff")
    for name in ("ic50", "ki_cheng_prusoff", "ki_full_model"):
        r = rows.loc[name]
        assert r.ci_low <= r.estimate <= r.ci_high and r.se >= 0


@pytest.mark.long
def test_el4_ci_covers_ki_in_90_of_100_experiments(el4, compile_log):
    """100 seeded experiments of 12 concentrations x 3 replicates, all 300 replicate
    series in one batched solve; one compiled 4PL fit reused for every experiment."""
    n_exp, reps = 100, el4.replicates
    plate = simulate_displacement(el4.model_copy(update={"replicates": n_exp * reps}), seed=2024)
    w = plate.wells
    experiment = (w["replicate"].to_numpy() - 1) // reps
    conc, counts = w["concentration_nM"].to_numpy(), w["counts_cpm"].to_numpy()

    def one(e):
        m = experiment == e
        return cheng_prusoff_ki(fit_logistic4_scaled(conc[m], counts[m]), el4.ligand.conc_nm, el4.ligand.kd_nm)

    first = one(0)
    with compile_log() as compiled:
        rest = [one(e) for e in range(1, n_exp)]
    assert compiled == [], compiled  # one compiled fit serves every replicate experiment
    kis = [first, *rest]
    covered = sum(k.ci_low <= KI_TRUE <= k.ci_high for k in kis)
    assert covered >= 90, covered
    assert abs(np.median([k.ki for k in kis]) / KI_TRUE - 1) < 0.03


@pytest.mark.parametrize("scenario", ["cells_1e7", "incubation_5min"])
def test_cheng_prusoff_biased_full_model_not(el4, scenario):
    if scenario == "cells_1e7":
        spec = el4.model_copy(update={"cells": el4.cells.model_copy(update={"per_well": 1e7})})
    else:
        spec = el4.model_copy(update={"incubation_h": 5.0 / 60.0})
    plate = simulate_displacement(spec, typical=True)
    fit = _fit(spec, plate)
    assert fit.cheng_prusoff.ki / KI_TRUE >= 2.0  # biased at least twofold (card)
    np.testing.assert_allclose(fit.full_model.estimates["ki"], KI_TRUE, rtol=0.02)
    assert fit.assumptions.recommended == "ki_full_model"
    rows = fit.table().set_index("parameter")
    assert rows.loc["ki_recommended", "note"].startswith("trust ki_full_model")
    np.testing.assert_allclose(rows.loc["ki_recommended", "estimate"], KI_TRUE, rtol=0.02)
    if scenario == "cells_1e7":
        assert fit.assumptions.ligand_depletion > 0.1
    else:
        assert fit.assumptions.equilibration < 0.95
    # with counting noise the full-model interval still covers the truth; Cheng-Prusoff's does not
    noisy = _fit(spec, simulate_displacement(spec, seed=7))
    assert noisy.full_model.ci_low["ki"] <= KI_TRUE <= noisy.full_model.ci_high["ki"]
    assert noisy.cheng_prusoff.ci_low > KI_TRUE


# ---------------------------------------------------------------------------
# functional assays


@pytest.mark.parametrize("name, target_nm", [("mrc5_il6", 0.045), ("whole_blood_il8", 0.603)])
def test_functional_configs_give_seed_ic50(name, target_nm):
    spec = load(name, FunctionalSpec)
    plate = simulate_functional(spec, typical=True)
    fit = fit_functional(spec, plate)
    assert fit.logistic.converged
    np.testing.assert_allclose(fit.ic50_nm, target_nm, rtol=0.05)
    assert plate.top > plate.bottom  # IL-1β stimulates, full receptor block leaves basal release
    rows = fit.table().set_index("parameter")
    assert {"ic50", "hill", "ic50_target"} <= set(rows.index)


def test_whole_blood_sink_and_stimulus_shift_the_ic50():
    """Same human receptor Ki in both: whole blood's IC50 is >10x MRC-5's, and removing the
    soluble-receptor sink lowers it."""
    wb = load("whole_blood_il8", FunctionalSpec)
    mrc5 = load("mrc5_il6", FunctionalSpec)
    assert wb.parameters.ki_nm == mrc5.parameters.ki_nm
    no_sink = wb.parameters.model_copy(update={"sink_capacity_nm": 0.0})
    ic50_no_sink = fit_functional(wb, simulate_functional(wb, typical=True, parameters=no_sink)).ic50_nm
    assert ic50_no_sink < 0.603
    assert 0.603 - ic50_no_sink > 0.02  # the sink holds some tens of pM of anakinra


def test_calibration_reproduces_shipped_value(tmp_path):
    spec = load("mrc5_il6", FunctionalSpec)
    shipped = spec.parameters.ki_nm
    start = spec.model_copy(update={"parameters": spec.parameters.model_copy(update={"ki_nm": 0.05})})
    result = calibrate(start)
    np.testing.assert_allclose(result.value, shipped, rtol=2e-3)
    assert abs(result.relative_error) < 1e-3
    # --write changes only that number
    cfg = tmp_path / "mrc5.toml"
    cfg.write_text((CONFIGS / "mrc5_il6.toml").read_text())
    write_calibrated_value(cfg, "ki_nm", 0.0123)
    before = (CONFIGS / "mrc5_il6.toml").read_text().splitlines()
    after = cfg.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(changed) == 1 and changed[0][1].startswith("ki_nm = 0.0123") and "# C:" in changed[0][1]


# ---------------------------------------------------------------------------
# PBMC + LPS


@pytest.fixture(scope="module")
def pbmc():
    return load("pbmc_lps", PbmcSpec)


def _summary(spec, typical):
    s = summarise_pbmc(spec, simulate_pbmc(spec, typical=typical))
    return s.set_index(["condition", "time_h", "cytokine"])


def test_pbmc_typical_donor_shows_card_behaviour(pbmc):
    s = _summary(pbmc, typical=True)
    med = s["median_pg_per_ml"]
    red = s["median_reduction_percent"]
    for t in (6.0, 16.0):
        for c in ("il1b", "il6", "tnfa"):
            assert med[("lps", t, c)] > 100.0, (t, c)  # LPS raises all three
            assert med[("medium", t, c)] < 0.01 * med[("lps", t, c)], (t, c)  # almost nothing without LPS
            assert med[("anakinra", t, c)] < 0.01 * med[("lps", t, c)], (t, c)
        assert red[("lps_anakinra", t, "il1b")] >= 30.0  # anakinra lowers IL-1β and TNF-α clearly ...
        assert red[("lps_anakinra", t, "tnfa")] >= 30.0
        assert 0.0 < red[("lps_anakinra", t, "il6")] < 0.5 * min(red[("lps_anakinra", t, "il1b")], red[("lps_anakinra", t, "tnfa")])
    for c in ("il1b", "il6", "tnfa"):
        assert med[("lps", 16.0, c)] > med[("lps", 6.0, c)]  # cytokines accumulate


def test_pbmc_donors_il6_reduction_less_consistent(pbmc):
    s = _summary(pbmc, typical=False)
    frac = s["donors_reduced_20_percent"]
    for t in (6.0, 16.0):
        assert frac[("lps_anakinra", t, "il1b")] >= 2 / 3 and frac[("lps_anakinra", t, "tnfa")] >= 2 / 3, t
        assert frac[("lps_anakinra", t, "il6")] < min(frac[("lps_anakinra", t, "il1b")], frac[("lps_anakinra", t, "tnfa")])


# ---------------------------------------------------------------------------
# configs, validation and `vtrial run`


@pytest.mark.parametrize("edit, field", [
    ({"grid": {"start_nm": 1.0, "stop_nm": 0.1, "n": 12}}, "grid"),
    ({"replicates": 0}, "replicates"),
    ({"counting": {"nsb_fraction": 1.5}}, "counting.nsb_fraction"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_displacement_config_names_the_field(edit, field):
    data, _ = read_toml(CONFIGS / "el4_displacement.toml")
    data.pop("kind")
    data.update(edit)
    with pytest.raises(SpecError) as err:
        validate(DisplacementSpec, data)
    assert err.value.field.startswith(field)


def test_pbmc_config_rejects_unknown_reference_condition():
    data, _ = read_toml(CONFIGS / "pbmc_lps.toml")
    data.pop("kind")
    data["treated"] = "lps_plus_drug"
    with pytest.raises(SpecError, match="lps_plus_drug"):
        validate(PbmcSpec, data)


@pytest.mark.parametrize("name", ["el4_displacement", "mrc5_il6", "whole_blood_il8", "pbmc_lps"])
def test_vtrial_run_typical_writes_outputs(name, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(CONFIGS / f"{name}.toml"), "--typical", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for f in ("wells.parquet", "summary.csv", "curve_fit.csv", "curve_fit.png", "run.json"):
        assert (out / f).is_file(), f
    table = pd.read_csv(out / "curve_fit.csv")
    assert list(table.columns[:6]) == ["parameter", "estimate", "se", "ci_low", "ci_high", "unit"]
    assert "ic50" in set(table["parameter"])
    facts = json.loads((out / "run.json").read_text())
    assert facts["typical"] is True and facts["n_wells"] >= 1 and "compile_seconds" in facts and "run_seconds" in facts
    printed = " ".join(result.output.split())  # the results are on the terminal, not only in curve_fit.csv
    key = "curve_ic50_nm" if name == "pbmc_lps" else "ic50_nm"
    assert f"{key}: {facts[key]:.4g} nM ({facts[key] * 1e3:.4g} pM)" in printed
    if name == "el4_displacement":
        assert "ki_cheng_prusoff_nm:" in printed and "ki_full_model_nm:" in printed
    wells = pd.read_parquet(out / "wells.parquet")
    if name == "el4_displacement":
        assert {"ki_cheng_prusoff", "ki_full_model", "ki_recommended"} <= set(table["parameter"])
        assert len(wells) == 12 and {"concentration_nM", "replicate", "counts_cpm"} <= set(wells.columns)
    elif name == "pbmc_lps":
        assert (out / "time_course.png").is_file()
        assert {"il1b_pg_per_ml", "il6_pg_per_ml", "tnfa_pg_per_ml", "time_h"} <= set(wells.columns)
    else:
        assert len(wells) == 12 and "concentration_nM" in wells.columns


def test_vtrial_run_noisy_el4_with_seed_and_replicates(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(CONFIGS / "el4_displacement.toml"), "--seed", "11",
                                 "--animals-per-arm", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    facts = json.loads((out / "run.json").read_text())
    assert facts["seed"] == 11 and facts["n_wells"] == 24 and facts["typical"] is False
    wells = pd.read_parquet(out / "wells.parquet")
    assert sorted(wells["replicate"].unique()) == [1, 2]
    assert np.all(wells["counts_cpm"] == np.round(wells["counts_cpm"]))  # Poisson counts


def test_vtrial_run_rejects_animals_table_before_writing(tmp_path):
    animals = tmp_path / "animals.csv"
    animals.write_text("arm,animal\na,0\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(CONFIGS / "mrc5_il6.toml"), "--animals", str(animals), "--out", str(out)])
    assert result.exit_code == 2
    assert "--animals" in result.output
    assert not out.exists()


def test_vtrial_calibrate_rejects_other_kinds():
    result = runner.invoke(app, ["calibrate", str(CONFIGS / "el4_displacement.toml")])
    assert result.exit_code == 2
    assert "nothing to calibrate" in result.output


def test_compile_timer_counts_compilation():
    import jax
    import jax.numpy as jnp

    with compile_timer() as t:
        jax.jit(lambda x: jnp.sin(x) * 3.0 + 0.123456)(jnp.ones(7))
    assert t["seconds"] > 0


def test_scaled_4pl_fit_is_the_same_fit_at_any_response_scale():
    conc = np.repeat(np.logspace(-3, 2.5, 12), 3)
    rng = np.random.default_rng(1)
    y = 0.05 + 0.95 / (1 + (conc / 0.3) ** 1.1) + rng.normal(0, 0.01, conc.size)
    small = fit_logistic4_scaled(conc, y)
    big = fit_logistic4_scaled(conc, 2e4 * y)
    assert small.converged and big.converged
    for name in ("bottom", "top"):
        np.testing.assert_allclose(big.estimates[name], 2e4 * small.estimates[name], rtol=1e-6)
        np.testing.assert_allclose(big.se[name], 2e4 * small.se[name], rtol=1e-4)
    for name in ("ic50", "hill"):
        np.testing.assert_allclose(big.estimates[name], small.estimates[name], rtol=1e-6)
        np.testing.assert_allclose(big.ci_high[name], small.ci_high[name], rtol=1e-4)
    np.testing.assert_allclose(big.ssr, 4e8 * small.ssr, rtol=1e-6)
