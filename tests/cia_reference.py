"""Independent numpy/scipy reference implementation of model card CIA-1.

This module is the test oracle for the vtrial CIA-1 model
(model card CIA-1, ``cia_rat.md``).  It deliberately imports neither jax nor
anything from ``vtrial``: the right-hand side below is written directly from the
card's equations so that it can be used to check the engine independently.

Conventions
-----------
* Time is in hours after collagen immunisation (day 0 = t 0 h).
* State order: depot1, depot2, central, peripheral, disease (G), feedback (F),
  transit1, transit2, transit3, paw (E).  Initial state: everything 0 except
  ``paw = paw0``.
* Disease onset is an event: at ``t = t_onset`` the amount ``g0`` is added to G.
* The s.c. osmotic pump delivers ``R = dose_mg_per_kg_per_day / 24 * BW`` mg/h
  into depot1, multiplied by ``f_sc``, on ``[pump_start, pump_start + duration)``.
* ``extra_boluses`` is a sequence of ``(time_h, amount_mg, state_name)``.  The
  amount is added instantaneously to the named state.  For ``depot1`` (the s.c.
  route) the amount is multiplied by ``f_sc`` (bioavailability); for every other
  state (e.g. ``central`` = i.v. bolus) the amount is added unchanged.
* NONMEM convention: a value requested at exactly an event time (onset, pump
  start/stop, bolus) is the value just BEFORE the event is applied.  The
  integration is split at every event time so each discontinuity is hit exactly.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from scipy.integrate import solve_ivp

STATE_NAMES: tuple[str, ...] = (
    "depot1",
    "depot2",
    "central",
    "peripheral",
    "disease",
    "feedback",
    "transit1",
    "transit2",
    "transit3",
    "paw",
)
_IDX = {name: i for i, name in enumerate(STATE_NAMES)}

# Card parameter table (typical values), names exactly as in the card.
CIA_TYPICAL: dict[str, float] = {
    "f_sc": 0.75,
    "ka1": 0.35,
    "ka2": 0.15,
    "cl_ref": 0.095,
    "v1_ref": 0.012,
    "q_ref": 0.020,
    "v2_ref": 0.016,
    "t_onset": 333.6,
    "g0": 0.01,
    "k_grow": 0.057,
    "k_fb": 0.0855,
    "k_f": 0.01,
    "tau_tr": 12.0,
    "s_dis": 1.25,
    "paw0": 1.4,
    "kout": 0.466,
    "imax": 0.28,
    "ic50": 0.5,
}

n_tr = 3
N_TR = n_tr

REFERENCE_BW_KG = 0.2


def scaled_pk(params: dict, bw_kg: float) -> dict[str, float]:
    """Body-weight scaled PK parameters (cl, q, v1, v2) as in the card."""
    r = bw_kg / REFERENCE_BW_KG
    return {
        "cl": params["cl_ref"] * r**0.75,
        "q": params["q_ref"] * r**0.75,
        "v1": params["v1_ref"] * r,
        "v2": params["v2_ref"] * r,
    }


def pump_rate_mg_per_h(dose_mg_per_kg_per_day: float, bw_kg: float) -> float:
    """Pump rate R in mg/h (before f_sc)."""
    return dose_mg_per_kg_per_day / 24.0 * bw_kg


def cia_rhs(t: float, y: np.ndarray, params: dict, pk: dict, rate_in: float) -> np.ndarray:
    """Right-hand side of CIA-1, written plainly from the card.

    ``rate_in`` is the pump rate R(t) in mg/h (f_sc is applied here).
    """
    depot1, depot2, central, peripheral, G, F, tr1, tr2, tr3, E = y
    cl, q, v1, v2 = pk["cl"], pk["q"], pk["v1"], pk["v2"]
    p = params

    C = central / v1
    inh = p["imax"] * C / (p["ic50"] + C)
    k_tr = n_tr / p["tau_tr"]

    d_depot1 = p["f_sc"] * rate_in - p["ka1"] * depot1
    d_depot2 = p["ka1"] * depot1 - p["ka2"] * depot2
    d_central = p["ka2"] * depot2 - (cl + q) / v1 * central + q / v2 * peripheral
    d_peripheral = q / v1 * central - q / v2 * peripheral
    d_G = p["k_grow"] * G * (1.0 - G) - p["k_fb"] * F * G
    d_F = p["k_f"] * (G - F)
    d_tr1 = k_tr * (G - tr1)
    d_tr2 = k_tr * (tr1 - tr2)
    d_tr3 = k_tr * (tr2 - tr3)
    d_E = p["kout"] * p["paw0"] * (1.0 + p["s_dis"] * tr3) * (1.0 - inh) - p["kout"] * E

    return np.array(
        [d_depot1, d_depot2, d_central, d_peripheral, d_G, d_F, d_tr1, d_tr2, d_tr3, d_E]
    )


def simulate_cia_scipy(
    params: dict,
    bw_kg: float,
    pump_start_h: float | None,
    pump_duration_h: float,
    dose_mg_per_kg_per_day: float,
    times_h: np.ndarray,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    extra_boluses: Iterable[tuple[float, float, str]] = (),
    method: str = "Radau",
) -> dict[str, np.ndarray]:
    """Simulate one CIA-1 animal with scipy, piecewise between events.

    Returns a dict with ``conc_mg_per_l``, ``paw_volume_ml``, ``paw_swelling_pct``,
    every state by name (see ``STATE_NAMES``), and ``times_h``.
    """
    p = dict(params)
    times = np.asarray(times_h, dtype=float)
    if times.ndim != 1:
        raise ValueError("times_h must be 1-D")
    if times.size and times.min() < 0.0:
        raise ValueError("times_h must be >= 0 (time after immunisation)")
    pk = scaled_pk(p, bw_kg)

    R = 0.0
    pump_on = pump_start_h is not None and pump_duration_h > 0 and dose_mg_per_kg_per_day != 0
    if pump_on:
        R = pump_rate_mg_per_h(dose_mg_per_kg_per_day, bw_kg)
        pump_stop_h = float(pump_start_h) + float(pump_duration_h)

    def rate_at(t_left: float) -> float:
        """Pump rate on a segment that starts at t_left (right-continuous)."""
        if pump_on and float(pump_start_h) <= t_left < pump_stop_h:
            return R
        return 0.0

    # Jumps: list of (time, state index, amount).
    jumps: list[tuple[float, int, float]] = [(float(p["t_onset"]), _IDX["disease"], float(p["g0"]))]
    for (tb, amt, name) in extra_boluses:
        if name not in _IDX:
            raise ValueError(f"unknown state {name!r}")
        a = float(amt) * (p["f_sc"] if name == "depot1" else 1.0)
        jumps.append((float(tb), _IDX[name], a))

    t_end = float(times.max()) if times.size else 0.0
    breaks = {0.0, t_end}
    for tj, _, _ in jumps:
        if 0.0 <= tj <= t_end:
            breaks.add(tj)
    if pump_on:
        for tb in (float(pump_start_h), pump_stop_h):
            if 0.0 <= tb <= t_end:
                breaks.add(tb)
    breaks = sorted(breaks)

    y = np.zeros(len(STATE_NAMES))
    y[_IDX["paw"]] = p["paw0"]
    out = np.full((times.size, len(STATE_NAMES)), np.nan)

    def apply_jumps(t: float, y: np.ndarray) -> np.ndarray:
        y = y.copy()
        for tj, idx, a in jumps:
            if tj == t:
                y[idx] += a
        return y

    # Values requested at t = 0 are the initial state (before any event at 0).
    out[times == 0.0] = y

    for a, b in zip(breaks[:-1], breaks[1:]):
        y = apply_jumps(a, y)  # events at a act after values at a were recorded
        if b <= a:
            continue
        mask = (times > a) & (times <= b)  # t == b -> value just before events at b
        t_eval = np.unique(np.concatenate([times[mask], [b]]))
        rate = rate_at(a)
        sol = solve_ivp(
            cia_rhs,
            (a, b),
            y,
            method=method,
            t_eval=t_eval,
            args=(p, pk, rate),
            rtol=rtol,
            atol=atol,
        )
        if not sol.success:
            raise RuntimeError(f"solve_ivp failed on [{a}, {b}]: {sol.message}")
        ys = sol.y.T
        if mask.any():
            idx = np.searchsorted(t_eval, times[mask])
            out[mask] = ys[idx]
        y = ys[-1].copy()
    # (events at exactly t_end are not applied: nothing is requested after them)

    res: dict[str, np.ndarray] = {"times_h": times}
    for i, name in enumerate(STATE_NAMES):
        res[name] = out[:, i].copy()
    res["conc_mg_per_l"] = res["central"] / pk["v1"]
    res["paw_volume_ml"] = res["paw"].copy()
    res["paw_swelling_pct"] = 100.0 * (res["paw"] - p["paw0"]) / p["paw0"]
    return res
