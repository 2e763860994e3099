"""`vtrial import-nonmem`: control streams as model files and fit configs (issue 21).

Default tests are cheap (pharmpy reads the control stream; the generated model is built
and evaluated at a point, nothing is fitted): pharmpy's example `pheno` (ADVAN1 TRANS2,
IF in $PK), Bolus_2CPT as ADVAN3 TRANS4 and as ADVAN13 with $DES, ADVAN4 with ALAG/F,
BLOCK and DROP/IGNORE, the residual forms, every refused record and statement (named with
its line), the $DATA filters, and the message without pharmpy. The `long` tests fit and
check against NONMEM: pheno `--check` matches and its fit gives OFV 586.276; both
Bolus_2CPT imports fit to 20167.641 with the same estimates; the nmtests control stream
reproduces NONMEM's predictions of every dosing record through `vtrial predict`.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from vtrial.errors import DataError, SpecError
from vtrial.io.nonmem import read_nonmem
from vtrial.io.nonmem_source import NonmemSource, read_source
from conftest import shared_data

pharmpy = pytest.importorskip("pharmpy", reason="pharmpy-core (the nonmem extra) is not installed")

from vtrial.io.nonmem_control import read_control_stream  # noqa: E402
from vtrial.jobs.import_nonmem import import_nonmem, load_config  # noqa: E402

EXAMPLES = Path(pharmpy.__file__).parent / "internals" / "example_models"
MODELS = Path(__file__).resolve().parent / "models"


@pytest.fixture(scope="module")
def pheno(tmp_path_factory):
    out = tmp_path_factory.mktemp("pheno")
    cs, model_path, config_path = import_nonmem(EXAMPLES / "pheno.mod", out)
    return cs, model_path, config_path, load_config(config_path)


def test_pheno_model_is_the_control_streams(pheno):
    cs, model_path, config_path, built = pheno
    model = built.model
    assert set(model.parameter_names) == {"pop_cl", "pop_vc", "covapgr", "eta_cl", "eta_vc"}
    assert model.linear_pk is not None and model.covariate_names == ("apgr", "wgt")
    p = {"pop_cl": 0.0047, "pop_vc": 1.0, "covapgr": 0.1, "eta_cl": 0.1, "eta_vc": -0.2, "wgt": 1.4}
    for apgr, factor in ((3.0, 1.1), (7.0, 1.0)):
        d = model.derive({k: jnp.asarray(v) for k, v in {**p, "apgr": apgr}.items()})
        assert float(d["cl"]) == pytest.approx(0.0047 * 1.4 * math.exp(0.1))
        assert float(d["v"]) == pytest.approx(1.4 * factor * math.exp(-0.2))
        y = jnp.array([10.0])
        assert float(model.observe(y, {k: jnp.asarray(v) for k, v in {**p, "apgr": apgr}.items()})["y"]) == pytest.approx(10.0 / float(d["v"]))
    text = model_path.read_text()
    assert "# line 11: IF(APGR.LT.5) TVV = TVV*(1 + THETA(3))" in text and "jnp.where((apgr < 5)" in text


def test_pheno_config_and_data(pheno):
    cs, model_path, config_path, built = pheno
    cfg = tomllib.loads(config_path.read_text())
    assert cfg["bounds"] == {"pop_cl": [0.0, math.inf], "pop_vc": [0.0, math.inf], "covapgr": [-0.99, math.inf]}
    assert cfg["variability"]["omega"] == {"eta_cl": 0.0309626, "eta_vc": 0.031128}
    assert cfg["residual"]["y"]["proportional"] == pytest.approx(math.sqrt(0.0130865))
    assert cfg["estimation"] == {"method": "focei", "max_iterations": 99999, "covariance": "sandwich"}
    assert sorted(cfg["fixed"]) == ["eta_cl", "eta_vc"]
    assert cfg["data"]["source"]["ignore_lines"] == "@"
    data = read_nonmem(built.cfg.data_file(), built.model, built.cfg.data)
    assert data.n_subjects == 59 and int(np.asarray(data.obs_mask).sum()) == 155


def test_bolus_2cpt_closed_form_and_des_are_one_model(tmp_path):
    models = {}
    for form in ("advan3", "ode"):
        ctl = shared_data(f"data/bolus_2cpt/bolus_2cpt_{form}.ctl")
        cs, _, config_path = import_nonmem(ctl, tmp_path / form)
        models[form] = load_config(config_path)
        cfg = tomllib.loads(config_path.read_text())
        assert cfg["residual"]["y"] == {"additive": 0.0, "proportional": 0.3}  # THETA(5) with SIGMA 1 FIX
        assert "prop_sd" not in cfg["parameters"] and cfg["estimation"]["method"] == "focei"
    assert models["advan3"].model.linear_pk is not None and models["ode"].model.linear_pk is None
    a, b = models["advan3"].model, models["ode"].model
    p = {"log_cl": 1.4, "log_v1": 4.2, "log_q": 1.3, "log_v2": 3.9, "eta_1": 0.1, "eta_2": -0.1, "eta_3": 0.2, "eta_4": 0.0}
    pa = a.derive({k: jnp.asarray(v) for k, v in p.items()})
    pb = b.derive({k: jnp.asarray(v) for k, v in p.items()})
    y = jnp.array([50.0, 20.0])
    np.testing.assert_allclose(a.vector_field(0.0, y, pa, jnp.zeros(2)), b.vector_field(0.0, y, pb, jnp.zeros(2)), rtol=1e-12)
    np.testing.assert_allclose(a.observe(y, pa)["y"], b.observe(y, pb)["y"], rtol=1e-12)


def _bolus_text(**replace) -> str:
    text = shared_data("data/bolus_2cpt/bolus_2cpt_advan3.ctl").read_text()
    text = text.replace("$DATA bolus_2cpt_nonmem.csv", f"$DATA {shared_data('data/bolus_2cpt/bolus_2cpt_nonmem.csv')}")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return text


def _read(tmp_path, text: str):
    path = tmp_path / "run.ctl"
    path.write_text(text)
    return read_control_stream(path)


def test_advan4_lag_bioavailability_block_and_data_options(tmp_path):
    text = _bolus_text(**{
        "$INPUT ID TIME AMT EVID CMT DV MDV": "$INPUT ID TIME AMT EVID CMT DV MDV=DROP",
        "IGNORE=@": "IGNORE=@ IGNORE=(ID.EQ.3)",
        "ADVAN3 TRANS4": "ADVAN4 TRANS4",
        "  CL = EXP": "  KA = 1.5\n  ALAG1 = 0.25\n  F1 = 0.8\n  CL = EXP",
        "V1 =": "V2 =", "V2 = EXP(THETA(4)": "V3 = EXP(THETA(4)", "S1 = V1": "S2 = V2", "A(1) / V1": "A(2) / V2",
        "$OMEGA 0.15 0.15 0.15 0.15": "$OMEGA BLOCK(2) 0.15 0.01 0.15\n$OMEGA 0.15 0.15 FIX\n$OMEGA 0 FIX",
        "  Q  = EXP(THETA(3) + ETA(3))": "  Q  = EXP(THETA(3) + ETA(3) + ETA(5))",
    })
    text = text.replace("Q/V1", "Q/V2")
    path = tmp_path / "a4.ctl"
    path.write_text(text)
    cs, model_path, config_path = import_nonmem(path, tmp_path / "out")
    built = load_config(config_path)
    model = built.model
    assert model.state_names == ("a_depot", "a_central", "a_peripheral")
    assert model.linear_pk.depots == ("a_depot",)
    route = model.route("a_depot")
    assert (route.lag, route.bioavailability) == ("alag1", "f1")
    cfg = tomllib.loads(config_path.read_text())
    assert cfg["variability"]["block"] == [{"parameters": ["eta_1", "eta_2"], "covariance": [[0.15, 0.01], [0.01, 0.15]]}]
    assert "omega2_eta_4" in cfg["fixed"] and "omega2_eta_3" not in cfg["fixed"]  # FIX applies to the value before it
    assert "eta_5" in cfg["fixed"] and "eta_5" not in cfg["variability"]["kind"] and "omega2_eta_5" not in cfg["fixed"]  # 0 FIX: off
    assert built.iiv_names == ("eta_3", "eta_4", "eta_1", "eta_2")
    assert cfg["data"]["source"]["drop"] == ["MDV"] and cfg["data"]["source"]["ignore"] == ["ID.EQ.3"]
    data = read_nonmem(built.cfg.data_file(), model, built.cfg.data)
    assert data.n_subjects == 119 and "3" not in [str(i) for i in data.ids]


@pytest.mark.parametrize("w, additive, proportional", [
    ("W = SQRT(THETA(5)**2 + THETA(6)**2*IPRED**2)\n  Y = IPRED + W*EPS(1)", 0.5, 0.3),
    ("Y = IPRED + IPRED*EPS(1) + EPS(2)", 0.5, 0.3),
    ("W = SQRT(THETA(5)**2 + THETA(6)**2*IPRED**2)\n  IF (W.EQ.0) W = 1\n  Y = IPRED + W*EPS(1)", 0.5, 0.3),
])
def test_residual_forms(tmp_path, w, additive, proportional):
    sigma = "$SIGMA 1 FIX" if "W" in w else "$SIGMA 0.09\n$SIGMA 0.25"
    text = _bolus_text(**{"Y = IPRED + IPRED * THETA(5) * EPS(1)": w, "$THETA (0, 0.3) ; PROP_SD": "$THETA (0, 0.5) (0, 0.3)"
                          if "W" in w else "", "$SIGMA 1 FIX": sigma})
    if "W" not in w:
        text = text.replace("(0, 0.5) (0, 0.3)", "")
    cs = _read(tmp_path, text)
    values = {t.name: t.init for t in cs.thetas} | cs.sigma_inits
    a, b = cs.residual.sds(values)
    assert (a, b) == (pytest.approx(additive), pytest.approx(proportional))


@pytest.mark.parametrize("change, where, why", [
    ({"$COVARIANCE": "$COVARIANCE\n$MIX\n  P(1) = 0.5"}, "$MIX (line 25)", "not supported"),
    ({"$COVARIANCE": "$COVARIANCE\n$PRIOR NWPRI"}, "$PRIOR (line 25)", "not supported"),
    ({"ADVAN3 TRANS4": "ADVAN5"}, "$SUBROUTINES (line 6)", "ADVAN5 is not supported"),
    ({"  S1 = V1": "  S1 = V1\n  CALL PASS(MODE)"}, "$PK (line 13)", "CALL"),
    ({"  S1 = V1": "  S1 = V1\n  MTIME(1) = 2"}, "$PK (line 13)", "MTIME"),
    ({"  S1 = V1": "  S1 = V1 * TIME"}, "$PK (line 12)", "TIME in $PK"),
    ({"$OMEGA 0.15 0.15 0.15 0.15": "$OMEGA BLOCK(2) 0.15 0.01 0.15\n$OMEGA BLOCK(2) SAME"}, "$OMEGA (line 22)", "SAME"),
    ({"  S1 = V1": "  S1 = V1\n  IF (AMT.GT.0) DOSE = AMT"}, "$PK (line 13)", "the data item AMT"),
    ({"METHOD=COND": "METHOD=SAEM"}, "$ESTIMATION (line 23)", "METHOD=SAEM"),
    ({"Y = IPRED + IPRED * THETA(5) * EPS(1)": "Y = IPRED * EXP(THETA(5) * EPS(1))"}, "$ERROR (line 15)", "linear in the EPS"),
])
def test_refused_with_record_and_line(tmp_path, change, where, why):
    with pytest.raises(SpecError) as e:
        _read(tmp_path, _bolus_text(**change))
    assert e.value.field == where and why in e.value.problem


def test_data_source_filters(tmp_path):
    path = tmp_path / "d.dta"
    path.write_text("ID TIME AMT DV WT\n1 0 100 0 70\n1,1,0,5.5,70\n2 0 100 0 80\n3 0 100 0 90\n")
    src = NonmemSource(file="d.dta", columns=["ID", "TIME", "AMT", "DV", "WT"], drop=["WT"], ignore_lines="@",
                       ignore=["ID.EQ.2"])
    frame = read_source(src, path)
    assert list(frame.columns) == ["ID", "TIME", "AMT", "DV"] and frame["ID"].tolist() == ["1", "1", "3"]
    assert read_source(src.model_copy(update={"ignore": [], "accept": ["WT.GT.75"]}), path)["ID"].tolist() == ["2", "3"]
    with pytest.raises(DataError, match="line 2: 5 fields, \\$INPUT names 6"):
        read_source(src.model_copy(update={"columns": ["ID", "TIME", "AMT", "DV", "WT", "X"], "drop": []}), path)
    (tmp_path / "c.dta").write_text("# a comment line\n1 0 100 0 70\n")  # IGNORE=# is the default
    assert read_source(NonmemSource(file="c.dta", columns=["ID", "TIME", "AMT", "DV", "WT"]), tmp_path / "c.dta")["ID"].tolist() == ["1"]


def test_without_pharmpy_says_how_to_install(monkeypatch, tmp_path):
    import sys

    from vtrial.cli import app

    monkeypatch.setitem(sys.modules, "pharmpy.modeling", None)
    result = CliRunner().invoke(app, ["import-nonmem", str(EXAMPLES / "pheno.mod"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and 'pip install "vtrial[nonmem]"' in result.output


@pytest.mark.long
def test_pheno_check_matches_nonmem(tmp_path):
    from vtrial.cli import app

    result = CliRunner().invoke(app, ["import-nonmem", str(EXAMPLES / "pheno.mod"), "--out", str(tmp_path / "p"), "--check"])
    assert result.exit_code == 0, result.output
    assert "matches NONMEM's outputs" in result.output
    # CWRES are NONMEM's definition (symmetric inverse square root, not Cholesky: 0.29 then)
    facts = dict(line.strip().split(": ", 1) for line in result.output.splitlines() if "_relative_difference: " in line)
    assert float(facts["cwres_median_relative_difference"]) < 1e-4
    assert float(facts["cwres_p95_relative_difference"]) < 1e-3
    # NONMEM's .cov: vtrial's covariance step at NONMEM's estimates gives its SEs (9e-4 at most)
    se = {k: float(v) for k, v in (line.strip().split(": ", 1) for line in result.output.splitlines()
                                   if line.strip().startswith("se_relative_difference_"))}
    assert set(se) == {f"se_relative_difference_{p}" for p in ("POP_CL", "POP_VC", "COVAPGR", "IIV_CL", "IIV_VC", "SIGMA")}
    assert max(se.values()) < 3e-3


@pytest.mark.long
def test_pheno_fit_gives_nonmems_estimates(pheno, tmp_path):
    from vtrial.jobs import run_config

    record = run_config(pheno[2], out=tmp_path / "fit", kind="fit")
    assert record.facts["ofv"] == pytest.approx(586.276, abs=0.05)
    est = pd.read_csv(tmp_path / "fit" / "parameters.csv").set_index("name")["estimate"]
    for name, nonmem in (("pop_cl", 0.00469555), ("pop_vc", 0.984258), ("covapgr", 0.158920)):
        assert est[name] == pytest.approx(nonmem, rel=0.01)
    for name, nonmem in (("omega2_eta_cl", 0.0293508), ("omega2_eta_vc", 0.0279055), ("y.proportional", math.sqrt(0.0132440))):
        assert est[name] == pytest.approx(nonmem, rel=0.05)


@pytest.mark.long
def test_bolus_2cpt_imports_fit_to_nonmems_ofv(tmp_path):
    from vtrial.jobs import run_config

    estimates = {}
    for form in ("advan3", "ode"):
        _, _, config_path = import_nonmem(shared_data(f"data/bolus_2cpt/bolus_2cpt_{form}.ctl"), tmp_path / form)
        record = run_config(config_path, out=tmp_path / f"fit_{form}", kind="fit")
        assert record.facts["ofv"] == pytest.approx(20167.641, abs=0.5)
        est = pd.read_csv(tmp_path / f"fit_{form}" / "parameters.csv").set_index("name")["estimate"]
        for name, nonmem in (("log_cl", 1.37034), ("log_v1", 4.19815), ("log_q", 1.38003), ("log_v2", 3.87657),
                             ("y.proportional", 0.196446), ("omega2_eta_1", 0.101251), ("omega2_eta_2", 0.0993872),
                             ("omega2_eta_3", 0.101303), ("omega2_eta_4", 0.0730498)):
            assert est[name] == pytest.approx(nonmem, rel=0.02)
        estimates[form] = est
    np.testing.assert_allclose(estimates["advan3"].to_numpy(float), estimates["ode"].to_numpy(float), rtol=2e-3, atol=1e-6)


@pytest.mark.long
def test_nmtests_control_stream_predicts_nonmems_records(tmp_path):
    from vtrial.jobs.predict import predict

    data = shared_data("data/nmtests/dosing_1001_data.csv")
    _, _, config_path = import_nonmem(MODELS / "nmtests_advan2.ctl", tmp_path / "nm")
    result = predict(config_path, data)
    nonmem = pd.read_csv(shared_data("data/nmtests/dosing_1001_nonmem.csv"))
    observed = result.table["EVID"].astype(float).to_numpy() == 0
    pred, cp = result.table["PRED"].to_numpy(float)[observed], nonmem["CP"].to_numpy(float)[observed]
    excess = np.abs(pred - cp) - (2e-4 * np.abs(cp) + 1e-3)
    assert observed.sum() == 3799 and np.all(excess <= 0), np.flatnonzero(excess > 0)[:5]


def test_fit_without_data_needs_a_source(tmp_path):
    from vtrial.cli import app

    result = CliRunner().invoke(app, ["fit", str(MODELS / "pheno_fit.toml"), "--out", str(tmp_path / "f")])
    assert result.exit_code == 2 and "DATA" in result.output and "reads a data file" in result.output


def test_advan6_with_des(tmp_path):
    text = shared_data("data/bolus_2cpt/bolus_2cpt_ode.ctl").read_text().replace("ADVAN13", "ADVAN6")
    text = text.replace("$DATA bolus_2cpt_nonmem.csv", f"$DATA {shared_data('data/bolus_2cpt/bolus_2cpt_nonmem.csv')}")
    path = tmp_path / "advan6.ctl"
    path.write_text(text)
    cs, model_path, _ = import_nonmem(path, tmp_path / "out")
    assert cs.advan == "ADVAN6" and cs.linear is None and [c.name for c in cs.des] == ["CCEN", "CPER"]
    assert "# line 14: CCEN = A(1) / V1" in model_path.read_text()


@pytest.mark.long
def test_check_names_the_rows_of_a_model_that_differs(tmp_path):
    """A control stream changed after NONMEM ran it (V 2x as sensitive to APGR < 5) does not match: exit 5."""
    import shutil

    from vtrial.cli import app

    for suffix in (".ext", ".phi", ".lst", ".tab", ".dta", ".cov"):
        shutil.copy(EXAMPLES / f"pheno{suffix}", tmp_path / f"pheno{suffix}")
    text = (EXAMPLES / "pheno.mod").read_text().replace("TVV*(1 + THETA(3))", "TVV*(1 + 2*THETA(3))")
    (tmp_path / "pheno.mod").write_text(text)
    result = CliRunner().invoke(app, ["import-nonmem", str(tmp_path / "pheno.mod"), "--out", str(tmp_path / "p"), "--check"])
    assert result.exit_code == 5, result.output
    assert "worst: PRED row" in result.output and "does not match" in result.output
