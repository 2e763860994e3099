"""Tests for vtrial.estimation.curvefit (4PL model and fit, Cheng-Prusoff, figure) and its data loading."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from vtrial.estimation.curvefit import DataError, cheng_prusoff_ki, curve_fit_figure, fit_logistic4, logistic4
from vtrial.io.tables import load_concentration_response
from vtrial.io.writers import save_figure

TRUTH = {"bottom": 5.0, "top": 100.0, "ic50": 0.294, "hill": 1.2}  # ic50 in nM
NOISE_SD = 3.0


def _curve(conc, p):
    return np.asarray(logistic4(conc, p["bottom"], p["top"], np.log10(p["ic50"]), p["hill"]))


@pytest.fixture(scope="module")
def design_nM():
    """Vehicle + 11 half-log steps 1 pM .. 300 nM, triplicates (36 wells)."""
    levels = np.concatenate([[0.0], 10.0 ** np.linspace(-3.0, 2.5, 11)])
    return np.repeat(levels, 3)


@pytest.fixture(scope="module")
def clean_fit(design_nM):
    return fit_logistic4(design_nM, _curve(design_nM, TRUTH), conc_unit="nM", response_unit="%")


# ---------------------------------------------------------------------------
# model


def test_logistic4_formula_and_zero_concentration():
    conc = jnp.array([0.0, 0.1, 0.294, 3.0])
    y = logistic4(conc, 5.0, 100.0, jnp.log10(0.294), 1.2)
    expected = 5.0 + 95.0 / (1.0 + (np.array([0.1, 0.294, 3.0]) / 0.294) ** 1.2)
    np.testing.assert_allclose(y[1:], expected, rtol=1e-12)
    assert float(y[0]) == 100.0  # top at c = 0 when hill > 0
    assert float(logistic4(0.0, 5.0, 100.0, 0.0, -1.0)) == 5.0  # bottom when hill < 0
    # gradients at c = 0 are finite (no 0 * -inf)
    grads = jax.grad(lambda th: jnp.sum(logistic4(conc, *th)))(jnp.array([5.0, 100.0, -0.5, 1.2]))
    assert np.all(np.isfinite(grads))
    # extreme arguments do not overflow
    assert np.isfinite(float(logistic4(1e30, 0.0, 1.0, -30.0, 50.0)))


# ---------------------------------------------------------------------------
# fitting


def test_fit_recovers_noise_free_parameters(clean_fit):
    fit = clean_fit
    assert fit.converged, fit.warnings
    assert fit.names == ("bottom", "top", "ic50", "hill")
    for name, value in TRUTH.items():
        np.testing.assert_allclose(fit.estimates[name], value, rtol=1e-4, err_msg=name)
    frame = fit.to_frame()
    assert list(frame.columns) == ["parameter", "estimate", "se", "ci_low", "ci_high", "unit"]
    assert dict(zip(frame["parameter"], frame["unit"])) == {"bottom": "%", "top": "%", "ic50": "nM", "hill": "1"}


def test_fit_noisy_data_within_ci(design_nM):
    rng = np.random.default_rng(7)
    response = _curve(design_nM, TRUTH) + rng.normal(0.0, NOISE_SD, design_nM.size)
    fit = fit_logistic4(design_nM, response)
    assert fit.converged, fit.warnings
    for name, value in TRUTH.items():
        assert fit.ci_low[name] <= value <= fit.ci_high[name], name
        assert fit.se[name] > 0
    # ic50 interval comes from the log scale: asymmetric about the estimate
    ic50 = fit.estimates["ic50"]
    assert fit.ci_high["ic50"] / ic50 == pytest.approx(ic50 / fit.ci_low["ic50"], rel=1e-10)
    assert fit.residual_se == pytest.approx(NOISE_SD, rel=0.35)


def test_fit_increasing_curve(design_nM):
    truth = {"bottom": 10.0, "top": 60.0, "ic50": 4.0, "hill": -0.8}
    fit = fit_logistic4(design_nM, _curve(design_nM, truth))
    for name, value in truth.items():
        np.testing.assert_allclose(fit.estimates[name], value, rtol=1e-4, err_msg=name)


def test_ic50_ci_coverage_without_recompiling(design_nM, clean_fit, compile_log):
    """40 seeded replicate experiments: the 95% IC50 interval covers the truth in
    >= 85% of them, and every replicate reuses the compiled fit (same shapes)."""
    rng = np.random.default_rng(2024)
    mean = _curve(design_nM, TRUTH)
    covered, converged = 0, 0
    with compile_log() as compiled:
        for _ in range(40):
            fit = fit_logistic4(design_nM, mean + rng.normal(0.0, NOISE_SD, mean.size))
            covered += fit.ci_low["ic50"] <= TRUTH["ic50"] <= fit.ci_high["ic50"]
            converged += fit.converged
    assert compiled == [], compiled
    assert converged == 40
    assert covered / 40 >= 0.85


def test_flat_data_warns_instead_of_raising(design_nM):
    response = 50.0 + np.random.default_rng(0).normal(0.0, NOISE_SD, design_nM.size)
    fit = fit_logistic4(design_nM, response)
    assert np.isnan(fit.se["hill"]) and np.isnan(fit.ci_low["ic50"])
    assert any("not jointly identifiable" in w for w in fit.warnings)


def test_fit_rejects_bad_arrays():
    with pytest.raises(DataError, match="distinct concentrations"):
        fit_logistic4([0.0, 1.0, 1.0, 10.0, 10.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    with pytest.raises(DataError, match="conc value 2 .* negative"):
        fit_logistic4([0.0, -1.0, 1.0, 10.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(DataError, match="response value 3 .* not finite"):
        fit_logistic4([0.0, 0.1, 1.0, 10.0], [1.0, 2.0, np.nan, 4.0])


# ---------------------------------------------------------------------------
# Cheng-Prusoff


def test_cheng_prusoff_arithmetic():
    # EL4 displacement assay: IC50 0.294 nM, labelled IL-1alpha 0.1 nM, KD 0.26 nM
    ki = cheng_prusoff_ki(0.294, 0.1, 0.26, ic50_se=0.02, ic50_ci=(0.25, 0.35))
    factor = 1.0 + 0.1 / 0.26
    assert ki.factor == pytest.approx(factor)
    assert ki.ki == pytest.approx(0.2123, abs=1e-4)
    assert ki.se == pytest.approx(0.02 / factor)
    assert (ki.ci_low, ki.ci_high) == pytest.approx((0.25 / factor, 0.35 / factor))
    assert cheng_prusoff_ki(1.0, 0.0, 0.26).ki == 1.0
    with pytest.raises(ValueError, match="kd_ligand"):
        cheng_prusoff_ki(1.0, 0.1, 0.0)


def test_cheng_prusoff_from_fit(clean_fit):
    ki = cheng_prusoff_ki(clean_fit, 0.1, 0.26)
    factor = 1.0 + 0.1 / 0.26
    assert ki.ki == pytest.approx(clean_fit.estimates["ic50"] / factor)
    assert ki.se == pytest.approx(clean_fit.se["ic50"] / factor)
    assert ki.ci_high == pytest.approx(clean_fit.ci_high["ic50"] / factor)


# ---------------------------------------------------------------------------
# loading


def _write_csv(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_csv_and_parquet(tmp_path, design_nM):
    frame = pd.DataFrame({"concentration_ng_per_ml": design_nM, "response": _curve(design_nM, TRUTH),
                          "replicate": np.tile([1, 2, 3], 12)})
    csv = tmp_path / "curve.csv"
    frame.to_csv(csv, index=False)
    loaded, unit = load_concentration_response(csv)
    assert unit == "ng/mL"
    assert list(loaded.columns) == ["concentration", "response", "replicate"]
    np.testing.assert_allclose(loaded["concentration"], design_nM)

    pq = tmp_path / "curve.parquet"
    frame.rename(columns={"concentration_ng_per_ml": "conc_pM"}).drop(columns="replicate").to_parquet(pq)
    loaded, unit = load_concentration_response(pq)
    assert unit == "pM" and list(loaded.columns) == ["concentration", "response"]


GOOD_ROWS = "0,100\n0.01,90\n0.1,60\n1,20\n10,5\n"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("dose,response\n" + GOOD_ROWS, r"no concentration column.*concentration_<unit>"),
        ("concentration_nM,signal\n" + GOOD_ROWS, r"no 'response' column"),
        ("concentration_furlongs,response\n" + GOOD_ROWS, r"'concentration_furlongs': unit 'furlongs' not recognised"),
        ("concentration_nM,conc_pM,response\n0,0,1\n", r"several concentration columns"),
        ("concentration_nM,response\n0,100\n0.01,90\n0.1 nM,60\n1,20\n",
         r"column 'concentration_nM', data row 3 \(line 4 of the file\): value '0.1 nM' is not a number"),
        ("concentration_nM,response\n0,100\n-0.01,90\n0.1,60\n1,20\n",
         r"column 'concentration_nM', data row 2 \(line 3 of the file\): negative concentration"),
        ("concentration_nM,response\n0,100\n0.01,90\n0.1,60\n1,\n10,5\n",
         r"column 'response', data row 4 \(line 5 of the file\): value is missing, NaN"),
        ("concentration_nM,response\n0,100\n0.01,90\n0.1,NaN\n1,20\n",
         r"column 'response', data row 3 .*missing, NaN"),
        ("concentration_nM,response\n0,100\n0,90\n1,60\n1,20\n10,5\n",
         r"'concentration_nM' has only 3 distinct concentrations"),
        ("concentration_nM,response\n", r"no data rows"),
    ],
    ids=["no-conc", "no-response", "bad-unit", "two-conc", "non-numeric", "negative",
         "empty-response", "nan-response", "too-few", "empty"],
)
def test_load_malformed_raises_data_error(tmp_path, text, match):
    path = _write_csv(tmp_path, text)
    with pytest.raises(DataError, match=match) as info:
        load_concentration_response(path)
    assert str(info.value).startswith(str(path))  # the file is named too


def test_data_error_is_the_package_wide_class():
    from vtrial.errors import DataError as PackageDataError

    assert DataError is PackageDataError and issubclass(DataError, ValueError)


def test_load_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.csv: file not found"):
        load_concentration_response(tmp_path / "nope.csv")


# ---------------------------------------------------------------------------
# plot


def test_plot_written_atomically(tmp_path, design_nM, clean_fit):
    out = tmp_path / "plots" / "curve.png"
    figure = curve_fit_figure(design_nM, _curve(design_nM, TRUTH), clean_fit, conc_unit="nM", title="EL4 displacement")
    written = save_figure(figure, out)
    assert written == out and out.stat().st_size > 5000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["curve.png"]  # no temp file left behind
