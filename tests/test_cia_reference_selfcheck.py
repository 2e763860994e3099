"""Self-checks of the independent scipy oracle for CIA-1 (tests/cia_reference.py)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from scipy.integrate import simpson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cia_reference import (  # noqa: E402
    CIA_TYPICAL,
    STATE_NAMES,
    n_tr,
    pump_rate_mg_per_h,
    scaled_pk,
    simulate_cia_scipy,
)

PK_STATES = ("depot1", "depot2", "central", "peripheral")


def test_parameter_table_matches_card():
    assert n_tr == 3
    expected = {
        "f_sc": 0.75, "ka1": 0.35, "ka2": 0.15, "cl_ref": 0.095, "v1_ref": 0.012,
        "q_ref": 0.020, "v2_ref": 0.016, "t_onset": 333.6, "g0": 0.01,
        "k_grow": 0.057, "k_fb": 0.0855, "k_f": 0.01, "tau_tr": 12.0,
        "s_dis": 1.25, "paw0": 1.4, "kout": 0.466, "imax": 0.28, "ic50": 0.5,
    }
    assert CIA_TYPICAL == expected


def test_body_weight_scaling():
    pk = scaled_pk(CIA_TYPICAL, 0.4)
    assert pk["cl"] == pytest.approx(0.095 * 2**0.75, rel=1e-14)
    assert pk["q"] == pytest.approx(0.020 * 2**0.75, rel=1e-14)
    assert pk["v1"] == pytest.approx(0.024, rel=1e-14)
    assert pk["v2"] == pytest.approx(0.032, rel=1e-14)


@pytest.mark.parametrize("bw", [0.2, 0.27])
@pytest.mark.parametrize("t_end", [70.0, 126.0])
def test_pk_mass_balance(bw, t_end):
    """With F = 1: total(T) - total(0) = int_0^T R dt - cl * int_0^T C dt.

    T = 70 h is during the pump, T = 126 h is 6 h after it stopped (drug still in
    the depots).
    """
    p = dict(CIA_TYPICAL, f_sc=1.0)
    start, dur, dose = 20.0, 100.0, 100.0
    dt = 0.01
    t = np.arange(0.0, t_end + dt / 2, dt)
    r = simulate_cia_scipy(p, bw, start, dur, dose, t)
    pk = scaled_pk(p, bw)
    total = sum(r[s] for s in PK_STATES)
    R = pump_rate_mg_per_h(dose, bw)
    infused = R * (min(t_end, start + dur) - start)
    # integrate cl*C piecewise so that the pump start/stop are grid nodes
    eliminated = 0.0
    for a, b in ((0.0, start), (start, min(start + dur, t_end)), (start + dur, t_end)):
        if b <= a:
            continue
        m = (t >= a - 1e-9) & (t <= b + 1e-9)
        eliminated += pk["cl"] * simpson(r["conc_mg_per_l"][m], x=t[m])
    lhs = total[-1] - total[0]
    rhs = infused - eliminated
    assert total[-1] > 0.01 * infused  # not trivially washed out
    assert lhs == pytest.approx(rhs, rel=1e-7, abs=1e-8 * infused)


def test_steady_state_concentration_during_long_pump():
    p = CIA_TYPICAL
    bw = 0.2
    t = np.array([0.0, 300.0, 600.0, 900.0])
    r = simulate_cia_scipy(p, bw, 0.0, 1000.0, 100.0, t)
    css = p["f_sc"] * pump_rate_mg_per_h(100.0, bw) / scaled_pk(p, bw)["cl"]
    assert css == pytest.approx(6.5789, rel=1e-4)
    assert r["conc_mg_per_l"][-1] == pytest.approx(css, rel=0.01)
    assert r["conc_mg_per_l"][0] == 0.0


def test_disease_exactly_zero_before_onset_and_event_convention():
    p = CIA_TYPICAL
    t_on = p["t_onset"]
    t = np.array([0.0, 100.0, 300.0, t_on - 1e-6, t_on, t_on + 1e-6, t_on + 1.0])
    r = simulate_cia_scipy(p, 0.2, None, 0.0, 0.0, t)
    before = t <= t_on
    # value at exactly t_onset is the value just before the event (NONMEM)
    assert np.all(r["disease"][before] == 0.0)
    assert np.all(r["feedback"][before] == 0.0)
    assert np.all(r["paw"][before] == p["paw0"])
    assert r["disease"][5] == pytest.approx(p["g0"], rel=1e-5)
    assert r["disease"][6] > p["g0"]


def test_no_drug_no_disease_paw_stays_exactly_paw0():
    p = dict(CIA_TYPICAL, imax=0.0, g0=0.0)
    t = np.linspace(0.0, 35 * 24.0, 36)
    r = simulate_cia_scipy(p, 0.2, 504.0, 188.0, 100.0, t)
    assert np.all(r["paw_volume_ml"] == p["paw0"])
    assert np.all(r["paw_swelling_pct"] == 0.0)
    assert r["conc_mg_per_l"].max() > 1.0  # drug is there, it just has no effect


def test_iv_bolus_matches_biexponential():
    """i.v. bolus into central: analytic two-compartment solution."""
    p = CIA_TYPICAL
    bw, dose, tb = 0.25, 1.0, 10.0
    pk = scaled_pk(p, bw)
    k10, k12, k21 = pk["cl"] / pk["v1"], pk["q"] / pk["v1"], pk["q"] / pk["v2"]
    s = k10 + k12 + k21
    alpha = 0.5 * (s + np.sqrt(s * s - 4 * k10 * k21))
    beta = 0.5 * (s - np.sqrt(s * s - 4 * k10 * k21))
    t = np.array([0.0, 5.0, tb, tb + 0.1, tb + 1.0, tb + 5.0, tb + 20.0])
    r = simulate_cia_scipy(p, bw, None, 0.0, 0.0, t, extra_boluses=((tb, dose, "central"),))
    dt = np.clip(t - tb, 0.0, None)
    a_c = dose * ((alpha - k21) * np.exp(-alpha * dt) + (k21 - beta) * np.exp(-beta * dt)) / (alpha - beta)
    a_c[t <= tb] = 0.0  # value at the bolus time is the pre-dose value
    np.testing.assert_allclose(r["central"], a_c, rtol=1e-7, atol=1e-12)


def test_sc_bolus_bioavailability_and_absorption_chain():
    """s.c. bolus into depot1 is scaled by f_sc; depot1/depot2 follow Bateman."""
    p = CIA_TYPICAL
    dose = 2.0
    t = np.array([0.0, 1.0, 3.0, 10.0])
    r = simulate_cia_scipy(p, 0.2, None, 0.0, 0.0, t, extra_boluses=((0.0, dose, "depot1"),))
    ka1, ka2, f = p["ka1"], p["ka2"], p["f_sc"]
    # value at t = 0 is the pre-dose value
    exp_d1 = f * dose * np.exp(-ka1 * t)
    exp_d1[0] = 0.0
    exp_d2 = f * dose * ka1 / (ka1 - ka2) * (np.exp(-ka2 * t) - np.exp(-ka1 * t))
    np.testing.assert_allclose(r["depot1"], exp_d1, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(r["depot2"], exp_d2, rtol=1e-7, atol=1e-12)


def test_output_keys_and_shapes():
    t = np.array([0.0, 24.0, 48.0])
    r = simulate_cia_scipy(CIA_TYPICAL, 0.2, None, 0.0, 0.0, t)
    for k in STATE_NAMES + ("conc_mg_per_l", "paw_volume_ml", "paw_swelling_pct"):
        assert r[k].shape == t.shape
        assert np.all(np.isfinite(r[k]))
