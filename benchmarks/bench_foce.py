"""Benchmark: the Bolus_2CPT FOCE-I fit, covariance step included, end to end.

The published comparison problem Bolus_2CPT (Schoemaker et al. 2019; 120 subjects, 2,280
concentrations, two-compartment, proportional error), fitted by `vtrial.fit_population`
from NONMEM's initial values, with the sandwich covariance step, on the closed-form PK
path (the default) and on the diffrax ODE path (`SolverOptions(pk="ode")`). Each path is
fitted twice in one process: `first` includes tracing and XLA compilation (or loading
the executables from vtrial's persistent compilation cache, when an earlier process
compiled them: `persistent_compilation_cache`), `compiled` is the fit a user repeats
(another dataset of the same shape, another start). References on their own machines: NONMEM 7 took 71.95 s to
estimate and 28.38 s for the covariance step, nlmixr's FOCEi optimiser 5.9 s; the target
here is a whole fit under 10 s on a 2-core CPU. The same script runs unchanged on a GPU
(the device is recorded). The ODE path runs at vtrial's default tolerance (rtol 1e-8)
and at NONMEM's (`ode_tol6`, rtol 1e-6).

Writes `<out>/foce_<platform>_<device>.json`. Measures, never asserts. The dataset is not
in the repository: it is read from `$VTRIAL_SHARED_DIR/data/bolus_2cpt/` (default
`../shared/` from the repository root; see the README's "Reference datasets").

    python benchmarks/bench_foce.py                 # both paths, two fits each (minutes)
    python benchmarks/bench_foce.py --quick         # 10 subjects, a few iterations: a smoke run
    python benchmarks/bench_foce.py --paths closed  # closed form only
    python benchmarks/bench_foce.py --cia           # only the CIA-1 round trip (below)

`--cia` times instead the CIA-1 population fit of issue 14 (tests/test_cia_fit.py): the
card's reference study with 10 rats per arm (40 rats, 2,000 observations), simulated by
`vtrial run --dataset`, fitted by `vtrial.fit(configs/cia_fit.toml)` (FOCE-I on the ODE
disease model, closed-form PK, covariance step), once in a fresh process (compilation
included unless the persistent cache has it) and once more compiled. Writes
`<out>/foce_cia_<platform>_<device>.json`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from harness import (ROOT, SHARED_DIR, CpuMeter, base_parser, device_info, device_slug, target, use_cores_like_vtrial_run,
                     wait_idle, write_result)

DATA = SHARED_DIR / "data" / "bolus_2cpt" / "bolus_2cpt_nonmem.csv"
NONMEM = {"ofv": 20167.641, "estimation_s": 71.95, "covariance_s": 28.38}
NLMIXR_OPTIMISER_S = 5.9
NONMEM_INITIAL = {"cl": 1.6, "v1": 4.5, "q": 1.6, "v2": 4.0}
NONMEM_ESTIMATES = {"log_cl": 1.37034, "log_v1": 4.19815, "log_q": 1.38003, "log_v2": 3.87657,
                    "omega2_cl": 0.101251, "omega2_v1": 0.0993872, "omega2_q": 0.101303, "omega2_v2": 0.0730498,
                    "conc_mg_per_l.proportional": 0.196446}


def bolus_data(n_subjects: int | None = None):
    """Bolus_2CPT read as `vtrial fit` reads it with configs/bolus_2cpt_fit.toml (AMT ug ->
    mg, DV ug/L: dv_scale 1000), its first `n_subjects` subjects."""
    from vtrial.io.nonmem import read_nonmem
    from vtrial.models import get_model

    mapping = {"amt_unit": "ug", "routes": {"iv": [1]}, "observables": {"conc_mg_per_l": {"unit": "ug/L"}}}
    data = read_nonmem(DATA, get_model("two_compartment"), mapping)
    return data if n_subjects is None else data.take(slice(0, n_subjects))


def one_fit(model, data, solver, max_iterations):
    import vtrial
    from vtrial.design.population import ResidualError
    from vtrial.estimation import EstimationSpec

    spec = EstimationSpec(typical={k: math.exp(v) for k, v in NONMEM_INITIAL.items()}, omega2={k: 0.15 for k in NONMEM_INITIAL},
                          residual={"conc_mg_per_l": ResidualError(proportional=0.3)})
    with CpuMeter() as meter:
        fit = vtrial.fit_population(model, data, spec, solver=solver, max_iterations=max_iterations)
    se = fit.se
    return {
        "wall_s": meter.wall, "interference": meter.interference, "timings_s": fit.timings,
        "ofv": fit.ofv, "ofv_minus_nonmem": fit.ofv - NONMEM["ofv"], "converged": fit.converged,
        "covariance_step": fit.covariance_step, "iterations": fit.iterations, "warnings": fit.warnings,
        "estimates": dict(zip(fit.estimation_names, fit.estimation_values.tolist())),
        "se": se,
        "max_rel_diff_vs_nonmem": max(abs(v / NONMEM_ESTIMATES[k] - 1) for k, v in zip(fit.estimation_names, fit.estimation_values)),
    }


CIA_TRIAL = ROOT / "configs" / "cia_rat_liu2011.toml"
CIA_FIT = ROOT / "configs" / "cia_fit.toml"


def cia_fits(args, waited, cache, suffix="") -> dict:
    """The CIA-1 simulation-estimation round trip (see the module docstring), timed."""
    import tempfile

    import vtrial

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "cia_study.csv"
        vtrial.run_config(CIA_TRIAL, out=Path(tmp) / "run", animals_per_arm=10, dataset_out=study)
        for k in range(args.repeats):
            with CpuMeter() as meter:
                started = time.perf_counter()
                fit = vtrial.fit(CIA_FIT, study, on_iteration=lambda i, ofv: print(
                    f"  iteration {i}: OFV {ofv:.3f} ({time.perf_counter() - started:.0f} s)", flush=True))
            runs.append({"wall_s": meter.wall, "interference": meter.interference, "timings_s": fit.timings,
                         "ofv": fit.ofv, "converged": fit.converged, "covariance_step": fit.covariance_step,
                         "iterations": fit.iterations, "warnings": fit.warnings, "estimates": fit.estimates,
                         "n_subjects": fit.n_subjects, "n_observations": fit.n_observations})
            print(f"cia fit {k + 1}: {meter.wall:.1f} s, OFV {fit.ofv:.3f}, {fit.iterations} iterations, "
                  f"covariance {fit.covariance_step}", flush=True)
    report = {
        "question": "CIA-1 FOCE-I population fit (40 rats, ODE disease model) of a study simulated with vtrial run --dataset",
        "config": "configs/cia_fit.toml", "waited_for_idle_seconds": waited, "persistent_compilation_cache": cache,
        "first": runs[0], "compiled": runs[-1] if len(runs) > 1 else None,
    }
    path = write_result(report, args.out, f"foce_cia_{device_slug(device_info())}{suffix}")
    print(f"-> {path}")
    return report


def main(argv=None) -> dict:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--paths", default="closed,ode,ode_tol6",
                    help="comma-separated: closed (closed-form PK), ode (diffrax, rtol 1e-8), ode_tol6 (rtol 1e-6, as NONMEM's TOL=6)")
    ap.add_argument("--repeats", type=int, default=2, help="fits per path in this process (the first compiles)")
    ap.add_argument("--cia", action="store_true", help="time only the CIA-1 round-trip fit (configs/cia_fit.toml)")
    ap.add_argument("--cpu-devices", type=int, default=None,
                    help="CPU cores exposed as JAX devices (default: all, as `vtrial fit` does; 1: the per-core figure, "
                         "written as <name>_1dev.json)")
    args = ap.parse_args(argv)
    use_cores_like_vtrial_run(args.cpu_devices)  # the subjects are split over them, as in `vtrial fit`
    suffix = "" if args.cpu_devices is None else f"_{args.cpu_devices}dev"
    waited = wait_idle(args.wait_idle)
    import vtrial
    from vtrial.settings import enable_persistent_cache

    cache = enable_persistent_cache()  # as `vtrial run` does: a later process loads the executables
    if args.cia:
        return cia_fits(args, waited, cache, suffix)
    model = vtrial.models.two_compartment()  # one model: the repeats reuse its compiled functions
    data = bolus_data(10 if args.quick else None)
    max_iterations = 4 if args.quick else 200
    paths = {"closed": vtrial.SolverOptions(), "ode": vtrial.SolverOptions(pk="ode"),
             # NONMEM's run used ADVAN13 with TOL=6: the ODE path at a like tolerance.
             "ode_tol6": vtrial.SolverOptions(pk="ode", rtol=1e-6, atol=1e-9)}
    results = {}
    for name in args.paths.split(","):
        runs = []
        for k in range(args.repeats):
            runs.append(one_fit(model, data, paths[name], max_iterations))
            print(f"{name} fit {k + 1}: {runs[-1]['wall_s']:.1f} s, OFV {runs[-1]['ofv']:.3f}, "
                  f"{runs[-1]['iterations']} iterations, covariance {runs[-1]['covariance_step']}", flush=True)
        results[name] = {"first": runs[0], "compiled": runs[-1] if len(runs) > 1 else None}
    best = {k: (v["compiled"] or v["first"])["wall_s"] for k, v in results.items()}
    report = {
        "question": "Bolus_2CPT FOCE-I fit with covariance step, end to end (closed-form PK and ODE)",
        "data": "bolus_2cpt_nonmem.csv" + (" (first 10 subjects, 4 iterations: --quick)" if args.quick else ""),
        "n_subjects": data.n_subjects, "n_observations": data.n_observations,
        "waited_for_idle_seconds": waited, "persistent_compilation_cache": cache,
        "paths": results,
        "references": {"nonmem_estimation_s": NONMEM["estimation_s"], "nonmem_covariance_s": NONMEM["covariance_s"],
                       "nonmem_total_s": NONMEM["estimation_s"] + NONMEM["covariance_s"],
                       "nlmixr_focei_optimiser_s": NLMIXR_OPTIMISER_S, "nonmem_ofv": NONMEM["ofv"]},
        "targets": {f"{k}_compiled_fit_s": target(v, 10.0, "<") for k, v in best.items()},
    }
    path = write_result(report, args.out, f"foce_{device_slug(device_info())}{suffix}" + ("_quick" if args.quick else ""))
    print(f"-> {path}")
    return report


if __name__ == "__main__":
    main()
