"""NONMEM's classic first example, phenobarbital in neonates, fitted from a model file
outside the package (tests/models/pheno.py: NONMEM's $PK as the model's `individual`
function, THETA3 bounded to (-0.99, inf)) against NONMEM 7.5.1's FOCE-I fit
(../shared/data/pheno/README.md).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import vtrial

from vtrial.design.population import ResidualError
from vtrial.estimation import EstimationSpec, fit_population, population_objective
from vtrial.io.nonmem import read_nonmem
from vtrial.models import load_model

from conftest import REPO_ROOT, shared_data, shared_dir

PHENO = shared_dir() / "data" / "pheno"
MODEL_FILE = REPO_ROOT / "tests" / "models" / "pheno.py"


@pytest.fixture(autouse=True)
def _reference_data():
    """Skipped without ../shared/data/pheno, a failure with CI=true (`shared_data`)."""
    shared_data("data/pheno/pheno_nonmem.csv")

# NONMEM 7.5.1 (README): initial values, final estimates and their SEs.
INITIAL_THETA = {"tvcl": 0.00469307, "tvv": 1.00916, "apgr_v": 0.1}
INITIAL_OMEGA2 = {"tvcl": 0.0309626, "tvv": 0.031128}
INITIAL_SIGMA = 0.0130865
THETA = {"tvcl": 0.00469555, "tvv": 0.984258, "apgr_v": 0.158920}
THETA_SE = {"tvcl": 0.000209967, "tvv": 0.0268946, "apgr_v": 0.0837555}
OMEGA2 = {"tvcl": 0.0293508, "tvv": 0.0279060}
OMEGA2_SE = {"tvcl": 0.0134156, "tvv": 0.00747591}
SIGMA, SIGMA_SE = 0.0132410, 0.00227991
OFV = 586.27606


def load_pheno():
    """The model file's factory, loaded as the config's `"pheno.py:pheno"` is."""
    return load_model("pheno.py:pheno", MODEL_FILE.parent)


def pheno_spec(theta, omega2, sigma):
    return EstimationSpec(
        typical=dict(theta),
        omega2=dict(omega2),
        residual={"conc_mg_per_l": ResidualError(proportional=math.sqrt(sigma))},
    )


@pytest.fixture(scope="module")
def model():
    return load_pheno()


@pytest.fixture(scope="module")
def data(model):
    return read_nonmem(PHENO / "pheno_nonmem.csv", model, {"routes": {"iv": [1]}})


@pytest.fixture(scope="module")
def fit():
    """`vtrial fit tests/models/pheno_fit.toml pheno_nonmem.csv` (the config names the model
    file and NONMEM's initial values and bounds), from Python."""
    return vtrial.fit(MODEL_FILE.parent / "pheno_fit.toml", PHENO / "pheno_nonmem.csv")


@pytest.fixture(scope="module")
def at_nonmem(model, data):
    """NONMEM's final estimates, evaluated without iterating (MAXEVAL=0): the EBEs are
    re-estimated there."""
    return fit_population(model, data, pheno_spec(THETA, OMEGA2, SIGMA), max_iterations=0, covariance=None)


@pytest.mark.long
def test_fit_from_nonmem_initial_values_matches_nonmem(fit):
    assert fit.converged and fit.covariance_step == "ok", fit.warnings
    assert fit.ofv == pytest.approx(OFV, abs=0.05)
    table = fit.to_frame().set_index("name")
    for name, value in THETA.items():
        assert table.loc[name, "estimate"] == pytest.approx(value, rel=0.01), name
        assert table.loc[name, "se"] == pytest.approx(THETA_SE[name], rel=0.10), name
    for name, value in OMEGA2.items():
        assert table.loc[f"omega2_{name}", "estimate"] == pytest.approx(value, rel=0.05), name
        assert table.loc[f"omega2_{name}", "se"] == pytest.approx(OMEGA2_SE[name], rel=0.10), name
    sd, sd_se = table.loc["conc_mg_per_l.proportional", ["estimate", "se"]]
    assert sd**2 == pytest.approx(SIGMA, rel=0.05)
    assert 2 * sd * sd_se == pytest.approx(SIGMA_SE, rel=0.10)  # SIGMA is the variance: delta method
    # THETA3's bounds (-0.99, inf) set its scale; the others are (0, inf): log.
    assert list(table.loc[list(THETA), "scale"]) == ["log", "log", "log(x + 0.99)"]
    lo, hi = table.loc["apgr_v", ["ci_low", "ci_high"]]
    assert -0.99 < lo < THETA["apgr_v"] < hi  # transformed from the estimation scale: inside the bounds
    assert fit.eta_shrinkage_pct["tvcl"] == pytest.approx(47.580, abs=2.0)
    assert fit.eta_shrinkage_pct["tvv"] == pytest.approx(13.581, abs=2.0)


@pytest.mark.long
def test_pred_and_ipred_at_nonmem_estimates_and_ebes(at_nonmem, model):
    assert at_nonmem.ofv == pytest.approx(OFV, abs=0.05)
    ebe = pd.read_csv(PHENO / "pheno_reference_ebe.csv")
    individual = at_nonmem.individual_frame()
    assert list(individual["ID"]) == list(ebe["ID"])
    np.testing.assert_allclose(individual["eta_tvcl"], ebe["ETA1_CL"], atol=1e-4)
    np.testing.assert_allclose(individual["eta_tvv"], ebe["ETA2_VC"], atol=1e-4)
    np.testing.assert_allclose(individual["ofv"], ebe["OBJ"], atol=1e-3)
    # NONMEM's $PK variables are the individual table's columns too.
    assert {"cl", "v"} <= set(individual.columns)
    reference = pd.read_csv(PHENO / "pheno_reference_tab.csv")
    predictions = at_nonmem.predictions_frame()
    rows = reference.iloc[predictions["row"].to_numpy() - 1]  # `row`: 1-based data row, as the table has every record
    np.testing.assert_allclose(predictions["TIME"], rows["TIME"])
    np.testing.assert_allclose(predictions["IPRED"], rows["CIPREDI"], atol=1e-3)
    np.testing.assert_allclose(predictions["PRED"], rows["PRED"], atol=1e-3)


@pytest.mark.long  # gradient validation against central differences
def test_gradient_with_a_negative_bounded_theta_and_an_additive_effect(model, tmp_path):
    """A few subjects: the exact gradient against central differences with THETA3 on its
    shifted-log scale and an additive random effect on it (the expansion's variable is
    the parameter itself there, not its log)."""
    frame = pd.read_csv(PHENO / "pheno_nonmem.csv")
    frame[frame.ID <= 6].to_csv(tmp_path / "few.csv", index=False)
    few = read_nonmem(tmp_path / "few.csv", model, {"routes": {"iv": [1]}})
    spec = EstimationSpec(
        typical={"tvcl": 0.005, "tvv": 0.95, "apgr_v": -0.2},
        omega2={"tvcl": 0.03, "apgr_v": 0.02},
        additive=("apgr_v",),
        residual={"conc_mg_per_l": ResidualError(proportional=0.12)},
    )
    r = population_objective(model, few, spec)
    assert r.x_names[:3] == ("log_tvcl", "log_tvv", "log_apgr_v")
    assert r.x[2] == pytest.approx(math.log(-0.2 + 0.99))
    fd = []
    for i in range(r.x.size):
        values = []
        for sign in (1, -1):
            x = r.x.copy()
            x[i] += sign * 1e-5
            values.append(population_objective(model, few, spec, x=x, eta=r.eta, gradient=False).ofv)
        fd.append((values[0] - values[1]) / 2e-5)
    np.testing.assert_allclose(r.gradient, fd, rtol=1e-4, atol=1e-5)


def test_the_fit_config_gives_nonmem_initial_values_and_bounds(model):
    """tests/models/pheno_fit.toml lowers to the spec the fit above starts from, with the
    model file it names (relative to the config's folder: the same instance)."""
    import tomllib

    from vtrial.io import fit_config
    from vtrial.io.config import validate

    table = tomllib.loads((MODEL_FILE.parent / "pheno_fit.toml").read_text())
    assert table.pop("kind") == "fit" and table["model"] == "pheno.py:pheno"
    built = fit_config.BuiltFit(validate(fit_config.FitConfig, table, MODEL_FILE.parent))
    assert built.model is model
    spec = built.estimation_spec()
    expected = pheno_spec(INITIAL_THETA, INITIAL_OMEGA2, INITIAL_SIGMA)
    assert spec.typical == expected.typical and spec.omega2 == pytest.approx(expected.omega2, rel=1e-14)
    assert spec.residual["conc_mg_per_l"].proportional == pytest.approx(math.sqrt(INITIAL_SIGMA), rel=1e-15)
    assert spec.bounds == {"apgr_v": (-0.99, math.inf)} and spec.additive == ()
