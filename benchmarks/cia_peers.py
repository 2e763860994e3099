"""The peers vtrial is measured against on card CIA-1, on exactly vtrial's animals.

- **numbalsoda** (the fastest CPU peer we know of): LSODA from Fortran, right-hand side
  and the whole loop over animals and event segments compiled with numba, one core.
  Optional: `pip install numba numbalsoda` (it builds with gfortran); absent -> skipped.
- **scipy LSODA**: the independent reference of the tests (tests/cia_reference.py), one
  `solve_ivp` per event segment in a Python loop.

Both integrate all 10 states (no closed form) and split at every event (onset, pump
start and stop), reporting the value just before an event at an event time, as vtrial.
"""

from __future__ import annotations

import numpy as np

from harness import CpuMeter, cia_reference

#: Parameter columns the peers read, in this order (card names).
COLUMNS = ("f_sc", "ka1", "ka2", "cl_ref", "v1_ref", "q_ref", "v2_ref", "t_onset", "g0", "k_grow", "k_fb", "k_f",
           "tau_tr", "s_dis", "paw0", "kout", "imax", "ic50", "bw")


def animal_inputs(table, pumps) -> tuple[np.ndarray, np.ndarray]:
    """(parameters `(n, len(COLUMNS))`, pumps `(n, 3)`: start h (-1: none), duration h, mg/kg/day)."""
    for col, value in (("allo_cl", 0.75), ("allo_v", 1.0)):
        if col in table.columns and not np.allclose(table[col], value):
            raise ValueError(f"the peers fix {col} = {value}; these animals differ")
    params = np.column_stack([table[c].to_numpy(float) for c in COLUMNS])
    pump = np.array([(-1.0 if pumps[a][0] is None else pumps[a][0], pumps[a][1], pumps[a][2]) for a in table["arm"]])
    return params, pump


def numbalsoda_available() -> bool:
    try:
        import numba  # noqa: F401
        import numbalsoda  # noqa: F401
    except ImportError:
        return False
    return True


def _numbalsoda_population():
    import numba as nb
    from numbalsoda import lsoda, lsoda_sig

    @nb.cfunc(lsoda_sig)
    def rhs(t, u, du, p):  # p: f_sc ka1 ka2 cl v1 q v2 k_grow k_fb k_f k_tr s_dis paw0 kout imax ic50 rate
        conc = u[2] / p[4]
        inh = p[14] * conc / (p[15] + conc)
        du[0] = p[0] * p[16] - p[1] * u[0]
        du[1] = p[1] * u[0] - p[2] * u[1]
        du[2] = p[2] * u[1] - (p[3] + p[5]) / p[4] * u[2] + p[5] / p[6] * u[3]
        du[3] = p[5] / p[4] * u[2] - p[5] / p[6] * u[3]
        du[4] = p[7] * u[4] * (1.0 - u[4]) - p[8] * u[5] * u[4]
        du[5] = p[9] * (u[4] - u[5])
        du[6] = p[10] * (u[4] - u[6])
        du[7] = p[10] * (u[6] - u[7])
        du[8] = p[10] * (u[7] - u[8])
        du[9] = p[13] * p[12] * (1.0 + p[11] * u[8]) * (1.0 - inh) - p[13] * u[9]

    address = rhs.address

    @nb.njit
    def population(params, pumps, times, rtol, atol):
        n, n_t = params.shape[0], times.shape[0]
        paw = np.empty((n, n_t))
        for i in range(n):
            a = params[i]
            w = a[18] / 0.2
            p = np.array([a[0], a[1], a[2], a[3] * w**0.75, a[4] * w, a[5] * w**0.75, a[6] * w, a[9], a[10], a[11],
                          3.0 / a[12], a[13], a[14], a[15], a[16], a[17], 0.0])
            rate = pumps[i, 2] / 24.0 * a[18]
            events = [a[7], times[-1] + 1.0, times[-1] + 1.0]
            if pumps[i, 0] >= 0:
                events[1], events[2] = pumps[i, 0], pumps[i, 0] + pumps[i, 1]
            u = np.zeros(10)
            u[9] = a[14]
            t0, k = 0.0, 0
            while k < n_t and times[k] <= t0:
                paw[i, k] = u[9]
                k += 1
            for _ in range(4):  # segments between events, in time order
                t1 = times[-1]
                for e in events:
                    if t0 < e < t1:
                        t1 = e
                j = k
                while j < n_t and times[j] <= t1:
                    j += 1
                ts = np.empty(j - k + 2)
                ts[0] = t0
                ts[1:j - k + 1] = times[k:j]
                ts[-1] = t1
                if t1 > t0:
                    sol, ok = lsoda(address, u, ts, data=p, rtol=rtol, atol=atol)
                    paw[i, k:j] = sol[1:j - k + 1, 9]
                    u = sol[-1].copy()
                k = j
                if t1 >= times[-1]:
                    break
                if t1 == events[0]:
                    u[4] += a[8]
                if t1 == events[1]:
                    p[16] = rate
                if t1 == events[2]:
                    p[16] = 0.0
                t0 = t1
        return paw

    return population


def time_numbalsoda(params, pumps, times, rtol: float, atol: float) -> tuple[np.ndarray, dict]:
    """Paw volume `(n, n_times)` of every animal and the timing (compilation excluded)."""
    population = _numbalsoda_population()
    population(params[:1], pumps[:1], times, rtol, atol)  # compile
    with CpuMeter() as meter:
        paw = population(params, pumps, times, rtol, atol)
    n = params.shape[0]
    return paw, {"n_animals": n, "rtol": rtol, "atol": atol, "seconds": meter.wall, "ms_per_animal": 1e3 * meter.wall / n,
                 "interference": meter.interference}


def time_scipy_lsoda(table, pumps, times, rtol: float, atol: float) -> tuple[np.ndarray, dict]:
    """The tests' scipy reference (LSODA) over `table`'s animals: paw volume and timing."""
    ref = cia_reference()
    names = list(ref.CIA_TYPICAL)
    paw = []
    with CpuMeter() as meter:
        for row in table.itertuples(index=False):
            row = row._asdict()
            start, duration, rate = pumps[row["arm"]]
            out = ref.simulate_cia_scipy({k: float(row[k]) for k in names}, float(row["bw"]), start, duration, rate, times,
                                         rtol=rtol, atol=atol, method="LSODA")
            paw.append(out["paw_volume_ml"])
    n = len(paw)
    return np.array(paw), {"n_animals": n, "rtol": rtol, "atol": atol, "seconds": meter.wall,
                           "ms_per_animal": 1e3 * meter.wall / n, "interference": meter.interference}


def max_rel(a, b) -> float:
    """max |a - b| / |b| over finite cells."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(np.asarray(a, float) - np.asarray(b, float)) / np.abs(np.asarray(b, float))
    r = r[np.isfinite(r)]
    return float(r.max()) if r.size else float("nan")
