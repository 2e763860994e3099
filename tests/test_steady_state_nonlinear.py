"""Steady state (SS = 1/2) of models that are not linear PK throughout: the periodic state
of the model's ODE (`vtrial.engine.steady_state`).

- A model with Michaelis-Menten elimination: SS = 1 oral boluses with lag and F, SS = 1
  infusions with II < duration, a constant infusion at steady state and SS = 2 on top of
  a running series equal the state after 200 doses simulated by a tight scipy solve
  written here.
- Gradients of SS predictions (wrt Vmax, Km, the lag) in forward and reverse mode against
  central differences, and a second forward derivative against differences of the first.
- The nmtests model (linear) with its linear-PK declaration removed: the new solver on
  the ODE path gives the closed-form steady state and NONMEM's predictions.
All compile the steady-state solve (tens of seconds on 2 cores): `long`.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

from vtrial.engine.solve import SolverOptions, observe_animal, solve_animal
from vtrial.io.nonmem import read_nonmem
from vtrial.models.base import Model, Observable, Parameter, Route, State

sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))
from nmtests_model import nmtests_model  # noqa: E402

from conftest import shared_data, shared_dir  # noqa: E402

pytestmark = pytest.mark.long

TYPICAL = {"ka": 1.0, "v": 10.0, "vmax": 20.0, "km": 2.0, "tlag": 0.5, "f": 0.8}


def mm_model() -> Model:
    """Oral depot (lag, F) into a central volume with Michaelis-Menten elimination."""

    def rhs(t, y, p, rate):
        depot, central = y
        c = central / p["v"]
        return jnp.stack([-p["ka"] * depot + rate[0], p["ka"] * depot - p["vmax"] * c / (p["km"] + c) + rate[1]])

    return Model(
        name="mm_oral",
        states=(State("depot", "mg"), State("central", "mg")),
        parameters=(
            Parameter("ka", TYPICAL["ka"], "1/h"), Parameter("v", TYPICAL["v"], "L", 1e-9),
            Parameter("vmax", TYPICAL["vmax"], "mg/h"), Parameter("km", TYPICAL["km"], "mg/L"),
            Parameter("tlag", TYPICAL["tlag"], "h"), Parameter("f", TYPICAL["f"], "-", 0.0, 1.0),
        ),
        vector_field=rhs,
        observables=(Observable("cp", lambda y, p: y[1] / p["v"], "concentration", "mg/L"),),
        routes=(Route("oral", "depot", "f", "tlag"), Route("iv", "central")),
    )


TAUS = [0.25, 1.0, 3.0, 6.0, 11.9, 20.0]
II = 12.0
# Subject 1: oral 100 mg at steady state (lag, F); 2: 180 mg infused at 12 mg/h (15 h,
# II 12 h < duration; 15 mg/h on average, C = 6 mg/L = 3 Km); 3: a constant infusion of
# 10 mg/h at steady state (C = 2 mg/L), which stops there (as NONMEM); 4: oral 100 mg
# every 12 h from 0 (4 doses), then at 48 h SS = 2 of 180 mg infused over 15 h, every 24 h.
DOSES = {
    1: [(0.0, 100, 0, 1, 1, II)],
    2: [(0.0, 180, 12, 2, 1, II)],
    3: [(0.0, 0, 10, 2, 1, 0.0)],
    4: [(0.0, 100, 0, 1, 0, 0.0), (12.0, 100, 0, 1, 0, 0.0), (24.0, 100, 0, 1, 0, 0.0), (36.0, 100, 0, 1, 0, 0.0),
        (48.0, 180, 12, 2, 2, 24.0)],
}
OBS_FROM = {1: 0.0, 2: 0.0, 3: 0.0, 4: 48.0}


def dataset(path: Path) -> Path:
    rows = ["ID,TIME,AMT,RATE,EVID,CMT,DV,MDV,II,SS"]
    for i, doses in DOSES.items():
        for t, amt, rate, cmt, ss, ii in doses:
            rows.append(f"{i},{t},{amt},{rate},1,{cmt},.,1,{ii},{ss}")
        rows += [f"{i},{OBS_FROM[i] + tau},0,0,0,2,.,0,0,0" for tau in TAUS]
    path.write_text("\n".join(rows) + "\n")
    return path


def scipy_reference(p: dict, subject: int, n_doses: int = 200) -> np.ndarray:
    """CP at the observation times from a tight scipy solve: a steady-state record is
    replaced by `n_doses` doses of its series ending at it (SS = 1: from zero; SS = 2:
    added, by superposition of the series' amounts from zero, as NONMEM adds them)."""

    def rhs(t, y, inputs):
        c = y[1] / p["v"]
        rate = sum(r for (a, b, r) in inputs if a <= t < b)
        return [-p["ka"] * y[0], p["ka"] * y[0] - p["vmax"] * c / (p["km"] + c) + rate]

    def simulate(doses, t_from, t_to, y, times):
        """doses: (time, bolus to depot, (infusion start, end, rate) or None)."""
        marks = sorted({t_from, t_to, *[d[0] for d in doses], *[e for d in doses if d[2] for e in d[2][:2]], *times})
        marks = [m for m in marks if t_from <= m <= t_to]
        out = {}
        for a, b in zip(marks[:-1], marks[1:]):
            for d in doses:
                if d[0] == a:
                    y = y + np.array([d[1], 0.0])
            if a in times:
                out[a] = y[1] / p["v"]
            inputs = [d[2] for d in doses if d[2] and d[2][0] <= a < d[2][1]]
            y = solve_ivp(rhs, (a, b), y, args=(inputs,), method="LSODA", rtol=1e-11, atol=1e-12).y[:, -1]
        if t_to in times:
            out[t_to] = y[1] / p["v"]
        return y, out

    def series(t_record, amt, rate, cmt, ii):
        doses = []
        for k in range(n_doses):
            t = t_record - k * ii
            if cmt == 1:
                doses.append((t + p["tlag"], p["f"] * amt, None))
            else:
                doses.append((t, 0.0, (t, t + amt / rate, rate)))
        return doses

    times = [OBS_FROM[subject] + tau for tau in TAUS]
    if subject == 3:  # the equilibrium under 10 mg/h: vmax C / (km + C) = 10
        c = 10.0 * p["km"] / (p["vmax"] - 10.0)
        return np.array([simulate([], 0.0, max(times), np.array([0.0, c * p["v"]]), times)[1][t] for t in times])
    t_record, amt, rate, cmt, ss, ii = DOSES[subject][-1]
    plain = [(t + p["tlag"], p["f"] * a, None) for t, a, _, _, s, _ in DOSES[subject] if s == 0]
    doses = series(t_record, amt, rate, cmt, ii)
    if ss == 1:
        return np.array([simulate(doses, t_record - n_doses * ii, max(times), np.zeros(2), times)[1][t] for t in times])
    # SS = 2: the series' amounts at the record (from zero) added to the plain doses' state there.
    before = [d for d in doses if d[0] < t_record]
    y_series, _ = simulate(before, t_record - n_doses * ii, t_record, np.zeros(2), [])
    y_plain, _ = simulate(plain, 0.0, t_record, np.zeros(2), [])
    # what acts after the record: its own dose, the series' infusions still running, plain doses
    rest = [d for d in doses if d[0] >= t_record or (d[2] and d[2][1] > t_record)] + [d for d in plain if d[0] >= t_record]
    return np.array([simulate(rest, t_record, max(times), y_series + y_plain, times)[1][t] for t in times])


@pytest.fixture(scope="module")
def mm_data(tmp_path_factory):
    model = mm_model()
    return model, read_nonmem(dataset(tmp_path_factory.mktemp("mm") / "mm.csv"), model, dv_required=False)


def _cp(model, data, options):
    def one(x, doses, times):
        p = {**model.typical_values(), "vmax": x[0], "km": x[1], "tlag": x[2]}
        sol = solve_animal(model, p, doses, times, options=options)
        return observe_animal(model, p, doses, sol.states, times)["cp"], sol.status

    return lambda x: jax.vmap(one, in_axes=(None, 0, 0))(x, jax.tree_util.tree_map(jnp.asarray, data.doses), data.obs_time_h)


X0 = np.array([TYPICAL["vmax"], TYPICAL["km"], TYPICAL["tlag"]])


def test_michaelis_menten_steady_state_equals_200_doses(mm_data):
    model, data = mm_data
    cp, status = jax.jit(_cp(model, data, SolverOptions()))(X0)
    assert np.asarray(status).tolist() == [0] * len(DOSES)
    for s, subject in enumerate(data.ids):
        expected = scipy_reference(TYPICAL, int(subject))
        np.testing.assert_allclose(np.asarray(cp)[s][data.obs_mask[s]], expected, rtol=2e-6, atol=1e-9,
                                   err_msg=f"subject {subject}")


@pytest.mark.parametrize("adjoint", ["forward", "checkpoint"])
def test_gradient_of_a_steady_state_prediction_matches_central_differences(mm_data, adjoint):
    model, data = mm_data
    picks = np.array([0, 1, 3])  # the oral series (lag), the overlapping infusions, SS = 2
    sub = data.take(picks)
    predict = _cp(model, sub, SolverOptions(events="split", adjoint=adjoint))

    def total(x):
        return jnp.sum(jnp.where(jnp.asarray(sub.obs_mask), predict(x)[0], 0.0), axis=1)

    jac = jax.jacfwd if adjoint == "forward" else jax.jacrev
    grad = np.asarray(jax.jit(jac(total))(X0))
    f = jax.jit(total)
    h = 1e-5 * X0
    central = np.stack([(f(X0 + h[i] * np.eye(3)[i]) - f(X0 - h[i] * np.eye(3)[i])) / (2 * h[i]) for i in range(3)], axis=1)
    np.testing.assert_allclose(grad, central, rtol=2e-5, atol=1e-6 * np.max(np.abs(central)))


def test_linear_model_without_its_closed_form_gives_the_closed_form_steady_state():
    """The nmtests model with its linear-PK declaration removed takes the periodic solve
    for every steady-state scenario: equal to the closed form (declared model, ODE path)
    and to NONMEM's predictions."""
    shared_data("data/nmtests")
    data_dir = shared_dir() / "data" / "nmtests"
    declared = nmtests_model()
    plain = dataclasses.replace(declared, linear_pk=None)
    scenarios = pd.read_csv(data_dir / "dosing_1001_scenarios.csv")
    steady = scenarios.ID[scenarios.descr.str.contains("steady|SS=", case=False)].astype(int).tolist()
    data = read_nonmem(data_dir / "dosing_1001_data.csv", plain, dv_required=False)
    sub = data.take(np.array([int(np.flatnonzero(np.asarray(data.ids) == s)[0]) for s in steady]))
    params = {k: np.full(len(steady), v, float) for k, v in declared.typical_values().items()}
    params.update(sub.covariates)

    def predict(model):
        def one(p, doses, times):
            sol = solve_animal(model, p, doses, times, options=SolverOptions(pk="ode"))
            return observe_animal(model, p, doses, sol.states, times)["cp"], sol.status

        cp, status = jax.jit(jax.vmap(one))(params, sub.doses, sub.obs_time_h)
        assert np.asarray(status).tolist() == [0] * len(steady)
        return np.asarray(cp)[sub.obs_mask]

    periodic, closed = predict(plain), predict(declared)
    np.testing.assert_allclose(periodic, closed, rtol=1e-7, atol=1e-6)
    nonmem = pd.read_csv(data_dir / "dosing_1001_nonmem.csv").CP.to_numpy()[sub.obs_row[sub.obs_mask] - 1]
    assert np.all(np.abs(periodic - nonmem) <= 2e-4 * np.abs(nonmem) + 1e-3)
    assert len(steady) >= 14 and not math.isnan(periodic.sum())


def test_second_forward_derivative_matches_differences_of_the_first(mm_data):
    """Nested forward mode (population estimation's) through the steady state: the custom
    JVP's rule differentiates itself again."""
    model, data = mm_data
    sub = data.take(np.array([0]))  # the oral series with lag and F
    predict = _cp(model, sub, SolverOptions(events="split", adjoint="forward"))

    def total(vmax):
        return jnp.sum(jnp.where(jnp.asarray(sub.obs_mask), predict(jnp.stack([vmax, X0[1], X0[2]]))[0], 0.0))

    first = jax.jit(jax.jacfwd(total))
    second = float(jax.jit(jax.jacfwd(jax.jacfwd(total)))(X0[0]))
    h = 1e-4 * X0[0]
    assert second == pytest.approx((float(first(X0[0] + h)) - float(first(X0[0] - h))) / (2 * h), rel=1e-5)
