"""`vtrial import-nonmem` of $PRED models (issue 21): no compartments, the prediction an
explicit function of THETA, ETA, data items and TIME (vtrial's one state: a clock).

Default tests are cheap (the model built and evaluated at a point; refusals). The `long`
test evaluates the population objective: `tests/models/pred_bolus.ctl` (a one-compartment
bolus written out in $PRED) and `pred_bolus_advan1.ctl` (the same model as ADVAN1) give
the same OFV, PRED, IPRED and CWRES at the same parameters.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from vtrial.errors import SpecError

pharmpy = pytest.importorskip("pharmpy", reason="pharmpy-core (the nonmem extra) is not installed")

from vtrial.io.nonmem_control import read_control_stream  # noqa: E402
from conftest import assert_control_stream_refused  # noqa: E402
from vtrial.jobs.import_nonmem import import_nonmem, load_config  # noqa: E402

EXAMPLES = Path(pharmpy.__file__).parent / "internals" / "example_models"
MODELS = Path(__file__).resolve().parent / "models"


def _write(tmp_path, text: str) -> Path:
    (tmp_path / "pred_bolus.csv").write_text((MODELS / "pred_bolus.csv").read_text())
    path = tmp_path / "run.ctl"
    path.write_text(text)
    return path


def test_pred_model_is_the_control_streams(tmp_path):
    cs, model_path, config_path = import_nonmem(MODELS / "pred_bolus.ctl", tmp_path / "p")
    assert cs.advan == "PRED" and [c.name for c in cs.pk] == ["TVCL", "CL", "V", "K"]
    assert [c.name for c in cs.error] == ["IPRED", "Y"]  # what reads TIME or EPS: per record
    model = load_config(config_path).model
    assert model.state_names == ("time",) and model.routes == () and model.covariate_names == ("dose", "wt")
    p = {"theta_1": 5.0, "theta_2": 50.0, "eta_1": 0.1, "eta_2": -0.2, "dose": 100.0, "wt": 60.0}
    d = model.derive({k: jnp.asarray(v) for k, v in p.items()})
    cl, v = 5.0 * (60 / 70) ** 0.75 * math.exp(0.1), 50.0 * math.exp(-0.2)
    assert float(d["cl"]) == pytest.approx(cl) and float(d["v"]) == pytest.approx(v)
    assert float(model.observe(jnp.array([3.0]), d)["y"]) == pytest.approx(100.0 / v * math.exp(-cl / v * 3.0))
    assert float(model.vector_field(0.0, jnp.array([3.0]), d, jnp.zeros(1))[0]) == 1.0  # the clock
    cfg = tomllib.loads(config_path.read_text())
    assert cfg["data"]["source"]["drop"] == ["AMT"]  # no PREDPP: no record is a dose
    assert "routes" not in cfg["data"]
    assert cfg["residual"]["y"] == {"additive": pytest.approx(0.05), "proportional": pytest.approx(0.1)}
    text = model_path.read_text()
    assert "ipred = dose*jnp.exp(-k*time)/v  # line 13: IPRED = DOSE/V*EXP(-K*TIME)" in text


def test_pred_residual_in_terms_of_the_prediction(tmp_path):
    """Y = IPRED + W*EPS(1) with W = SQRT(THETA(3)**2 + THETA(4)**2*IPRED**2), $SIGMA 1 FIX."""
    text = (MODELS / "pred_bolus.ctl").read_text()
    text = text.replace("Y = IPRED + IPRED*EPS(1) + EPS(2)", "W = SQRT(THETA(3)**2 + THETA(4)**2*IPRED**2)\nY = IPRED + W*EPS(1)")
    text = text.replace("$THETA (0, 5) (0, 50)", "$THETA (0, 5) (0, 50) (0, 0.05) (0, 0.1)").replace("$SIGMA 0.01 0.0025", "$SIGMA 1 FIX")
    cs = read_control_stream(_write(tmp_path, text))
    assert cs.residual.thetas == ["THETA_3", "THETA_4"]


@pytest.mark.parametrize("change, where, why", [
    ({"\n$PRED\n": "\n$SUBROUTINES ADVAN1 TRANS2\n$PRED\n"}, "$SUBROUTINES (line 8)", "has no PREDPP records"),
    ({"IPRED = DOSE/V*EXP(-K*TIME)": "IPRED = AMT/V*EXP(-K*TIME)"}, "$PRED (line 13)", "the data item AMT"),
    ({"Y = IPRED + IPRED*EPS(1) + EPS(2)": "Y = IPRED + IPRED*EPS(1)*WT + EPS(2)"}, "$PRED (line 14)", "depends on WT"),
])
def test_pred_refused_with_record_and_line(tmp_path, change, where, why):
    assert_control_stream_refused(_write(tmp_path, (MODELS / "pred_bolus.ctl").read_text()), change, where, why)


def test_pred_reading_time_needs_times_from_zero(tmp_path):
    text = (MODELS / "pred_bolus.ctl").read_text()
    path = _write(tmp_path, text)
    (tmp_path / "pred_bolus.csv").write_text((MODELS / "pred_bolus.csv").read_text().replace("\n1,0.5,", "\n1,-0.5,", 1))
    with pytest.raises(SpecError) as e:
        read_control_stream(path)
    assert e.value.field == "$DATA (line 7)" and "TIME -0.5 < 0" in e.value.problem


def test_pheno_linear_is_refused_for_its_residual():
    """pharmpy's `pheno_linear` (pheno linearised around its EBEs) reads its derivatives as
    data items, and its residual SD depends on them and on the ETAs: not a^2 + b^2 F^2."""
    with pytest.raises(SpecError) as e:
        read_control_stream(EXAMPLES / "pheno_linear.mod")
    assert e.value.field == "$PRED (line 15)"
    assert "the SD of EPS_1 depends on D_EPS1, D_EPSETA1_1, D_EPSETA1_2, ETA_1, ETA_2, OETA1, OETA2" in e.value.problem


@pytest.mark.long
def test_pred_and_advan1_forms_are_one_model(tmp_path):
    """The same one-compartment bolus as $PRED (TIME the clock state, the dose a data item)
    and as ADVAN1 (closed form, the dose a record): one OFV, PRED, IPRED and CWRES."""
    from vtrial.estimation import fit_population
    from vtrial.io.nonmem import read_nonmem

    out = {}
    for name in ("pred_bolus", "pred_bolus_advan1"):
        _, _, config_path = import_nonmem(MODELS / f"{name}.ctl", tmp_path / name)
        built = load_config(config_path)
        population = read_nonmem(built.cfg.data_file(), built.model, built.cfg.data)
        fit = fit_population(built.model, population, built.estimation_spec(), method=built.method, solver=built.options,
                             max_iterations=0, covariance=None)
        out[name] = (fit.ofv, fit.predictions_frame()[["PRED", "IPRED", "CWRES"]].to_numpy(float))
    assert out["pred_bolus"][0] == pytest.approx(out["pred_bolus_advan1"][0], abs=1e-8)
    np.testing.assert_allclose(out["pred_bolus"][1], out["pred_bolus_advan1"][1], rtol=1e-9, atol=1e-12)


@pytest.mark.long
def test_pred_reads_a_data_item_that_changes_per_record(tmp_path):
    """A data item that changes from record to record (X) is read at each record, as
    NONMEM's $PRED reads it: PRED = DOSE/V exp(-CL/V TIME) X at the initial estimates."""
    import pandas as pd

    from vtrial.estimation import fit_population
    from vtrial.io.nonmem import read_nonmem

    data = pd.read_csv(MODELS / "pred_bolus.csv")
    data["X"] = 1 + 0.1 * (np.arange(len(data)) % 7)
    data.to_csv(tmp_path / "pred_bolus.csv", index=False)
    text = (MODELS / "pred_bolus.ctl").read_text().replace("$INPUT ID TIME AMT DV MDV DOSE WT", "$INPUT ID TIME AMT DV MDV DOSE WT X")
    (tmp_path / "run.ctl").write_text(text.replace("IPRED = DOSE/V*EXP(-K*TIME)", "IPRED = DOSE/V*EXP(-K*TIME)*X"))
    _, _, config_path = import_nonmem(tmp_path / "run.ctl", tmp_path / "p")
    built = load_config(config_path)
    population = read_nonmem(built.cfg.data_file(), built.model, built.cfg.data)
    fit = fit_population(built.model, population, built.estimation_spec(), method=built.method, solver=built.options,
                         max_iterations=0, covariance=None)
    obs = data[data.MDV == 0]
    expected = obs.DOSE / 50 * np.exp(-5 * (obs.WT / 70) ** 0.75 / 50 * obs.TIME) * obs.X
    np.testing.assert_allclose(fit.predictions_frame()["PRED"].to_numpy(float), expected.to_numpy(float), rtol=1e-10)
