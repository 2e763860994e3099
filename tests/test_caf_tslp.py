"""CAF-1 (model card caf_tslp.md): TSLP from pancreatic CAFs driven by tumour IL-1.

5a, in vitro: the well model against a scipy solve of the card's two equations written
out below, the fitted IC50 per stimulus against the closed form K_I (1 + l)(1 + tau rho0)
within 2%, every behaviour bullet on the typical donor and on 200 donors, the assay
config's validation, and `vtrial run`. 5b, in vivo: the mouse model against a scipy solve
of MPK-1 + the TSLP equation, the card's bullets on the typical mouse and on 200 mice per
arm, and `vtrial run`.
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp
from typer.testing import CliRunner

import vtrial as vt
from vtrial.assays.tslp import closed_form_ic50_ng_per_ml, fit_tslp, simulate_tslp, summarise_tslp
from vtrial.assays.tslp_specs import TslpSpec
from vtrial.cli import app
from vtrial.errors import SpecError
from vtrial.io.config import read_toml, validate
from tests.paired_population import CONFIGS, built_trial, simulate_paired

NM_PER_MG_PER_L = 1e6 / 17_300.0
WELL = {"k_i": 0.21, "k_l": 0.26, "tau": 30.0, "k_m": 0.3, "s_il": 20.0, "s_t": 10.0, "k_t": 0.3, "k_sec": 2.0, "k_deg": 0.03}
STIMULI = {"medium": (0.0, 0.0), "supernatant": (0.003, 0.0), "rhIL-1b": (0.57, 0.0), "rhTNF-a": (0.0, 0.57),
           "supernatant+TNF-a": (0.003, 0.57)}  # (IL-1 nM, TNF-a nM)
REFERENCE_NG_PER_ML = 10_000.0
runner = CliRunner()


def load_spec(**update) -> TslpSpec:
    data, _ = read_toml(CONFIGS / "pancreatic_caf_tslp.toml")
    data.pop("kind")
    data.update(update)
    return validate(TslpSpec, data)


def signal(anakinra_ng_per_ml, il1_nm, p=WELL):
    """E of the card: tau rho / (1 + tau rho), rho = l / (1 + l + c), c = 57.8 C[ug/mL] / K_I."""
    c = NM_PER_MG_PER_L * (anakinra_ng_per_ml / 1000.0) / p["k_i"]
    rho = (il1_nm / p["k_l"]) / (1 + il1_nm / p["k_l"] + c)
    return p["tau"] * rho / (1 + p["tau"] * rho)


def scipy_well(anakinra_ng_per_ml, il1_nm, tnf_nm, t_h=48.0, p=WELL):
    """TSLP (pg/mL) of one well after `t_h` hours: the card's two equations."""
    drive = 1 + p["s_il"] * signal(anakinra_ng_per_ml, il1_nm, p) + p["s_t"] * tnf_nm / (tnf_nm + p["k_t"])

    def rhs(t, y):
        return [p["k_m"] * (drive - y[0]), p["k_sec"] * y[0] - p["k_deg"] * y[1]]

    return solve_ivp(rhs, (0.0, t_h), [1.0, 0.0], method="LSODA", rtol=1e-12, atol=1e-12).y[1, -1]


@pytest.fixture(scope="module")
def plate():
    spec = load_spec()
    typical = simulate_tslp(spec, typical=True)
    return spec, typical, fit_tslp(spec, typical)


def _tslp(typical_plate, stimulus, conc):
    w = typical_plate.wells
    row = w[(w["stimulus"] == stimulus) & np.isclose(w["anakinra_ng_per_ml"], conc)]
    assert len(row) == 1
    return float(row["expected_tslp_pg_per_ml"].iloc[0])


# --- 5a: the card as data ---------------------------------------------------------------


def test_well_parameters_and_config_are_the_card():
    model = vt.models.get_model("caf_tslp_well")
    for name, value in WELL.items():
        assert model.parameter(name).value == value, name
    assert all(model.parameter(n).source.startswith("A") for n in ("tau", "k_m", "s_il", "s_t", "k_t", "k_sec", "k_deg"))
    spec = load_spec()
    assert {s.name: (s.il1_nm, s.tnf_nm) for s in spec.stimuli} == STIMULI
    assert spec.incubation_h == 48.0 and spec.reference_ng_per_ml == REFERENCE_NG_PER_ML and spec.replicates == 3
    assert (spec.grid.start_ng_per_ml, spec.grid.stop_ng_per_ml, spec.grid.n) == (0.1, 30_000.0, 12)
    assert (spec.noise.cv, spec.noise.sd_pg_per_ml) == (0.12, 5.0)
    assert spec.donor_cv == {"s_il": 0.4, "k_sec_pg_per_ml_h": 0.4}
    p = spec.parameters
    assert (p.ki_nm, p.kl_nm, p.tau, p.k_m_per_h, p.s_il, p.s_tnf, p.kt_nm, p.k_sec_pg_per_ml_h, p.k_deg_per_h) == tuple(WELL.values())
    for module in ("caf_tslp_well", "caf_tslp_mouse"):
        doc = importlib.import_module(f"vtrial.models.{module}").__doc__.lower()
        assert "reconstruction" in doc and "assumption" in doc


# --- 5a: against scipy and the closed form -----------------------------------------------


def test_every_well_matches_scipy(plate):
    spec, typical, _ = plate
    w = typical.wells
    assert len(w) == 5 * 14 and (w["status"] == "ok").all()
    for row in w.itertuples():
        il1, tnf = STIMULI[row.stimulus]
        expected = scipy_well(row.anakinra_ng_per_ml, il1, tnf)
        assert row.tslp_pg_per_ml == pytest.approx(expected, rel=1e-5), (row.stimulus, row.anakinra_ng_per_ml)


def test_ic50_per_stimulus_is_the_closed_form(plate):
    spec, _, fit = plate
    for name, (il1, _) in STIMULI.items():
        if il1 == 0:
            assert fit.fits[name] is None
            continue
        rho0 = (il1 / 0.26) / (1 + il1 / 0.26)
        closed_nm = 0.21 * (1 + il1 / 0.26) * (1 + 30.0 * rho0)
        assert closed_form_ic50_ng_per_ml(spec, il1) == pytest.approx(closed_nm * 17.3, rel=1e-12)
        assert fit.fits[name].converged
        assert fit.ic50_ng_per_ml(name) == pytest.approx(closed_nm * 17.3, rel=0.02)
        assert fit.fits[name].estimates["hill"] == pytest.approx(1.0, abs=0.02)


# --- 5a: behaviour on the typical donor ------------------------------------------------------


def test_stimuli_raise_tslp(plate):
    _, typical, _ = plate
    top = {s: _tslp(typical, s, 0.0) for s in STIMULI}
    assert top["medium"] == pytest.approx(51, abs=0.5)
    assert top["supernatant"] == pytest.approx(301, abs=1) and top["supernatant"] >= 4 * top["medium"]
    assert top["rhIL-1b"] == pytest.approx(988, abs=1) and top["rhIL-1b"] >= 15 * top["medium"]
    assert top["rhTNF-a"] == pytest.approx(373, abs=1)


def test_reference_concentration_removes_the_il1_excess(plate):
    spec, typical, fit = plate
    summary = summarise_tslp(spec, typical)
    at_ref = summary[np.isclose(summary["anakinra_ng_per_ml"], REFERENCE_NG_PER_ML)].set_index("stimulus")["il1_excess_removed_pct"]
    assert at_ref["supernatant"] >= 95.0 and at_ref["supernatant"] == pytest.approx(100.0, abs=0.1)
    assert at_ref["rhIL-1b"] >= 90.0 and at_ref["rhIL-1b"] == pytest.approx(97.6, abs=0.1)
    # the excess is TSLP above the full-block well, which for IL-1-only stimuli is medium's
    medium = _tslp(typical, "medium", 0.0)
    block = typical.blocks.set_index("stimulus")["block_tslp_pg_per_ml"]
    assert block["supernatant"] == pytest.approx(medium, rel=1e-9) and block["rhIL-1b"] == pytest.approx(medium, rel=1e-9)
    table = fit.table()
    rows = table[table["parameter"] == "il1_excess_removed_at_reference_pct"].set_index("stimulus")["estimate"]
    assert rows["supernatant"] == pytest.approx(at_ref["supernatant"]) and np.isnan(rows["medium"])


def test_ic50_shifts_right_with_il1(plate):
    _, _, fit = plate
    sup, il1b = fit.ic50_ng_per_ml("supernatant"), fit.ic50_ng_per_ml("rhIL-1b")
    assert sup == pytest.approx(4.9, abs=0.05)  # [4.9 ng/mL = 0.285 nM]
    assert il1b == pytest.approx(250, rel=0.02)  # [0.25 ug/mL = 14.5 nM]
    assert il1b / sup >= 30
    table = fit.table()
    shift = table[(table["parameter"] == "ic50_shift")].set_index("stimulus")["estimate"]
    assert shift["rhIL-1b"] == pytest.approx(il1b / sup)


def test_anakinra_spares_the_tnf_response(plate):
    _, typical, _ = plate
    tnf0, tnf_ref = _tslp(typical, "rhTNF-a", 0.0), _tslp(typical, "rhTNF-a", REFERENCE_NG_PER_ML)
    assert abs(tnf_ref / tnf0 - 1) < 0.01
    both0, both_ref = _tslp(typical, "supernatant+TNF-a", 0.0), _tslp(typical, "supernatant+TNF-a", REFERENCE_NG_PER_ML)
    assert both0 == pytest.approx(623, abs=2) and both_ref == pytest.approx(373, abs=1)  # [623 -> 373 pg/mL]
    assert both_ref == pytest.approx(tnf0, rel=1e-3)  # only the IL-1 part goes


# --- 5a: 200 donors --------------------------------------------------------------------------


def test_two_hundred_donors(plate):
    """Donors differ in s_il and k_sec (40%): the folds and removals hold for the median donor,
    the removals for every donor (they do not depend on s_il or k_sec), and the noisy pooled
    IC50 stays near the closed form."""
    spec, _, _ = plate
    spec = spec.model_copy(update={"donors": 200, "replicates": 1})
    donors = simulate_tslp(spec, seed=7)
    assert donors.wells["donor"].nunique() == 200 and (donors.wells["status"] == "ok").all()
    w = donors.wells
    top = w[w["anakinra_ng_per_ml"] == 0].pivot(index="donor", columns="stimulus", values="expected_tslp_pg_per_ml")
    ref = w[np.isclose(w["anakinra_ng_per_ml"], REFERENCE_NG_PER_ML)].pivot(index="donor", columns="stimulus", values="expected_tslp_pg_per_ml")
    block = donors.blocks.pivot(index="donor", columns="stimulus", values="block_tslp_pg_per_ml")
    assert np.median(top["supernatant"] / top["medium"]) >= 4 and np.median(top["rhIL-1b"] / top["medium"]) >= 15
    removed = (top - ref) / (top - block)
    assert np.all(removed["supernatant"] >= 0.95) and np.all(removed["rhIL-1b"] >= 0.90)
    assert np.all(np.abs(ref["rhTNF-a"] / top["rhTNF-a"] - 1) < 0.01)
    fit = fit_tslp(spec, donors)
    for name in ("supernatant", "rhIL-1b"):
        assert fit.ic50_ng_per_ml(name) == pytest.approx(fit.closed_form_ng_per_ml(name), rel=0.10), name
    assert fit.ic50_ng_per_ml("rhIL-1b") / fit.ic50_ng_per_ml("supernatant") >= 30


# --- 5a: the config and the command line --------------------------------------------------------


@pytest.mark.parametrize("update, field", [
    ({"baseline": "none"}, "baseline"),
    ({"donor_cv": {"s_ill": 0.4}}, "donor_cv"),
    ({"grid": {"start_ng_per_ml": 10.0, "stop_ng_per_ml": 1.0, "n": 12}}, "grid"),
    ({"replicates": 0}, "replicates"),
    ({"colour": "red"}, "colour"),
])
def test_bad_assay_config_names_the_field(update, field):
    with pytest.raises(SpecError) as err:
        load_spec(**update)
    assert field in str(err.value)


def test_duplicate_stimulus_is_rejected():
    data, _ = read_toml(CONFIGS / "pancreatic_caf_tslp.toml")
    data.pop("kind")
    data["stimuli"].append(dict(data["stimuli"][1]))
    with pytest.raises(SpecError, match="unique"):
        validate(TslpSpec, data)


@pytest.mark.parametrize("flags", [["--typical"], ["--animals-per-arm", "1", "--seed", "4"]], ids=["typical", "tiny"])
def test_vtrial_run_assay(tmp_path, flags, plate):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(CONFIGS / "pancreatic_caf_tslp.toml"), "--out", str(out), *flags], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for f in ("wells.parquet", "summary.csv", "curve_fit.csv", "curve_fit.png", "run.json"):
        assert (out / f).is_file(), f
    table = pd.read_csv(out / "curve_fit.csv")
    assert list(table.columns) == ["parameter", "estimate", "se", "ci_low", "ci_high", "unit", "method", "note", "stimulus"]
    ic50 = table[table["parameter"] == "ic50"].set_index("stimulus")["estimate"]
    assert set(ic50.index) == set(STIMULI) and np.isnan(ic50["medium"]) and np.isnan(ic50["rhTNF-a"])
    facts = json.loads((out / "run.json").read_text())
    if flags == ["--typical"]:
        assert facts["n_wells"] == 70 and facts["typical"] is True
        ratio = table[table["parameter"] == "ic50_over_closed_form"].set_index("stimulus")["estimate"]
        assert np.all(np.abs(ratio - 1) < 0.02)
    else:
        assert facts["n_wells"] == 3 * 70 and facts["n_donors"] == 3


# --- 5b: in vivo ----------------------------------------------------------------------------------

MPK = {"cl": 0.020, "v1": 0.0015, "q": 0.0042, "v2": 0.0020, "ka": 1.5, "f": 0.9, "ke0": 0.1}  # 25-g mouse
IN_VIVO_ARMS = {"vehicle": 0.0, "anakinra 1 mg/kg/day": 1.0, "anakinra 10 mg/kg/day": 10.0, "anakinra 100 mg/kg/day": 100.0}
HARVEST_H = 672.0


def scipy_mouse(dose_mg_per_kg, times, il_t=0.01, p=WELL):
    """MPK-1 (i.p., biophase) and dm/dt = k_m (1 + S_IL E(c = 57.8 C_e / K_I, L = IL_t) - m)."""

    def rhs(t, y):
        dep, ac, ap, ce, m = y
        cp = ac / MPK["v1"]
        c_ug_per_ml = ce  # mg/L = ug/mL
        return [-MPK["ka"] * dep, MPK["ka"] * dep - MPK["cl"] * cp - MPK["q"] * (cp - ap / MPK["v2"]), MPK["q"] * (cp - ap / MPK["v2"]),
                MPK["ke0"] * (cp - ce), p["k_m"] * (1 + p["s_il"] * signal(1000.0 * c_ug_per_ml, il_t, p) - m)]

    doses = [24.0 * d for d in range(7, 28)] if dose_mg_per_kg else []
    y, out = np.array([0, 0, 0, 0, 1.0]), np.zeros(times.size)
    out[times == 0] = 1.0
    bounds = sorted({0.0, times[-1], *doses})
    for a, b in zip(bounds[:-1], bounds[1:]):
        if a in doses:
            y = y.copy()
            y[0] += MPK["f"] * dose_mg_per_kg * 0.025
        inside = (times > a) & (times <= b)
        t_eval = np.unique(np.r_[times[inside], b])
        sol = solve_ivp(rhs, (a, b), y, method="LSODA", t_eval=t_eval, rtol=1e-11, atol=1e-14)
        out[inside] = sol.y[4][np.searchsorted(t_eval, times[inside])]
        y = sol.y[:, -1]
    return out


@pytest.fixture(scope="module")
def tumours():
    return simulate_paired(built_trial("pancreatic_caf_tslp_mouse"), 200, seed=9)


def test_mouse_parameters_are_the_card():
    model = vt.models.get_model("caf_tslp_mouse")
    for name in ("k_i", "k_l", "tau", "k_m", "s_il"):
        assert model.parameter(name).value == WELL[name], name
    assert model.parameter("il_t").value == 0.01 and model.parameter("il_t").source.startswith("A")
    assert {c.name: c.reference for c in model.covariates} == {"bw": 0.025}
    assert model.parameter("ke0").value == 0.1 and model.parameter("ka_ip").value == 1.5


def test_typical_mouse_matches_scipy(tumours):
    times = tumours["times_h"]
    for arm, dose in IN_VIVO_ARMS.items():
        np.testing.assert_allclose(tumours[arm]["tslp_mrna_fold"][0], scipy_mouse(dose, times), rtol=1e-5, err_msg=arm)


def test_in_vivo_behaviour_typical_and_population(tumours):
    i = int(np.flatnonzero(np.isclose(tumours["times_h"], HARVEST_H))[0])
    excess = {arm: tumours[arm]["tslp_excess_fold"][:, i] for arm in IN_VIVO_ARMS}
    lowered = {arm: 1 - excess[arm] / excess["vehicle"] for arm in IN_VIVO_ARMS}
    # the typical mouse: [11.5-fold; 95%, 68%, 100%]
    assert 1 + excess["vehicle"][0] >= 10 and 1 + excess["vehicle"][0] == pytest.approx(11.5, abs=0.05)
    assert lowered["anakinra 10 mg/kg/day"][0] >= 0.85 and lowered["anakinra 10 mg/kg/day"][0] == pytest.approx(0.95, abs=0.01)
    assert lowered["anakinra 1 mg/kg/day"][0] >= 0.50 and lowered["anakinra 1 mg/kg/day"][0] == pytest.approx(0.68, abs=0.01)
    assert lowered["anakinra 100 mg/kg/day"][0] >= 0.98
    # 200 mice per arm (the same tumours in every arm): the median mouse
    pop = slice(1, None)
    assert np.median(1 + excess["vehicle"][pop]) >= 10
    assert np.median(lowered["anakinra 10 mg/kg/day"][pop]) >= 0.85
    assert np.median(lowered["anakinra 1 mg/kg/day"][pop]) >= 0.50
    assert np.median(lowered["anakinra 100 mg/kg/day"][pop]) >= 0.98


@pytest.mark.parametrize("flags", [["--typical"], ["--animals-per-arm", "1", "--seed", "4"]], ids=["typical", "tiny"])
def test_vtrial_run_mouse(tmp_path, flags):
    out = tmp_path / "run"
    config = CONFIGS / "pancreatic_caf_tslp_mouse.toml"
    result = runner.invoke(app, ["run", str(config), "--out", str(out), *flags], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    assert info["n_failed"] == 0 and info["n_animals"] == 4
    endpoints = pd.read_csv(out / "endpoints.csv").set_index(["arm", "endpoint"])["median"]
    assert ("anakinra 10 mg/kg/day", "tslp_excess_inhibition_pct") in endpoints.index
    assert (out / "report.png").is_file()
    if flags == ["--typical"]:
        assert endpoints[("anakinra 10 mg/kg/day", "tslp_excess_inhibition_pct")] == pytest.approx(95.4, abs=0.2)
