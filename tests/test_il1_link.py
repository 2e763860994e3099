"""The shared pieces of the mouse cards (il1_link_and_mouse_pk.md): the IL-1RI occupancy ->
signalling link (§0.1) and the mouse PK module MPK-1 (§0.2).

The link is checked against its definition written out here (rho, E, E(c)/E(0)) and its
closed-form IC50 against a numerical root. MPK-1 is checked against a scipy solve of
the card's equations written separately below (not the model's right-hand side), and
against the numbers the card states for a 25-g mouse given 10 mg/kg.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

import vtrial as vt
from vtrial.models import il1_link
from vtrial.models.mouse_pk import mouse_pk

# --- the link (§0.1) --------------------------------------------------------------------


def _signal(c, l, tau):
    rho = l / (1.0 + l + c)
    return tau * rho / (1.0 + tau * rho)


@pytest.mark.parametrize("l", [0.05, 0.4, 1.0, 7.0, 40.0])
@pytest.mark.parametrize("tau", [0.5, 3.0, 10.0, 30.0])
def test_closed_form_ic50_is_the_root_of_half_signalling(l, tau):
    k_i = 0.21
    # f_sig = 1/2, solved for the concentration (nM) with E(c)/E(0) from the definitions.
    root = brentq(lambda conc: _signal(conc / k_i, l, tau) / _signal(0.0, l, tau) - 0.5, 0.0, 1e7, xtol=1e-13, rtol=1e-14)
    assert float(il1_link.il1_ic50(k_i, l, tau)) == pytest.approx(root, rel=1e-10)
    rho0 = l / (1.0 + l)
    assert root == pytest.approx(k_i * (1.0 + l) * (1.0 + tau * rho0), rel=1e-10)


def test_ic50_moves_right_with_il1_and_receptor_reserve():
    ic50 = lambda l, tau: float(il1_link.il1_ic50(0.21, l, tau))
    assert ic50(0.0, 10.0) == pytest.approx(0.21)
    assert ic50(1.0, 10.0) > ic50(0.1, 10.0) > ic50(0.0, 10.0)
    assert ic50(1.0, 30.0) > ic50(1.0, 3.0)


def test_signalling_fraction_is_the_ratio_of_signals():
    rng = np.random.default_rng(0)
    c, l, tau = rng.uniform(0, 50, 200), rng.uniform(1e-3, 20, 200), rng.uniform(0.1, 30, 200)
    got = np.asarray(il1_link.signalling_fraction(c, l, tau))
    np.testing.assert_allclose(got, _signal(c, l, tau) / _signal(0.0, l, tau), rtol=1e-12)
    np.testing.assert_allclose(il1_link.il1_signal(c, l, tau), _signal(c, l, tau), rtol=1e-12)
    assert float(il1_link.signalling_fraction(0.0, 2.0, 10.0)) == 1.0
    # At zero IL-1 the ratio is 0/0; the closed form gives its limit as l -> 0.
    assert float(il1_link.signalling_fraction(3.0, 0.0, 10.0)) == pytest.approx(0.25)
    small = _signal(3.0, 1e-9, 10.0) / _signal(0.0, 1e-9, 10.0)
    assert small == pytest.approx(0.25, rel=1e-7)


def test_occupancies_partition_the_receptor_and_knockout():
    c, l = np.array([0.0, 1.0, 30.0]), np.array([0.5, 2.0, 0.1])
    free = 1.0 / (1.0 + l + c)
    np.testing.assert_allclose(il1_link.il1_occupancy(c, l) + il1_link.anakinra_occupancy(c, l) + free, 1.0, rtol=1e-14)
    assert float(il1_link.knockout(0.7, 1.0)) == 0.0 and float(il1_link.knockout(0.7, 0.0)) == 0.7
    assert float(il1_link.il1_dependent(0.2, 0.0)) == pytest.approx(0.8)  # knockout keeps 1 - f_X
    assert float(il1_link.il1_dependent(0.2, 1.0)) == 1.0


def test_unit_conversions_and_card_constants():
    assert il1_link.NM_PER_MG_PER_L == pytest.approx(57.8, rel=1e-3)  # card: 1 mg/L = 57.8 nM
    assert float(il1_link.antagonist_ratio(1.0, 0.21)) == pytest.approx(57.803 / 0.21, rel=1e-4)
    params = {p.name: p for p in il1_link.link_parameters(10.0)}
    assert params["k_i"].value == 0.21 and params["k_l"].value == 0.26 and params["tau"].value == 10.0
    assert params["il1r_ko"].value == 0.0 and params["il1r_ko"].upper == 1.0


# --- MPK-1 (§0.2) -------------------------------------------------------------------------

BW = 0.025  # kg
DOSE_MG = 10.0 * BW  # 10 mg/kg
CARD = {"cl_ref": 0.020, "v1_ref": 0.0015, "q_ref": 0.0042, "v2_ref": 0.0020, "ke0": 0.1}
ABSORB = {"iv": (None, 1.0), "ip": (1.5, 0.9), "sc": (0.7, 0.75)}  # ka 1/h, F
TIMES = np.concatenate([np.arange(0.0, 1.0, 0.001), np.arange(1.0, 24.0 + 1e-9, 0.01)])


def mpk1_scipy(route: str, times, bw=BW, dose_mg=DOSE_MG, ke0=CARD["ke0"]):
    """The card's MPK-1 equations with the biophase, one bolus at t = 0 (LSODA, tight)."""
    ka, f = ABSORB[route]
    w = bw / 0.025
    cl, q = CARD["cl_ref"] * w**0.75, CARD["q_ref"] * w**0.75
    v1, v2 = CARD["v1_ref"] * w, CARD["v2_ref"] * w

    def rhs(t, y):
        a_dep, a_c, a_p, c_e = y
        c_p = a_c / v1
        absorbed = (ka or 0.0) * a_dep
        return [-absorbed, absorbed - cl * c_p - q * (c_p - a_p / v2), q * (c_p - a_p / v2), ke0 * (c_p - c_e)]

    y0 = [f * dose_mg, 0.0, 0.0, 0.0] if ka else [0.0, dose_mg, 0.0, 0.0]
    sol = solve_ivp(rhs, (0.0, times[-1]), y0, t_eval=times, method="LSODA", rtol=1e-11, atol=1e-14)
    return sol.y[1] / v1, sol.y[3]


@pytest.fixture(scope="module")
def mpk1():
    """MPK-1 with its biophase, 10 mg/kg by each route (one compile per depot route)."""
    out = {}
    for absorption in ("ip", "sc"):
        model = mouse_pk(absorption, effect_site=True)
        routes = ("iv", absorption) if absorption == "ip" else (absorption,)
        arms = [vt.Arm(r, vt.Regimen((vt.Bolus(10.0, unit="mg/kg", route=r),)), 1) for r in routes]
        res = vt.simulate(model, arms, times_h=TIMES, typical=True)
        for i, r in enumerate(routes):
            out[r] = {k: v[i] for k, v in res.solution.observables.items()}
    # An output at t = 0 is the value before the dose at 0 (NONMEM convention).
    out["iv"]["plasma_anakinra_mg_l"][0] = DOSE_MG / CARD["v1_ref"]
    return out


@pytest.mark.parametrize("route", ["iv", "ip", "sc"])
def test_mpk1_against_scipy(mpk1, route):
    c_p, c_e = mpk1_scipy(route, TIMES)
    got = mpk1[route]
    np.testing.assert_allclose(got["plasma_anakinra_mg_l"], c_p, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got["effect_site_anakinra_mg_l"], c_e, rtol=1e-5, atol=1e-9)


def _time_above(c, level):
    above = np.flatnonzero(c > level)
    return TIMES[above[-1]]


def _terminal_half_life(c, t_lo, t_hi):
    i, j = np.searchsorted(TIMES, [t_lo, t_hi])
    return np.log(2.0) * (TIMES[j] - TIMES[i]) / np.log(c[i] / c[j])


def test_mpk1_card_numbers(mpk1):
    """Card §0.2, 25-g mouse, 10 mg/kg: i.v. t1/2 0.41 h, AUC 12.5 mg.h/L; i.p. Cmax 11 mg/L at
    0.17 h, apparent t1/2 0.5 h; s.c. Cmax 4.9 mg/L at 0.23 h, t1/2 1.0 h; above 10 K_I
    (0.036 mg/L) for 2.9, 4.5 and 7.7 h."""
    iv, ip, sc = (mpk1[r]["plasma_anakinra_mg_l"] for r in ("iv", "ip", "sc"))
    assert _terminal_half_life(iv, 6.0, 12.0) == pytest.approx(0.41, abs=0.005)
    assert np.trapezoid(iv, TIMES) == pytest.approx(12.5, rel=2e-3)  # 0-24 h; the tail is < 1e-6
    assert ip.max() == pytest.approx(11.0, abs=0.25) and TIMES[ip.argmax()] == pytest.approx(0.17, abs=0.006)
    assert sc.max() == pytest.approx(4.9, abs=0.05) and TIMES[sc.argmax()] == pytest.approx(0.23, abs=0.006)
    assert _terminal_half_life(ip, 4.0, 8.0) == pytest.approx(0.5, abs=0.05)
    assert _terminal_half_life(sc, 4.0, 8.0) == pytest.approx(1.0, abs=0.05)
    level = 10.0 * 0.21 / il1_link.NM_PER_MG_PER_L
    assert level == pytest.approx(0.036, abs=5e-4)
    for c, hours in ((iv, 2.9), (ip, 4.5), (sc, 7.7)):
        assert _time_above(c, level) == pytest.approx(hours, abs=0.06)


def test_mpk1_allometry_recovers_the_rat():
    """Scaled back to CIA-1's 0.2-kg rat, MPK-1's clearances and volumes are CIA-1's."""
    from vtrial.models.mouse_pk import disposition

    p = {**{k: v for k, v in CARD.items()}, "bw": 0.2}
    d = disposition(p)
    assert float(d.cl) == pytest.approx(0.095, rel=0.01) and float(d.q) == pytest.approx(0.020, rel=0.01)
    assert float(d.v1) == pytest.approx(0.012) and float(d.v2) == pytest.approx(0.016)


def test_mpk1_closed_form_matches_the_ode_path():
    model = mouse_pk("ip", effect_site=True)
    regimen = vt.Regimen((vt.Bolus(1.0, unit="mg/kg", route="ip", every_h=24.0, count=3),))
    times = np.linspace(0.0, 72.0, 145)
    runs = [vt.simulate(model, regimen, times_h=times, typical=True, options=vt.SolverOptions(pk=pk, rtol=1e-10, atol=1e-13))
            for pk in ("auto", "ode")]
    for name in ("plasma_anakinra_mg_l", "effect_site_anakinra_mg_l"):
        a, b = (r.solution.observables[name][0] for r in runs)
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9 * a.max())  # the ODE path: ~2e-10 mg/L near zero
