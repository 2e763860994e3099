"""NMP-1 (model card renal_nmp_pig.md): porcine kidney NMP with anakinra in a closed circuit.

The model is checked against a scipy solve of the card's equations written out below
(GFR(t) as the card's formula, f_sig as the ratio E(c)/E(0) of the definitions), against
every behaviour bullet of the card on the typical pig and on 200 pigs (the two kidneys
of a pair share the pig's parameters), and through `vtrial run`.
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.integrate import solve_ivp
from typer.testing import CliRunner

import vtrial as vt
from vtrial.cli import app
from tests.paired_population import CONFIGS, built_trial, simulate_paired

from conftest import assert_run_refuses_edit

CONFIG = CONFIGS / "renal_nmp_pig.toml"
NM_PER_MG_PER_L = 1e6 / 17_300.0
CARD = {  # the card's parameter table
    "v_perf": 0.6, "gfr_ss": 0.36, "t_g": 0.5, "theta": 0.7, "k_d": 0.3, "k_syn": 30.0, "k_il": 1.0, "tau": 10.0,
    "k_i": 0.21, "k_l": 0.26, "k_il6": 1.0, "k_fasl": 0.4, "k_icam1": 0.3, "s_il6": 60.0, "s_fasl": 8.0, "s_icam1": 10.0,
    "f_il6": 0.7, "f_fasl": 0.75, "f_icam1": 0.7,
}
GENES = ("il6", "fasl", "icam1")
DOSES = {"vehicle": 0.0, "anakinra 50 mg": 50.0, "anakinra 0.5 mg": 0.5, "anakinra 50 ug": 0.05, "anakinra 5 ug": 0.005}


def card_rhs(t, y, p, block):
    """The card's equations, written out plainly."""
    a, d, il, *m = y
    c_mg = a / p["v_perf"]
    gfr = p["gfr_ss"] * (1.0 - np.exp(-t / p["t_g"]))
    l = max(il / 1000.0 / p["k_l"], 1e-300)  # E(c)/E(0) is 0/0 at no IL-1; its limit
    c = NM_PER_MG_PER_L * c_mg / p["k_i"]
    e = lambda cc: p["tau"] * (l / (1 + l + cc)) / (1 + p["tau"] * (l / (1 + l + cc)))  # noqa: E731
    f_sig = 0.0 if block else e(c) / e(0.0)
    dm = [p[f"k_{g}"] * (1 + p[f"s_{g}"] * d * (1 - p[f"f_{g}"] + p[f"f_{g}"] * f_sig) - m[j]) for j, g in enumerate(GENES)]
    return [-p["theta"] * gfr * c_mg, -p["k_d"] * d, p["k_syn"] * d - p["k_il"] * il, *dm]


def scipy_nmp(dose_mg, times, block=False, p=CARD):
    """One kidney: the 50 mg (or other) bolus at t = 0 goes into the circuit."""
    sol = solve_ivp(card_rhs, (0.0, times[-1]), [dose_mg, 1.0, 0.0, 1.0, 1.0, 1.0], method="LSODA", t_eval=times,
                    args=(p, block), rtol=1e-11, atol=1e-13)
    a, d, il, *m = sol.y
    out = {"perfusate_anakinra_mg_per_l": a / p["v_perf"], "il1_pM": il}
    out["perfusate_anakinra_mg_per_l"][0] = 0.0  # the value at t = 0 is before the bolus
    for j, g in enumerate(GENES):
        out[f"{g}_fold"] = m[j]
    crcl = p["gfr_ss"] * (1.0 - np.exp(-times / p["t_g"])) * 1000.0 / 60.0 / 2.0  # per 100 g of a 200-g kidney
    out.update(crcl_ml_per_min_per_100g=crcl, urine_ml_per_min_per_100g=0.7 * crcl,
               rbf_ml_per_min_per_100g=100.0 * (1.0 - np.exp(-times / p["t_g"])))
    return out


@pytest.fixture(scope="module")
def built():
    return built_trial("renal_nmp_pig")


@pytest.fixture(scope="module")
def tight():
    """The typical kidney of every arm up to 6 h (the card's 6-h variant), tight tolerances."""
    model = vt.models.get_model("renal_nmp_pig")
    bolus = lambda mg: vt.Regimen((vt.Bolus(mg, unit="mg", route="arterial"),))  # noqa: E731
    arms = [vt.Arm(name, bolus(mg) if mg else vt.Regimen()) for name, mg in DOSES.items()]
    arms.append(vt.Arm("block", vt.Regimen(), parameters={"il1r_ko": 1.0}))
    times = np.round(np.arange(0.0, 6.0 + 1e-9, 0.05), 10)
    res = vt.simulate(model, arms, times_h=times, typical=True, states=False,
                      options=vt.SolverOptions(rtol=1e-12, atol=1e-14, max_steps=200_000))
    assert (res.animals["status"] == "ok").all()
    obs = {a.name: {k: v[i] for k, v in res.solution.observables.items()} for i, a in enumerate(arms)}
    return times, obs


@pytest.fixture(scope="module")
def pigs(built):
    """200 pigs, each pig's kidneys in every arm (plus the typical pig first)."""
    return simulate_paired(built, 200, seed=11)


def _at(times, t):
    return int(np.flatnonzero(np.isclose(times, t))[0])


# --- the card as data ------------------------------------------------------------------


def test_card_parameters_units_and_sources():
    model = vt.models.get_model("renal_nmp_pig")
    for name, value in CARD.items():
        assert model.parameter(name).value == value, name
    assert model.parameter("tau").source == "A" and model.parameter("k_i").source.startswith("seed")
    assert all(model.parameter(n).source.startswith("A") for n in ("v_perf", "gfr_ss", "theta", "s_il6", "f_fasl"))
    assert model.parameter("gfr_ss").unit == "L/h" and model.parameter("k_syn").unit == "pM/h"
    assert model.linear_pk is None  # GFR(t) changes with time: not the engine's constant mammillary form
    doc = importlib.import_module("vtrial.models.renal_nmp_pig").__doc__.lower()
    assert "reconstruction" in doc and "assumption" in doc
    cv = built_trial("renal_nmp_pig").population
    omega = dict(zip(cv.iiv_names, np.diag(cv.omega)))
    assert omega["s_il6"] == pytest.approx(np.log1p(0.5**2)) and omega["k_d"] == pytest.approx(np.log1p(0.3**2))
    assert cv.residual["il6_log2_fold"].additive == 0.5 and cv.residual["perfusate_anakinra_mg_per_l"].proportional == 0.15


# --- against the scipy solve of the card -------------------------------------------------


@pytest.mark.parametrize("arm", [*DOSES, "block"])
def test_typical_kidney_matches_scipy(tight, arm):
    times, obs = tight
    ref = scipy_nmp(DOSES.get(arm, 0.0), times, block=arm == "block")
    for name, expected in ref.items():
        np.testing.assert_allclose(obs[arm][name], expected, rtol=1e-5, atol=1e-9 * max(1.0, np.max(expected)), err_msg=name)


def test_config_solver_and_population_typical_match_scipy(built, pigs):
    times = pigs["times_h"]
    for arm, mg in (("vehicle", 0.0), ("anakinra 50 mg", 50.0)):
        ref = scipy_nmp(mg, times)
        for name in ("perfusate_anakinra_mg_per_l", "il6_fold", "fasl_fold", "icam1_fold"):
            np.testing.assert_allclose(pigs[arm][name][0], ref[name], rtol=1e-5, atol=1e-9, err_msg=f"{arm}: {name}")


def test_closed_circuit_pk_is_the_card_closed_form(tight):
    """A(t) = A0 exp(-theta GFR_ss / V (t - t_g (1 - exp(-t/t_g)))): loss by filtration only."""
    times, obs = tight
    p = CARD
    expected = 50.0 / p["v_perf"] * np.exp(-p["theta"] * p["gfr_ss"] / p["v_perf"] * (times - p["t_g"] * (1 - np.exp(-times / p["t_g"]))))
    np.testing.assert_allclose(obs["anakinra 50 mg"]["perfusate_anakinra_mg_per_l"][1:], expected[1:], rtol=1e-9)


# --- behaviour on the typical kidney -----------------------------------------------------


def test_drug_far_in_excess(tight):
    times, obs = tight
    c = obs["anakinra 50 mg"]["perfusate_anakinra_nM"]
    assert 50.0 / 0.6 == pytest.approx(83.3, abs=0.05)  # starts at 83 mg/L = 4.8 uM ~ 23,000 K_I
    assert c[1] / 0.21 > 20_000
    assert c[_at(times, 3.0)] >= 1000.0 and c[_at(times, 3.0)] == pytest.approx(1685, rel=0.01)  # [29 mg/L, 1.7 uM]
    assert c[_at(times, 6.0)] == pytest.approx(478, rel=0.01)  # [0.48 uM at 6 h]
    assert np.all(obs["anakinra 50 mg"]["il1_signal_fraction"][1:] < 1e-3)


def test_transcripts_at_end_of_nmp(tight):
    times, obs = tight
    end = _at(times, 3.0)
    fold = {a: {g: obs[a][f"{g}_fold"][end] for g in GENES} for a in obs}
    reduction = {g: 1 - fold["anakinra 50 mg"][g] / fold["vehicle"][g] for g in GENES}
    assert reduction["il6"] >= 0.60 and reduction["fasl"] >= 0.50 and reduction["icam1"] >= 0.45
    assert fold["vehicle"]["il6"] == pytest.approx(31.6, abs=0.1) and fold["anakinra 50 mg"]["il6"] == pytest.approx(10.2, abs=0.1)
    assert fold["vehicle"]["fasl"] == pytest.approx(4.4, abs=0.05) and fold["vehicle"]["icam1"] == pytest.approx(4.7, abs=0.05)
    for g in GENES:
        assert fold["anakinra 50 mg"][g] == pytest.approx(fold["block"][g], rel=0.01)


def test_saturation_hundredfold_margin(tight):
    times, obs = tight
    end = _at(times, 3.0)
    f = {a: obs[a]["il6_fold"][end] for a in obs}
    effect = lambda a: (f["vehicle"] - f[a]) / (f["vehicle"] - f["anakinra 50 mg"])  # noqa: E731
    for g in GENES:
        assert obs["anakinra 0.5 mg"][f"{g}_fold"][end] == pytest.approx(obs["anakinra 50 mg"][f"{g}_fold"][end], rel=0.03)
    assert f["anakinra 0.5 mg"] == pytest.approx(10.5, abs=0.05)
    assert effect("anakinra 50 ug") >= 0.80 and effect("anakinra 50 ug") == pytest.approx(0.87, abs=0.01)
    assert effect("anakinra 5 ug") == pytest.approx(0.42, abs=0.02)


def test_function_unchanged_to_solver_precision(tight):
    """RBF, urine output, CrCl and FENa have no path from the drug: < 0.1% (card), and in
    fact equal to the solver's precision."""
    times, obs = tight
    for name in ("rbf_ml_per_min_per_100g", "urine_ml_per_min_per_100g", "crcl_ml_per_min_per_100g", "fena_pct"):
        ref = obs["vehicle"][name][1:]
        for arm in obs:
            np.testing.assert_allclose(obs[arm][name][1:], ref, rtol=1e-9, err_msg=f"{arm}: {name}")
    end = _at(times, 3.0)
    assert obs["vehicle"]["crcl_ml_per_min_per_100g"][-1] == pytest.approx(3.0, rel=1e-4)  # 3 mL/min/100 g at steady state
    assert obs["vehicle"]["rbf_ml_per_min_per_100g"][-1] == pytest.approx(100.0, rel=1e-4)
    assert obs["vehicle"]["fena_pct"][end] == 10.0


# --- behaviour on 200 pigs ------------------------------------------------------------------


def test_population_drug_excess_and_transcripts(pigs):
    end = -1
    c = pigs["anakinra 50 mg"]["perfusate_anakinra_nM"][1:]
    assert np.median(c[:, end]) >= 1000.0
    assert np.all(pigs["anakinra 50 mg"]["il1_signal_fraction"][1:, 1:] < 1e-3)
    for g, least in (("il6", 0.60), ("fasl", 0.50), ("icam1", 0.45)):
        veh, ana = pigs["vehicle"][f"{g}_fold"][1:, end], pigs["anakinra 50 mg"][f"{g}_fold"][1:, end]
        assert np.median(1 - ana / veh) >= least, g
        np.testing.assert_allclose(ana, pigs["full IL-1R block"][f"{g}_fold"][1:, end], rtol=0.01)


def test_population_saturation(pigs):
    """The 100-fold margin holds across pigs. The card's "0.5 mg within 3% of 50 mg" is a
    typical-pig number at its own threshold (IL-6 2.96%); across pigs the median IL-6
    deviation is 3.0% (up to 9% where the fold is small), while 0.5 mg keeps >= 95% of
    the 50 mg effect in every pig."""
    end = -1
    for g in GENES:
        full = pigs["anakinra 50 mg"][f"{g}_fold"][1:, end]
        veh = pigs["vehicle"][f"{g}_fold"][1:, end]
        deviation = np.abs(pigs["anakinra 0.5 mg"][f"{g}_fold"][1:, end] / full - 1)
        assert np.median(deviation) <= (0.031 if g == "il6" else 0.03), g
        effect = lambda arm: (veh - pigs[arm][f"{g}_fold"][1:, end]) / (veh - full)  # noqa: E731
        assert np.min(effect("anakinra 0.5 mg")) >= 0.95, g
        assert np.median(effect("anakinra 50 ug")) >= 0.80, g
        assert 0.35 <= np.median(effect("anakinra 5 ug")) <= 0.50, g


def test_population_function_unchanged(pigs):
    for name in ("rbf_ml_per_min_per_100g", "urine_ml_per_min_per_100g", "crcl_ml_per_min_per_100g", "fena_pct"):
        ref = pigs["vehicle"][name][:, 1:]
        for arm in ("anakinra 50 mg", "anakinra 5 ug", "full IL-1R block"):
            np.testing.assert_allclose(pigs[arm][name][:, 1:], ref, rtol=1e-6, err_msg=f"{arm}: {name}")


def test_population_five_pair_studies_reach_significance(pigs):
    """Paired t-test on log2 fold with qPCR noise (SD 0.5 log2) in resampled 5-pair studies:
    p < 0.05 in >= 90% of studies for IL-6 [97%] and >= 65% for FasL and ICAM-1 [78%, 72%]."""
    rng = np.random.default_rng(2024)
    studies = [rng.choice(np.arange(1, 201), 5, replace=False) for _ in range(2000)]
    noisy = pigs["noisy"]
    for g, least in (("il6", 0.90), ("fasl", 0.65), ("icam1", 0.65)):
        veh, ana = noisy["vehicle"][f"{g}_log2_fold"][:, -1], noisy["anakinra 50 mg"][f"{g}_log2_fold"][:, -1]
        significant = np.mean([stats.ttest_rel(ana[i], veh[i]).pvalue < 0.05 for i in studies])
        assert significant >= least, (g, significant)


# --- the command line ----------------------------------------------------------------------

runner = CliRunner()


@pytest.mark.parametrize("flags", [["--typical"], ["--animals-per-arm", "1", "--seed", "3"]], ids=["typical", "tiny"])
def test_vtrial_run(tmp_path, flags, pigs):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(CONFIG), "--out", str(out), *flags], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    endpoints = pd.read_csv(out / "endpoints.csv").set_index(["arm", "endpoint"])["median"]
    for g in GENES:  # inhibitions of the treated arms only, against the vehicle (issue 23)
        assert ("anakinra 50 mg", f"{g}_fold_reduction_pct") in endpoints.index
        assert ("full IL-1R block", f"{g}_fold_reduction_pct") in endpoints.index
        assert ("vehicle", f"{g}_fold_reduction_pct") not in endpoints.index
    assert (out / "report.png").is_file()
    obs = pd.read_parquet(out / "observations.parquet")
    assert sorted(obs.loc[obs["il6_log2_fold"].notna(), "time_h"].unique()) == [3.0]
    info = json.loads((out / "run.json").read_text())
    assert info["n_failed"] == 0 and info["n_animals"] == 6
    if flags == ["--typical"]:  # (the arms' animals differ otherwise: a config does not pair them)
        for name in ("rbf_reduction_pct", "crcl_reduction_pct", "urine_reduction_pct", "fena_reduction_pct"):
            assert abs(endpoints[("anakinra 50 mg", name)]) < 1e-5
        assert endpoints[("anakinra 50 mg", "il6_fold_reduction_pct")] == pytest.approx(67.8, abs=0.2)
        traj = pd.read_parquet(out / "trajectories.parquet")
        arm = traj[traj["arm"] == "anakinra 50 mg"].sort_values("time_h")
        ref = scipy_nmp(50.0, arm["time_h"].to_numpy())
        np.testing.assert_allclose(arm["il6_fold"], ref["il6_fold"], rtol=1e-5)


BAD = {
    "route the circuit lacks": ('route = "arterial", amount = 50,', 'route = "iv", amount = 50,', "arms.1.doses.0.route"),
    "knockout switch out of range": ("parameters = { il1r_ko = 1 }", "parameters = { il1r_ko = 2 }", "arms.2.parameters.il1r_ko"),
    "sieving above 1": ("[parameters]\n", "[parameters]\ntheta = 1.5\n", "parameters.theta"),
    "unknown variability": ("k_syn = 50", "k_synth = 50", "variability.cv_percent.k_synth"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_exits_2_naming_the_field(tmp_path, case):
    assert_run_refuses_edit(tmp_path, CONFIG, *BAD[case])
