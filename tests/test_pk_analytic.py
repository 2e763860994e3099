"""One-compartment PK against closed-form solutions.

References (linear one-compartment, $k = CL/V$):
- i.v. bolus $D$ at $t_i$: $C = \frac{D}{V} e^{-k (t - t_i)}$;
- zero-order infusion of rate $R$ on $(t_s, t_e]$: $C = \frac{R}{CL}(1 - e^{-k(t - t_s)})$
  during, then decaying from $C(t_e)$ after;
- first-order absorption (Bateman): $C = \frac{F D k_a}{V (k_a - k)}
  (e^{-k \tau} - e^{-k_a \tau})$, $\tau = t - t_i - t_{lag}$; depot $A_d = F D e^{-k_a \tau}$;
- repeated doses by superposition.

Every scenario runs on both solve paths (closed-form linear PK, the default, and the
diffrax ODE path) through the same compiled solve per path (4 animals, 8 dose records,
the same output times), so the module compiles twice.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PK_PATHS, solver_options

import vtrial as vt
from vtrial.design.dosing import lower_regimens
from vtrial.engine.runner import simulate_population

KA, F, ALAG, CL, V, BW = 1.3, 0.7, 0.4, 0.5, 2.0, 0.25
K = CL / V
MODEL = vt.models.one_compartment(absorption=True, ka=KA, f=F, alag=ALAG, cl=CL, v=V, bw_kg=BW)
DEPOT, CENTRAL = MODEL.state_index("depot"), MODEL.state_index("central")
N_ANIMALS, N_RECORDS = 4, 8
RTOL, ATOL = 1e-6, 1e-12  # ATOL only for exact zeros (before the first dose)
EPS = 1e-6  # "just after" an event (h)

LAGS = np.array([0.3, 0.77, 1.9, 2.45])  # per-animal lag times of the lag test
GRID = [0.0, 0.25, 0.5, 0.9, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 9.0, 12.0, 15.0, 18.0, 19.5, 24.0, 30.0]
TIMES = np.unique(np.concatenate([GRID, [EPS, 6.0 + EPS, 12.0 + EPS], 1.0 + LAGS, 1.0 + LAGS + EPS]))


@pytest.fixture(scope="module", params=PK_PATHS)
def run(request):
    """`run(regimens, **parameters)`: solve `N_ANIMALS` animals (regimens repeated as
    needed) at `TIMES` on one solve path."""
    options = solver_options(request.param, rtol=1e-10, atol=1e-12)

    def run(regimens, **overrides):
        regimens = (list(regimens) * N_ANIMALS)[:N_ANIMALS]
        params = {k: np.full(N_ANIMALS, v) for k, v in MODEL.typical_values().items()}
        params.update({k: np.broadcast_to(np.asarray(v, float), (N_ANIMALS,)) for k, v in overrides.items()})
        doses = lower_regimens(MODEL, regimens, n_records=N_RECORDS)
        sol = simulate_population(MODEL, params, doses, TIMES, options=options, chunk_size=N_ANIMALS)
        assert np.all(sol.status == 0), sol.status_names
        return sol

    return run


def after(t, t_dose):
    """Time since a dose, and whether the dose has happened (strictly before `t`)."""
    tau = np.asarray(t, float) - t_dose
    return np.where(tau > 0, tau, 0.0), tau > 0


def iv_bolus(t, dose, t_dose):
    tau, on = after(t, t_dose)
    return np.where(on, dose / V * np.exp(-K * tau), 0.0)


def infusion(t, rate, t_start, duration):
    t = np.asarray(t, float)
    t_end = t_start + duration
    during = rate / CL * (1 - np.exp(-K * np.clip(t - t_start, 0, None)))
    at_end = rate / CL * (1 - np.exp(-K * duration))
    return np.where(t <= t_start, 0.0, np.where(t <= t_end, during, at_end * np.exp(-K * (t - t_end))))


def bateman(t, dose, t_dose, f=F, lag=ALAG, ka=KA):
    tau, on = after(t, t_dose + lag)
    return np.where(on, f * dose * ka / (V * (ka - K)) * (np.exp(-K * tau) - np.exp(-ka * tau)), 0.0)


def depot(t, dose, t_dose, f=F, lag=ALAG, ka=KA):
    tau, on = after(t, t_dose + lag)
    return np.where(on, f * dose * np.exp(-ka * tau), 0.0)


def conc(sol):
    return sol.observables["conc_mg_per_l"]


def test_repeated_iv_bolus_superposition(run):
    sol = run([vt.Regimen((vt.Bolus(10.0, route="iv", every_h=6.0, count=3),))])
    expected = sum(iv_bolus(TIMES, 10.0, ti) for ti in (0.0, 6.0, 12.0))
    np.testing.assert_allclose(conc(sol)[0], expected, rtol=RTOL, atol=ATOL)
    # all animals identical (same parameters, same regimen)
    np.testing.assert_array_equal(conc(sol), np.broadcast_to(conc(sol)[0], conc(sol).shape))


@pytest.mark.parametrize("t_dose", [0.0, 6.0, 12.0])
def test_sample_at_bolus_time_is_pre_dose(run, t_dose):
    """NONMEM convention: an observation at a dose time sees the state before the dose."""
    sol = run([vt.Regimen((vt.Bolus(10.0, route="iv", every_h=6.0, count=3),))])
    c = dict(zip(TIMES, conc(sol)[0]))
    earlier = [ti for ti in (0.0, 6.0, 12.0) if ti < t_dose]
    pre = sum((iv_bolus(t_dose, 10.0, ti) for ti in earlier), 0.0)
    post = pre * np.exp(-K * EPS) + 10.0 / V * np.exp(-K * EPS)
    np.testing.assert_allclose(c[t_dose], pre, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(c[t_dose + EPS], post, rtol=RTOL)
    assert c[t_dose + EPS] - c[t_dose] == pytest.approx(10.0 / V, rel=1e-5)


def test_zero_order_infusion_during_and_after(run):
    rate, start, duration = 5.0, 1.0, 3.0
    sol = run([vt.Regimen((vt.Infusion(duration_h=duration, start_h=start, rate=rate, unit="mg/h"),))])
    expected = infusion(TIMES, rate, start, duration)
    np.testing.assert_allclose(conc(sol)[0], expected, rtol=RTOL, atol=ATOL)
    during = (TIMES > start) & (TIMES < start + duration)
    assert during.sum() >= 3 and (TIMES > start + duration).sum() >= 3  # both phases are checked
    # the same infusion given as an amount (mg over the duration) is the same input
    sol2 = run([vt.Regimen((vt.Infusion(duration_h=duration, start_h=start, amount=rate * duration, unit="mg"),))])
    np.testing.assert_allclose(conc(sol2), conc(sol), rtol=1e-12)


def test_repeated_oral_with_bioavailability_and_lag(run):
    dose_times = 0.5 + 6.0 * np.arange(4)
    sol = run([vt.Regimen((vt.Bolus(4.0, time_h=0.5, route="oral", every_h=6.0, count=4),))])
    expected = sum(bateman(TIMES, 4.0, ti) for ti in dose_times)
    np.testing.assert_allclose(conc(sol)[0], expected, rtol=RTOL, atol=ATOL)
    expected_depot = sum(depot(TIMES, 4.0, ti) for ti in dose_times)
    np.testing.assert_allclose(sol.states[0, :, DEPOT], expected_depot, rtol=RTOL, atol=ATOL)
    # nothing reaches the central compartment before the first lagged dose
    assert np.all(conc(sol)[0][TIMES <= 0.5 + ALAG] == 0.0)


def test_mg_per_kg_doses_scale_with_body_weight(run):
    bw = np.array([0.2, 0.3, 0.5, 0.25])
    regimen = vt.Regimen(
        (
            vt.Bolus(2.0, unit="mg/kg", route="iv"),
            vt.Infusion(duration_h=2.0, start_h=1.0, rate=24.0, unit="mg/kg/day"),
        )
    )
    sol = run([regimen], bw=bw)
    for i, w in enumerate(bw):
        expected = iv_bolus(TIMES, 2.0 * w, 0.0) + infusion(TIMES, 1.0 * w, 1.0, 2.0)
        np.testing.assert_allclose(conc(sol)[i], expected, rtol=RTOL, atol=ATOL)
    # concentration per kg of body weight is the same for every animal
    np.testing.assert_allclose(conc(sol) / bw[:, None], np.broadcast_to(conc(sol)[0] / bw[0], conc(sol).shape), rtol=1e-9)


def test_per_animal_lag_lands_exactly(run):
    """Each animal's second dose enters the depot at exactly 1 h + its own lag."""
    regimen = vt.Regimen((vt.Bolus(4.0, time_h=0.0, route="oral"), vt.Bolus(3.0, time_h=1.0, route="oral")))
    sol = run([regimen], alag=LAGS)
    for i, lag in enumerate(LAGS):
        t_land = 1.0 + lag
        i_pre = int(np.flatnonzero(TIMES == t_land)[0])
        i_post = int(np.flatnonzero(TIMES == t_land + EPS)[0])
        pre = sol.states[i, i_pre, DEPOT]
        post = sol.states[i, i_post, DEPOT]
        np.testing.assert_allclose(pre, depot(t_land, 4.0, 0.0, lag=lag), rtol=RTOL)
        np.testing.assert_allclose(post, F * 3.0 + pre * np.exp(-KA * EPS), rtol=RTOL)
        expected = bateman(TIMES, 4.0, 0.0, lag=lag) + bateman(TIMES, 3.0, 1.0, lag=lag)
        np.testing.assert_allclose(conc(sol)[i], expected, rtol=RTOL, atol=ATOL)
