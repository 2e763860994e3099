"""ALPHA-1 (model card alphavirus_bone_mouse.md): RRV and CHIKV arthritis in mice, bone loss.

The model is checked against a scipy solve of the card's equations written out below
(MPK-1 with the biophase, f_sig as the ratio E(c)/E(0) of the definitions), against every
behaviour bullet of the card on the typical mouse and on 200 mice per arm (the same mice
in every arm), and through `vtrial run` on both configs.
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

NM_PER_MG_PER_L = 1e6 / 17_300.0
MPK = {"cl_ref": 0.020, "v1_ref": 0.0015, "q_ref": 0.0042, "v2_ref": 0.0020, "ka_ip": 1.5, "f_ip": 0.9, "ke0": 0.1}
LINK = {"k_i": 0.21, "k_l": 0.26, "tau": 3.0}
RRV = {"bw": 0.012, "r": 0.12, "kc": 0.1, "kab": 0.02, "v50": 0.1, "k_inf": 0.012, "il_pk": 0.05, "k_ro": 0.05,
       "s_ro": 3.0, "f_ro": 0.75, "k_oc": 0.03, "k_b": 0.002, "bv0": 20.0, "vpk_log": 7.0, "ds_max": 5.0}
CHIKV = {**RRV, "bw": 0.020, "r": 0.20, "kab": 0.03, "k_inf": 0.03, "s_ro": 2.5, "f_ro": 0.5, "vpk_log": 6.5, "ds_max": 2.0}
VIRUS = {"rrv": ("alphavirus_bone_mouse", RRV, "RRV"), "chikv": ("alphavirus_bone_mouse_chikv", CHIKV, "CHIKV")}
DAY10, DAY15 = 240.0, 360.0


def arm_names(label):
    return {"mock": "mock", "vehicle": f"{label} + vehicle", "a10": f"{label} + anakinra 10 mg/kg/day",
            "a1": f"{label} + anakinra 1 mg/kg/day", "ko": f"{label} in IL-1R KO"}


def card_rhs(t, y, p, ko):
    """The card's equations (MPK-1 and ALPHA-1), written out plainly."""
    dep, ac, ap, ce, v, ab, inf, ro, oc, b = y
    w = p["bw"] / 0.025
    cl, q, v1, v2 = MPK["cl_ref"] * w**0.75, MPK["q_ref"] * w**0.75, MPK["v1_ref"] * w, MPK["v2_ref"] * w
    cp = ac / v1
    l = max(p["il_pk"] * inf / LINK["k_l"], 1e-300)  # E(c)/E(0) is 0/0 without IL-1: its limit
    e = lambda c: LINK["tau"] * (l / (1 + l + c)) / (1 + LINK["tau"] * (l / (1 + l + c)))  # noqa: E731
    f_sig = 0.0 if ko else e(NM_PER_MG_PER_L * ce / LINK["k_i"]) / e(0.0)
    drive = v / (v + p["v50"])
    return [
        -MPK["ka_ip"] * dep, MPK["ka_ip"] * dep - cl * cp - q * (cp - ap / v2), q * (cp - ap / v2), MPK["ke0"] * (cp - ce),
        p["r"] * v * (1 - v) - p["kc"] * ab * v, p["kab"] * drive, p["k_inf"] * (drive - inf),
        p["k_ro"] * (1 + p["s_ro"] * inf * (1 - p["f_ro"] + p["f_ro"] * f_sig) - ro), p["k_oc"] * (ro - oc), p["k_b"] * (1 - oc * b),
    ]


def scipy_alpha(p, times, dose_mg_per_kg=0.0, ko=False, v0=1e-4):
    """One mouse, i.p. boluses of `dose_mg_per_kg` at 24, 48, ..., 336 h, piecewise between doses."""
    doses = [24.0 * k for k in range(1, 15)] if dose_mg_per_kg else []
    y = np.array([0, 0, 0, 0, v0, 0, 0, 1, 1, 1.0])
    out = np.zeros((times.size, 10))
    out[times == 0] = y
    bounds = sorted({0.0, times[-1], *doses})
    for a, b in zip(bounds[:-1], bounds[1:]):
        if a in doses:
            y = y.copy()
            y[0] += MPK["f_ip"] * dose_mg_per_kg * p["bw"]
        inside = (times > a) & (times <= b)
        t_eval = np.unique(np.r_[times[inside], b])
        sol = solve_ivp(card_rhs, (a, b), y, method="LSODA", t_eval=t_eval, args=(p, ko), rtol=1e-11, atol=1e-14)
        out[inside] = sol.y.T[np.searchsorted(t_eval, times[inside])]
        y = sol.y[:, -1]
    dep, ac, ap, ce, v, ab, inf, ro, oc, b = out.T
    return {"effect_site_anakinra_mg_l": ce, "bv_tv_pct": p["bv0"] * b, "bv_tv_loss_pct": 100 * (1 - b), "rankl_opg_fold": ro,
            "trap_oc_fold": oc, "disease_score": p["ds_max"] * inf,
            "weight_gain_pct": 3.0 * times / 24.0 - 10.0 * inf, "virus": v}


def reference(p, times, arm):
    kw = {"mock": {"v0": 0.0}, "vehicle": {}, "a10": {"dose_mg_per_kg": 10.0}, "a1": {"dose_mg_per_kg": 1.0}, "ko": {"ko": True}}[arm]
    return scipy_alpha(p, times, **kw)


@pytest.fixture(scope="module", params=["rrv", "chikv"])
def mice(request):
    """200 mice (plus the typical one first) in every arm of a virus's config."""
    name, card, label = VIRUS[request.param]
    built = built_trial(name)
    return request.param, card, arm_names(label), simulate_paired(built, 200, seed=5)


@pytest.fixture(scope="module")
def rrv_tight():
    """The typical RRV mouse, vehicle and 10 and 100 mg/kg/day, at tight tolerances."""
    model = vt.models.get_model("alphavirus_bone_mouse")
    ip = lambda d: vt.Regimen((vt.Bolus(d, time_h=24.0, unit="mg/kg", route="ip", every_h=24.0, count=14),))  # noqa: E731
    arms = [vt.Arm("vehicle", vt.Regimen()), vt.Arm("a10", ip(10.0)), vt.Arm("a100", ip(100.0))]
    times = np.arange(0.0, 361.0, 1.0)
    res = vt.simulate(model, arms, times_h=times, typical=True, states=False,
                      options=vt.SolverOptions(rtol=1e-11, atol=1e-16, max_steps=200_000))
    assert (res.animals["status"] == "ok").all()
    return times, {a.name: {k: v[i] for k, v in res.solution.observables.items()} for i, a in enumerate(arms)}


def _at(times, t):
    return int(np.flatnonzero(np.isclose(times, t))[0])


# --- the card as data ------------------------------------------------------------------------


@pytest.mark.parametrize("virus", ["rrv", "chikv"])
def test_card_parameters_units_and_sources(virus):
    name, card, _ = VIRUS[virus]
    model = vt.models.get_model(name)
    for key, value in card.items():
        if key != "bw":
            assert model.parameter(key).value == value, key
    for key, value in {**MPK, **LINK}.items():
        assert model.parameter(key).value == value, key
    bw = {c.name: c for c in model.covariates}["bw"]
    assert bw.reference == card["bw"] and bw.unit == "kg"
    assert model.parameter("r").unit == "1/h" and model.parameter("vpk_log").unit == "log10 PFU/g"
    assert all(model.parameter(k).source.startswith("A") for k in ("r", "kc", "s_ro", "f_ro", "k_b", "bv0", "ke0", "cl_ref"))
    assert model.parameter("k_i").source.startswith("seed")
    built = built_trial(name)
    omega = dict(zip(built.population.iiv_names, np.diag(built.population.omega)))
    for key, cv in {"r": 15, "kab": 25, "s_ro": 30, "f_ro_odds_factor": 20, "k_b": 25, "bv0": 10}.items():
        assert omega[key] == pytest.approx(np.log1p((cv / 100) ** 2)), key
    res = built.population.residual
    assert res["bv_tv_pct"].proportional == 0.08 and res["rankl_opg_fold"].proportional == 0.30 and res["log10_titre"].additive == 0.3
    doc = importlib.import_module("vtrial.models.alphavirus_bone_mouse").__doc__.lower()
    assert "reconstruction" in doc and "assumption" in doc


def test_logit_scale_variability_of_f_ro():
    """The odds factor is a normal shift of logit(f_ro): f_ro stays in (0, 1)."""
    from vtrial.models.alphavirus_bone_mouse import f_ro

    for s in (0.2, 1.0, 5.0):
        got = float(f_ro({"f_ro": 0.75, "f_ro_odds_factor": s}))
        assert np.log(got / (1 - got)) == pytest.approx(np.log(3.0) + np.log(s))


# --- against the scipy solve of the card -------------------------------------------------------


def test_typical_mouse_matches_scipy(mice):
    """Every arm of both configs, the config's solver (rtol 1e-8), against scipy at rtol 1e-5."""
    virus, card, names, sim = mice
    times = sim["times_h"]
    for arm, name in names.items():
        ref = reference(card, times, arm)
        for key in ("bv_tv_pct", "rankl_opg_fold", "trap_oc_fold", "disease_score", "weight_gain_pct", "effect_site_anakinra_mg_l"):
            scale = max(1.0, np.max(np.abs(ref[key])))
            np.testing.assert_allclose(sim[name][key][0], ref[key], rtol=1e-5, atol=1e-8 * scale, err_msg=f"{virus} {arm}: {key}")
        titre = card["vpk_log"] + np.log10(np.maximum(ref["virus"], 1e-12))
        np.testing.assert_allclose(sim[name]["log10_titre"][0], titre, rtol=1e-5, atol=1e-6, err_msg=f"{virus} {arm}: titre")


def test_tight_solve_matches_scipy(rrv_tight):
    times, obs = rrv_tight
    for arm, ref in (("vehicle", reference(RRV, times, "vehicle")), ("a10", reference(RRV, times, "a10"))):
        for key in ("bv_tv_pct", "rankl_opg_fold", "effect_site_anakinra_mg_l"):
            np.testing.assert_allclose(obs[arm][key], ref[key], rtol=1e-7, atol=1e-12, err_msg=f"{arm}: {key}")


# --- behaviour on the typical mouse ------------------------------------------------------------


def test_virus_and_disease_unaffected_to_solver_precision(rrv_tight):
    """No drug term enters V, Ab or INF: treated and untreated agree to the solver's
    precision (card: < 0.01 units, max |dV| ~1e-7)."""
    times, obs = rrv_tight
    for arm in ("a10", "a100"):
        np.testing.assert_allclose(obs[arm]["log10_titre"], obs["vehicle"]["log10_titre"], rtol=0, atol=1e-9)
        for key in ("disease_score", "weight_gain_pct"):
            np.testing.assert_allclose(obs[arm][key][1:], obs["vehicle"][key][1:], rtol=1e-9, err_msg=key)
    assert np.max(np.abs(obs["a100"]["bv_tv_pct"] - obs["vehicle"]["bv_tv_pct"])) > 1.0  # while bone is protected


def test_virus_and_disease_unaffected_card_threshold(mice):
    _, _, names, sim = mice
    for arm in ("a10", "a1"):
        for key in ("log10_titre", "disease_score", "weight_gain_pct"):
            assert np.max(np.abs(sim[names[arm]][key] - sim[names["vehicle"]][key])) < 0.01, (arm, key)


def _typical(sim, names, key, arm, t):
    return sim[names[arm]][key][0, _at(sim["times_h"], t)]


def _prevented(sim, names, arm, t=DAY10, rows=0):
    loss = lambda a: sim[names[a]]["bv_tv_loss_pct"][rows, _at(sim["times_h"], t)]  # noqa: E731
    return 1.0 - loss(arm) / loss("vehicle")


def test_vehicle_bone_loss_and_rankl(mice):
    virus, _, names, sim = mice
    loss10, loss15 = (_typical(sim, names, "bv_tv_loss_pct", "vehicle", t) for t in (DAY10, DAY15))
    peak = sim[names["vehicle"]]["rankl_opg_fold"][0].max()
    if virus == "rrv":
        assert loss10 >= 18.0 and loss15 >= 25.0 and peak >= 2.0
        assert (loss10, loss15, peak) == pytest.approx((22.3, 29.1, 2.45), abs=0.1)  # [22%, 29%, 2.45]
        assert _typical(sim, names, "bv_tv_pct", "vehicle", DAY10) == pytest.approx(15.5, abs=0.1)  # [15.5 vs 20.0]
        assert _typical(sim, names, "bv_tv_pct", "mock", DAY10) == 20.0
    else:
        assert loss10 >= 20.0 and loss10 == pytest.approx(26.8, abs=0.2)  # [27%]


def test_anakinra_protects_bone(mice):
    virus, _, names, sim = mice
    prevented = _prevented(sim, names, "a10")
    if virus == "rrv":
        assert prevented >= 0.60 and prevented == pytest.approx(0.71, abs=0.01)  # [71%]
        ro = _typical(sim, names, "rankl_opg_fold", "a10", DAY10)
        oc = _typical(sim, names, "trap_oc_fold", "a10", DAY10)
        assert ro <= 1.4 and oc <= 1.5
        assert ro == pytest.approx(1.26, abs=0.01) and oc == pytest.approx(1.31, abs=0.01)
        assert _typical(sim, names, "rankl_opg_fold", "vehicle", DAY10) == pytest.approx(1.97, abs=0.01)
        assert _typical(sim, names, "trap_oc_fold", "vehicle", DAY10) == pytest.approx(2.18, abs=0.01)
    else:
        assert 0.35 <= prevented <= 0.55 and prevented == pytest.approx(0.45, abs=0.01)  # [45%]


def test_protection_stronger_for_rrv_than_chikv():
    sims = {}
    for virus in ("rrv", "chikv"):
        name, card, label = VIRUS[virus]
        times = np.array([0.0, DAY10])
        loss = {arm: reference(card, times, arm)["bv_tv_loss_pct"][-1] for arm in ("vehicle", "a10")}
        sims[virus] = 1 - loss["a10"] / loss["vehicle"]
    assert sims["rrv"] > sims["chikv"]


def test_ordering_ko_anakinra_10_then_1(mice):
    virus, _, names, sim = mice
    ko, a10, a1 = (_prevented(sim, names, arm) for arm in ("ko", "a10", "a1"))
    assert ko >= a10 > a1
    expected = {"rrv": (0.72, 0.71, 0.61), "chikv": (0.46, 0.45, 0.39)}[virus]  # [RRV 72/71/61%; CHIKV 46/45/39%]
    assert (ko, a10, a1) == pytest.approx(expected, abs=0.01)


# --- behaviour on 200 mice per arm ---------------------------------------------------------------


def test_population_bullets(mice):
    """The card's typical-mouse bullets hold for the median mouse (the same mice in every arm)."""
    virus, _, names, sim = mice
    i10, i15 = _at(sim["times_h"], DAY10), _at(sim["times_h"], DAY15)
    pop = slice(1, None)
    loss = lambda arm, i: sim[names[arm]]["bv_tv_loss_pct"][pop, i]  # noqa: E731
    prevented = {arm: np.median(1 - loss(arm, i10) / loss("vehicle", i10)) for arm in ("ko", "a10", "a1")}
    assert prevented["ko"] >= prevented["a10"] > prevented["a1"]
    if virus == "rrv":
        assert np.median(loss("vehicle", i10)) >= 18.0 and np.median(loss("vehicle", i15)) >= 25.0
        assert np.median(sim[names["vehicle"]]["rankl_opg_fold"][pop].max(axis=1)) >= 2.0
        assert prevented["a10"] >= 0.60
        assert np.median(sim[names["a10"]]["rankl_opg_fold"][pop, i10]) <= 1.4
        assert np.median(sim[names["a10"]]["trap_oc_fold"][pop, i10]) <= 1.5
    else:
        assert np.median(loss("vehicle", i10)) >= 20.0
        assert 0.35 <= prevented["a10"] <= 0.55
    # the mock arm keeps its bone; virus and disease are the same mouse for mouse
    assert np.all(sim[names["mock"]]["bv_tv_loss_pct"][pop] == 0.0)


def _study_power(sim, names, rng, n_studies=2000):
    """Share of resampled studies (5 vehicle and 5 anakinra mice, BV/TV at day 10 with
    the residual error) in which a t-test gives p < 0.05."""
    i10 = _at(sim["times_h"], DAY10)
    veh = sim["noisy"][names["vehicle"]]["bv_tv_pct"][1:, i10]
    ana = sim["noisy"][names["a10"]]["bv_tv_pct"][1:, i10]
    hits = 0
    for _ in range(n_studies):
        pick = rng.choice(veh.size, 10, replace=False)  # ten different mice
        hits += stats.ttest_ind(ana[pick[:5]], veh[pick[5:]]).pvalue < 0.05
    return hits / n_studies


@pytest.mark.xfail(strict=True, reason="card target (A) not met: with the card's BV0 IIV (10%) and BV/TV residual error (8%), "
                                       "5 mice per group detect the RRV protection in about 40% of studies, not >= 80%")
def test_population_rrv_studies_reach_significance(mice):
    virus, _, names, sim = mice
    if virus != "rrv":
        pytest.skip("the card states this target for RRV")
    assert _study_power(sim, names, np.random.default_rng(2019)) >= 0.80


def test_population_rrv_study_power_as_simulated(mice):
    """What the card's population check gives (it is recorded in the README): about 40%."""
    virus, _, names, sim = mice
    if virus != "rrv":
        pytest.skip("the card states this target for RRV")
    assert 0.30 <= _study_power(sim, names, np.random.default_rng(2019)) <= 0.50


# --- the command line ------------------------------------------------------------------------------

runner = CliRunner()


@pytest.mark.parametrize("virus", ["rrv", "chikv"])
@pytest.mark.parametrize("flags", [["--typical"], ["--animals-per-arm", "1", "--seed", "3"]], ids=["typical", "tiny"])
def test_vtrial_run(tmp_path, virus, flags):
    name, card, label = VIRUS[virus]
    names = arm_names(label)
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(CONFIGS / f"{name}.toml"), "--out", str(out), *flags], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    assert info["n_failed"] == 0 and info["n_animals"] == 5
    endpoints = pd.read_csv(out / "endpoints.csv").set_index(["arm", "endpoint"])["median"]
    assert (names["a10"], "bv_tv_loss_prevented_day10_pct") in endpoints.index
    assert (out / "report.png").is_file()
    obs = pd.read_parquet(out / "observations.parquet")
    assert sorted(obs.loc[obs["bv_tv_pct"].notna(), "time_h"].unique()) == [120.0, 240.0, 360.0]
    if flags == ["--typical"]:
        expected = {"rrv": 70.9, "chikv": 44.7}[virus]
        assert endpoints[(names["a10"], "bv_tv_loss_prevented_day10_pct")] == pytest.approx(expected, abs=0.3)
        traj = pd.read_parquet(out / "trajectories.parquet")
        arm = traj[traj["arm"] == names["a10"]].sort_values("time_h")
        ref = reference(card, arm["time_h"].to_numpy(), "a10")
        np.testing.assert_allclose(arm["bv_tv_pct"], ref["bv_tv_pct"], rtol=1e-5)


BAD = {
    "route the model lacks": ('route = "ip", amount = 10,', 'route = "sc", amount = 10,', "arms.2.doses.0.route"),
    "f_ro above 1": ("[parameters]\n", "[parameters]\nf_ro = 1.5\n", "parameters.f_ro"),
    "mock virus out of range": ("parameters = { v0 = 0 }", "parameters = { v0 = -1 }", "arms.0.parameters.v0"),
    "unknown sampled observable": ("[sampling.bv_tv_pct]", "[sampling.bv_tv]", "sampling.bv_tv"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_exits_2_naming_the_field(tmp_path, case):
    assert_run_refuses_edit(tmp_path, CONFIGS / "alphavirus_bone_mouse.toml", *BAD[case])
