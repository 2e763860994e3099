"""MSU-1 (card msu_peritonitis_mouse.md): the model against an independent scipy solve of
the card written below, every "behaviour the simulation must show" bullet on the typical
animal and on 200 animals with the card's variability, and `vtrial run` on the config.

Population criteria. The card states most bullets for the typical animal; on 200
animals with the card's variability each is checked as follows:
- the population median must meet the card's number or range (the typical animal is the
  median animal when one parameter drives a read-out);
- structural claims must hold for *every* animal (IL-1beta untouched by the drug, the
  dose order, PBS flat, the knockout staying low);
- shape claims (peak times, resolution by 24 h) must hold for at least 90% of animals;
- the card's own population bullets are checked as it states them.
Two typical-animal claims hold only for most animals, and the tests record how many
(seeded, so they are regression guards, not claims of the card): the 200-ug arm is
within 5 points of the knockout at 6 h in 84.5% of animals (the rest exchange the
peritoneum fast: median q_pc 1.5x typical), and its 24-h count is within 15% of vehicle
in 75.5% (92% within 25%). The same 200 animals (parameters and body weight) are
simulated in every arm, so arm comparisons are paired.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import minimize_scalar
from scipy.stats import mannwhitneyu
from typer.testing import CliRunner

import vtrial as vt
from vtrial.cli import app
from vtrial.io.trial_config import BuiltTrial

from conftest import assert_run_refuses_edit, by_arm, trial_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "msu_peritonitis_mouse.toml"
N_POP = 200
IIV = {"kin": 30, "k_ilsyn": 40, "kx": 20, "q_pc": 30, "v_pc": 20}  # card, CV%

VEH, D200, KO, PBS = "MSU + vehicle", "MSU + anakinra 200 ug i.p.", "MSU, IL-1R KO", "PBS"
DOSE_ARMS = {200.0: D200, 20.0: "MSU + anakinra 20 ug i.p.", 2.0: "MSU + anakinra 2 ug i.p.", 0.2: "MSU + anakinra 0.2 ug i.p."}
SC = "MSU + anakinra 10 mg/kg s.c. 1 h before"

# --- the independent reference: the card's equations, written out here ---------------------

CARD = {  # MSU-1 table and MPK-1 (§0.2)
    "v_pc": 0.001, "q_pc": 0.0015, "kx": 0.20, "km": 1.0, "k_ilsyn": 55.0, "k_il": 1.0, "tau": 10.0, "kK": 1.0,
    "wE": 1.0, "wX": 0.25, "kin": 1.77, "kout": 0.25, "N0": 0.05, "v_lav": 0.005,
    "cl_ref": 0.020, "v1_ref": 0.0015, "q_ref": 0.0042, "v2_ref": 0.0020, "ka_sc": 0.7, "f_sc": 0.75,
    "k_i": 0.21, "k_l": 0.26,
}
BW = 0.022


def msu_card_rhs(t, y, p, bw, ko):
    a_pc, a_c, a_p, a_sc, x, m, il, k, n = y
    w = bw / 0.025
    cl, q, v1, v2 = p["cl_ref"] * w**0.75, p["q_ref"] * w**0.75, p["v1_ref"] * w, p["v2_ref"] * w
    c_pc, c_p = a_pc / p["v_pc"], a_c / v1
    c = 1e6 / 17300.0 * c_pc / p["k_i"]
    l = il / 1000.0 / p["k_l"]
    rho = l / (1.0 + l + c)
    e = 0.0 if ko else p["tau"] * rho / (1.0 + p["tau"] * rho)
    return [
        p["q_pc"] * (c_p - c_pc),
        p["ka_sc"] * a_sc + p["q_pc"] * (c_pc - c_p) - cl * c_p - q * (c_p - a_p / v2),
        q * (c_p - a_p / v2),
        -p["ka_sc"] * a_sc,
        -p["kx"] * x,
        p["km"] * (x - m),
        p["k_ilsyn"] * m - p["k_il"] * il,
        p["kK"] * (p["wE"] * e + p["wX"] * m - k),
        p["kout"] * p["N0"] + p["kin"] * k - p["kout"] * n,
    ]


def msu_reference(times, *, p=CARD, bw=BW, ip_mg=0.0, sc_mg_per_kg=0.0, ko=False, x0=1.0, t_msu=0.0):
    """One MSU-1 mouse with scipy: i.p. and s.c. doses at t = 0, crystals `x0` at `t_msu`.

    A value at exactly an event time is the one just before it (NONMEM)."""
    jumps = [(0.0, 0, ip_mg), (0.0, 3, p["f_sc"] * sc_mg_per_kg * bw), (t_msu, 4, x0)]
    breaks = sorted({0.0, t_msu, float(times[-1])})
    y = np.zeros(9)
    y[8] = p["N0"]
    out = np.full((len(times), 9), np.nan)
    out[times == 0.0] = y
    for a, b in zip(breaks[:-1], breaks[1:]):
        for tj, i, amount in jumps:
            if tj == a:
                y[i] += amount
        mask = (times > a) & (times <= b)
        t_eval = np.unique(np.concatenate([times[mask], [b]]))
        sol = solve_ivp(msu_card_rhs, (a, b), y, method="LSODA", t_eval=t_eval, args=(p, bw, ko), rtol=1e-11, atol=1e-13)
        assert sol.success
        out[mask] = sol.y.T[np.searchsorted(t_eval, times[mask])]
        y = sol.y[:, -1].copy()
    w = bw / 0.025
    return {
        "neutrophils_1e6": out[:, 8],
        "lavage_il1b_pg_ml": out[:, 6] * 17.3 * p["v_pc"] / p["v_lav"],
        "plasma_anakinra_mg_l": out[:, 1] / (p["v1_ref"] * w),
        "peritoneal_anakinra_mg_l": out[:, 0] / p["v_pc"],
    }


def msu_exposure_reference(*, p=CARD, bw=BW, ip_mg=0.2, x0=1.0, end=24.0):
    """Exposure endpoints of one mouse (i.p. dose and crystals at t = 0) from a tight
    scipy solve with dense output, no output grid: plasma anakinra Cmax, Tmax and AUC
    (an integrated state) over [0, end], and the lavage IL-1beta peak and its time."""
    v1 = p["v1_ref"] * bw / 0.025

    def rhs(t, y):
        return [*msu_card_rhs(t, y[:9], p, bw, False), y[1] / v1]

    y0 = np.zeros(10)
    y0[0], y0[4], y0[8] = ip_mg, x0, p["N0"]
    sol = solve_ivp(rhs, (0.0, end), y0, method="LSODA", rtol=1e-12, atol=1e-14, dense_output=True)
    assert sol.success
    fine = np.linspace(0.0, end, 24001)

    def peak(curve):
        i = int(np.argmax(curve(fine)))
        ref = minimize_scalar(lambda t: -curve(t), bounds=(fine[max(i - 1, 0)], fine[min(i + 1, fine.size - 1)]), method="bounded",
                              options={"xatol": 1e-10})
        return -ref.fun, ref.x

    cmax, tmax = peak(lambda t: sol.sol(t)[1] / v1)
    il_peak, il_tmax = peak(lambda t: sol.sol(t)[6] * 17.3 * p["v_pc"] / p["v_lav"])
    return {"cmax": cmax, "tmax_h": tmax, "auc": sol.sol(end)[9], "il1b_peak": il_peak, "il1b_tmax_h": il_tmax}


def test_exact_exposure_reference_of_the_typical_mouse():
    """Issue 23: the exact Cmax and AUC of MSU-1's 200-ug arm are 10.47 mg/L and 11.01
    mg/L*h (the 0.25-h grid used to give 10.04 and 10.12); the IL-1beta peak is between
    grid times (the grid read 3.25 h)."""
    ref = msu_exposure_reference()
    assert abs(ref["cmax"] - 10.47) < 0.005 and abs(ref["auc"] - 11.01) < 0.005
    assert 3.25 < ref["il1b_tmax_h"] < 3.5


# --- simulations (two compiles: the typical arms, the population) ------------------------

TIMES = np.unique(np.concatenate([np.round(np.arange(0, 481) * 0.05, 10), [3.4, 8.6]]))


def at(t):
    return int(np.flatnonzero(np.isclose(TIMES, t))[0])


@pytest.fixture(scope="module")
def built():
    return BuiltTrial(trial_config(CONFIG), animals_per_arm=N_POP)


@pytest.fixture(scope="module")
def typical(built):
    res = vt.simulate(built.model, built.arms, built.population, times_h=TIMES, typical=True, options=built.options, states=False)
    return {a: {k: v[0] for k, v in obs.items()} for a, obs in by_arm(res).items()}


@pytest.fixture(scope="module")
def population(built):
    """The same 200 animals in every arm (noise drawn per arm and animal)."""
    drawn = built.population.sample(jax.random.PRNGKey(11), N_POP)
    columns = {k: np.asarray(drawn[k]) for k in (*IIV, "bw")}
    table = pd.concat([pd.DataFrame({"arm": a.name, "animal": np.arange(N_POP), **columns}) for a in built.arms], ignore_index=True)
    res = vt.simulate(built.model, built.arms, built.population, times_h=TIMES, animals=table, seed=3, options=built.options, states=False)
    assert (res.animals["status"] == "ok").all()
    return by_arm(res), by_arm(res, res.noisy), res.animals


# --- the card's parameters and the config ----------------------------------------------------


def test_card_parameters_sources_and_docstring():
    model = vt.models.get_model("msu_peritonitis_mouse")
    for name, value in CARD.items():
        assert model.parameter(name).value == value, name
    assert {c.name: c.reference for c in model.covariates} == {"bw": BW}
    for p in model.parameters:
        assert p.source.startswith(("A", "design", "seed", "P")), (p.name, p.source)
    assert model.parameter("il1r_ko").source == "design" and model.parameter("kin").source.startswith("A")
    assert len(model.states) == 11  # the card's 9 plus the vehicle twin of K and N
    doc = importlib.import_module("vtrial.models.msu_peritonitis_mouse").__doc__.lower()
    assert "reconstruction" in doc and "assumption" in doc and "twin" in doc


def test_config_carries_the_card_design(built):
    cfg = built.cfg
    assert cfg.variability.cv_percent == IIV
    assert (cfg.covariates["bw"].median, cfg.covariates["bw"].cv_percent) == (BW, 10)
    r = cfg.residual
    assert (r["neutrophils_1e6"].proportional, r["neutrophils_1e6"].additive) == (0.20, 0.0)
    assert (r["lavage_il1b_pg_ml"].proportional, r["lavage_il1b_pg_ml"].additive) == (0.25, 5.0)
    assert (r["plasma_anakinra_mg_l"].proportional, r["plasma_anakinra_mg_l"].additive) == (0.15, 0.01)
    assert [a.name for a in built.arms] == [PBS, VEH, D200, KO, *list(DOSE_ARMS.values())[1:], SC]
    for name in ("neutrophils_1e6", "lavage_il1b_pg_ml", "plasma_anakinra_mg_l"):
        np.testing.assert_array_equal(built.sampling[name], [1, 2, 4, 6, 8, 12, 16, 24])


def test_linear_pk_declaration_matches_the_vector_field():
    """The closed form replaces the model's PK rows: K a must equal those rows of f."""
    from vtrial.engine.linear_pk import rate_matrix

    model = vt.models.get_model("msu_peritonitis_mouse")
    p = {k: np.float64(v) for k, v in model.typical_values().items()}
    p.update(bw=0.027, q_pc=0.0021, v_pc=0.0013)
    idx = [model.state_index(s) for s in model.linear_pk.states]
    y = np.random.default_rng(1).uniform(0.01, 1.0, model.n_states)
    f = np.asarray(model.vector_field(0.0, y, p, np.zeros(model.n_states)))
    k = np.asarray(rate_matrix(model.linear_pk.constants(p)))
    np.testing.assert_allclose(f[idx], k @ y[idx], rtol=1e-12)


# --- against the independent reference ----------------------------------------------------------

REFERENCE_ARMS = {  # arm -> reference keyword arguments
    PBS: {"x0": 0.0}, VEH: {}, D200: {"ip_mg": 0.2}, KO: {"ko": True}, DOSE_ARMS[20.0]: {"ip_mg": 0.02},
    DOSE_ARMS[2.0]: {"ip_mg": 0.002}, DOSE_ARMS[0.2]: {"ip_mg": 0.0002}, SC: {"sc_mg_per_kg": 10.0, "t_msu": 1.0},
}


def _check_against_reference(got, ref, vehicle_ref):
    for name in ("neutrophils_1e6", "lavage_il1b_pg_ml"):
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-9)
    for name in ("plasma_anakinra_mg_l", "peritoneal_anakinra_mg_l"):  # judged against each peak
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-7 * max(ref[name].max(), 1e-3))
    paired = 100.0 * (1.0 - ref["neutrophils_1e6"] / vehicle_ref["neutrophils_1e6"])
    np.testing.assert_allclose(got["percent_inhibition"], paired, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arm", list(REFERENCE_ARMS))
def test_typical_animal_matches_scipy(typical, arm):
    kwargs = REFERENCE_ARMS[arm]
    vehicle = msu_reference(TIMES, x0=kwargs.get("x0", 1.0), t_msu=kwargs.get("t_msu", 0.0))
    _check_against_reference(typical[arm], msu_reference(TIMES, **kwargs), vehicle)


@pytest.mark.parametrize("animal", [0, 1, 2])
def test_population_animals_match_scipy(population, animal):
    """Drawn animals (their own kin, k_ilsyn, kx, q_pc, v_pc, bw) under drug, s.c. and knockout."""
    obs, _, table = population
    for arm in (D200, SC, KO):
        row = table[(table["arm"] == arm) & (table["animal"] == animal)].iloc[0]
        p = {**CARD, **{k: float(row[k]) for k in IIV}}
        kwargs = REFERENCE_ARMS[arm]
        ref = msu_reference(TIMES, p=p, bw=float(row["bw"]), **kwargs)
        vehicle = msu_reference(TIMES, p=p, bw=float(row["bw"]), t_msu=kwargs.get("t_msu", 0.0))
        _check_against_reference({k: v[animal] for k, v in obs[arm].items()}, ref, vehicle)


# --- behaviour: vehicle time course -------------------------------------------------------------


def test_vehicle_time_course_typical(typical):
    n, il = typical[VEH]["neutrophils_1e6"], typical[VEH]["lavage_il1b_pg_ml"]
    assert n[at(6)] == pytest.approx(3.0, abs=0.1) and n[at(6)] == pytest.approx(3.00, abs=0.005)
    peak = np.argmax(n)
    assert 7.0 <= TIMES[peak] <= 10.0 and n[peak] < 3.6
    assert n[peak] == pytest.approx(3.38, abs=0.005) and TIMES[peak] == pytest.approx(8.6, abs=0.05)
    assert n[at(24)] < 1.0 and n[at(24)] == pytest.approx(0.72, abs=0.005)
    ipeak = np.argmax(il)
    assert 2.0 <= TIMES[ipeak] <= 4.0 and 80.0 <= il[ipeak] <= 150.0
    assert il[ipeak] == pytest.approx(114, abs=0.5) and TIMES[ipeak] == pytest.approx(3.4, abs=0.05)
    assert il[at(12)] < 30.0 and il[at(12)] == pytest.approx(27, abs=0.5)
    np.testing.assert_allclose(typical[PBS]["neutrophils_1e6"], 0.05, rtol=1e-12)


def test_vehicle_time_course_population(population):
    obs = population[0]
    n, il = obs[VEH]["neutrophils_1e6"], obs[VEH]["lavage_il1b_pg_ml"]
    assert np.median(n[:, at(6)]) == pytest.approx(3.0, abs=0.1)
    t_peak = TIMES[np.argmax(n, axis=1)]
    assert np.mean((t_peak >= 7.0) & (t_peak <= 10.0)) >= 0.9
    assert np.median(n.max(axis=1)) < 3.6 and np.median(n[:, at(24)]) < 1.0
    assert np.mean(n[:, at(24)] < 0.5 * n.max(axis=1)) >= 0.9  # resolving by 24 h
    ti_peak = TIMES[np.argmax(il, axis=1)]
    assert np.mean((ti_peak >= 2.0) & (ti_peak <= 4.0)) >= 0.9
    assert 80.0 <= np.median(il.max(axis=1)) <= 150.0 and np.median(il[:, at(12)]) < 30.0
    np.testing.assert_allclose(obs[PBS]["neutrophils_1e6"], 0.05, rtol=1e-12)  # every animal


# --- behaviour: 200 ug anakinra, receptor blockade, dose response, duration -------------------


def test_200ug_inhibition_close_to_knockout(typical, population):
    inh = {a: typical[a]["percent_inhibition"][at(6)] for a in (D200, KO)}
    assert inh[D200] >= 65.0 and abs(inh[D200] - inh[KO]) <= 5.0
    assert inh[D200] == pytest.approx(75.0, abs=0.5) and inh[KO] == pytest.approx(76.0, abs=0.5)
    assert typical[D200]["neutrophils_1e6"][at(6)] == pytest.approx(0.75, abs=0.005)
    obs = population[0]
    drug, ko = obs[D200]["percent_inhibition"][:, at(6)], obs[KO]["percent_inhibition"][:, at(6)]
    assert np.median(drug) >= 65.0 and np.median(np.abs(drug - ko)) <= 5.0
    assert np.mean(np.abs(drug - ko) <= 5.0) >= 0.80  # 84.5% with this seed (module docstring)


def test_anakinra_blocks_the_receptor_and_leaves_il1b_unchanged(typical, population):
    for arm in (D200, *DOSE_ARMS.values()):
        il, il_veh = typical[arm]["lavage_il1b_pg_ml"], typical[VEH]["lavage_il1b_pg_ml"]
        assert np.all(np.abs(il - il_veh) <= 0.01 * il_veh)
        il, il_veh = population[0][arm]["lavage_il1b_pg_ml"], population[0][VEH]["lavage_il1b_pg_ml"]
        assert np.all(np.abs(il - il_veh) <= 0.01 * il_veh)  # every animal, every time
    assert np.all(population[0][D200]["neutrophils_1e6"][:, at(6)] < population[0][VEH]["neutrophils_1e6"][:, at(6)])


def test_dose_response_at_6h(typical, population):
    inh = [typical[DOSE_ARMS[d]]["percent_inhibition"][at(6)] for d in (200.0, 20.0, 2.0, 0.2)]
    assert inh[0] >= inh[1] > inh[2] > inh[3] > 0.0 and 35.0 <= inh[2] <= 60.0
    np.testing.assert_allclose(inh, [75, 69, 48, 22], atol=0.6)
    pop = np.stack([population[0][DOSE_ARMS[d]]["percent_inhibition"][:, at(6)] for d in (200.0, 20.0, 2.0, 0.2)])
    assert np.all((pop[0] >= pop[1]) & (pop[1] > pop[2]) & (pop[2] > pop[3]) & (pop[3] > 0.0))  # every animal
    assert 35.0 <= np.median(pop[2]) <= 60.0


def test_short_duration_of_the_i_p_dose(typical, population):
    n24 = {a: typical[a]["neutrophils_1e6"][at(24)] for a in (VEH, D200, KO)}
    assert typical[D200]["peritoneal_anakinra_mg_l"][at(8)] == pytest.approx(0.005, abs=0.0006)
    assert abs(n24[D200] - n24[VEH]) <= 0.15 * n24[VEH]
    assert n24[D200] == pytest.approx(0.66, abs=0.005) and n24[VEH] == pytest.approx(0.72, abs=0.005)
    assert n24[KO] == pytest.approx(0.12, abs=0.01) and n24[KO] < 0.25 * n24[VEH]
    obs = population[0]
    veh, drug, ko = (obs[a]["neutrophils_1e6"][:, at(24)] for a in (VEH, D200, KO))
    assert np.median(np.abs(drug - veh) / veh) <= 0.15
    assert np.mean(np.abs(drug - veh) <= 0.15 * veh) >= 0.70  # 75.5% with this seed (module docstring)
    assert np.all(ko < 0.5 * veh)  # the knockout stays low in every animal


# --- behaviour: the population of 200 ----------------------------------------------------------


def test_population_paired_inhibition_at_6h(population):
    inh = population[0][D200]["percent_inhibition"][:, at(6)]
    assert np.median(inh) >= 65.0 and np.percentile(inh, 5) >= 55.0


def test_mann_whitney_power_with_5_per_arm(population):
    """Studies of 5 vehicle vs 5 treated mice, 20% residual error on the counts at 6 h."""
    noisy = population[1]
    veh, drug = noisy[VEH]["neutrophils_1e6"][:, at(6)], noisy[D200]["neutrophils_1e6"][:, at(6)]
    rng = np.random.default_rng(2007)
    n_studies, significant = 2000, 0
    for _ in range(n_studies):
        a, b = rng.choice(veh, 5, replace=False), rng.choice(drug, 5, replace=False)
        significant += mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue < 0.05
    assert significant / n_studies >= 0.90


def test_sc_dose_one_hour_before_the_crystals(typical, population):
    # Crystals at t = 1 h in this arm: its 6-h read-out is at 7 h.
    assert typical[SC]["percent_inhibition"][at(7)] >= 65.0
    assert typical[SC]["percent_inhibition"][at(7)] == pytest.approx(75.0, abs=1.0)
    assert np.median(population[0][SC]["percent_inhibition"][:, at(7)]) >= 65.0


# --- the command line ----------------------------------------------------------------------------

runner = CliRunner()


def test_cli_runs_the_config(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(CONFIG), "--out", str(out), "--animals-per-arm", "2", "--seed", "5"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {
        "trajectories.parquet", "observations.parquet", "animals.parquet", "summary.csv", "endpoints.csv", "report.png", "run.json"}
    animals = pd.read_parquet(out / "animals.parquet")
    assert len(animals) == 16 and (animals["status"] == "ok").all()
    ko = animals[animals["arm"] == KO]
    assert (ko["il1r_ko"] == 1.0).all() and (animals[animals["arm"] == PBS]["msu_x0"] == 0.0).all()
    obs = pd.read_parquet(out / "observations.parquet")
    np.testing.assert_allclose(np.sort(obs.loc[obs["neutrophils_1e6"].notna(), "time_h"].unique()), [1, 2, 4, 6, 8, 12, 16, 24])
    ep = pd.read_csv(out / "endpoints.csv")
    assert {"neutrophils_6h", "neutrophil_inhibition_6h_pct", "paired_inhibition_6h", "il1b_peak", "cmax", "paired_inhibition_7h"} <= set(ep["endpoint"])
    row = ep[(ep["arm"] == D200) & (ep["endpoint"] == "paired_inhibition_6h")].iloc[0]
    assert row["unit"] == "%" and row["window_days"] == "0.25" and row["median"] > 50.0
    # Exposure endpoints come from the solver, not the config's 0.25-h grid (issue 23):
    # each arm's mean matches the mean of these very animals' scipy references.
    for arm, names in ((D200, ("cmax", "tmax_h", "auc")), (VEH, ("il1b_peak", "il1b_tmax_h"))):
        mine = animals[animals["arm"] == arm]
        refs = [msu_exposure_reference(p=CARD | {k: float(a[k]) for k in IIV}, bw=float(a["bw"]), ip_mg=0.2 if arm == D200 else 0.0,
                                       x0=float(a["msu_x0"])) for _, a in mine.iterrows()]
        for name in names:
            got = ep[(ep["arm"] == arm) & (ep["endpoint"] == name)].iloc[0]["mean"]
            want = np.mean([r[name] for r in refs])
            if name.endswith("tmax_h"):
                assert abs(got - want) < 1e-4, (arm, name, got, want)
            else:
                assert abs(got - want) < 1e-4 * want, (arm, name, got, want)


@pytest.mark.parametrize("old,new,field", [
    ("parameters = { il1r_ko = 1 }", "parameters = { il1r_ko = 2 }", "arms.3.parameters.il1r_ko"),
    ('route = "ip", amount = 200', 'route = "ipp", amount = 200', "arms.2.doses.0.route"),
    ("[variability.cv_percent]\nkin = 30", "[variability.cv_percent]\nk_in = 30", "variability.cv_percent.k_in"),
])
def test_bad_config_is_rejected_naming_the_field(tmp_path, old, new, field):
    assert_run_refuses_edit(tmp_path, CONFIG, old, new, field)
