"""How does the CIA-1 study's run time grow with the population, and what does the closed form buy?

The study of configs/cia_rat_liu2011.toml (4 arms, 147 output times, Tsit5 at the
config's tolerances), built as `vtrial run` builds it, at each `--animals-per-arm`:

- **vtrial** (default path): the linear PK in closed form, the 6 disease states in one
  diffrax solve per animal with the events as jumps; `vt.simulate` keeping observables
  only, as `vtrial run` does. `compile_seconds` is measured afresh at each size (a new
  chunk shape), `run_seconds` is the best of the repeats, compilation excluded.
- **all-ODE path** (`[solver] pk = "ode"`): every state integrated, one solve per event
  segment, on the same animals (given as `animals=`), up to `--ode-max`.
- per size: ms per animal and per treated animal (3 of 4 arms; the whole study's time is
  charged to the treated ones), solver steps per animal, lockstep waste (the runner's
  accounting), `speedup_vs_ode`, and `interference` (others' CPU use meanwhile).

    python benchmarks/bench_speed.py                                    # 10 .. 10,000 per arm (~10 min, 2-core CPU)
    python benchmarks/bench_speed.py --animals-per-arm 1000 10000 250000 --chunk-size 65536   # on a GPU
"""

from __future__ import annotations

import dataclasses

from harness import (CIA_CONFIG, CpuMeter, base_parser, device_info, device_slug, load_trial, target,
                     use_cores_like_vtrial_run, wait_idle, write_result)


def timed(built, cfg, options, chunk_size, repeats, animals=None):
    import vtrial as vt

    runs, first = [], None
    with CpuMeter() as meter:
        for _ in range(max(1, repeats)):
            res = vt.simulate(built.model, built.arms, built.population, times_h=built.times_h, seed=cfg.seed,
                              animals=animals, options=options, chunk_size=chunk_size, states=False)
            first = first or res
            runs.append(res.solution.run_seconds)
    sol = first.solution
    return first, {"compile_seconds": sol.compile_seconds, "run_seconds": min(runs), "run_seconds_all": runs,
                   "steps_mean": sol.steps_mean, "steps_max": sol.steps_max, "lockstep_waste": sol.lockstep_waste,
                   "n_failed": sol.n_failed, "devices": sol.n_devices, "interference": meter.interference}


def main(argv=None) -> dict:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--animals-per-arm", type=int, nargs="+", default=[10, 100, 1000, 10000])
    ap.add_argument("--chunk-size", type=int, default=None, help="default: the config's")
    ap.add_argument("--ode-max", type=int, default=10000, help="largest size at which the all-ODE path is timed")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = ap.parse_args(argv)
    use_cores_like_vtrial_run()
    import vtrial as vt

    if args.quick:
        args.animals_per_arm, args.repeats = [3], 1  # 12 animals: the shapes other quick runs and tests compile too
    waited = wait_idle(args.wait_idle)
    sizes = []
    for per_arm in sorted(set(args.animals_per_arm)):
        cfg, built = load_trial(CIA_CONFIG, per_arm)
        chunk = args.chunk_size or cfg.chunk_size
        options = dataclasses.replace(built.options, dtype=args.dtype)
        res, fast = timed(built, cfg, options, chunk, args.repeats)
        n = len(res.animals)
        row = {"animals_per_arm": per_arm, "n_animals": n, "n_treated": 3 * per_arm, "chunk_size": chunk, **fast,
               "run_ms_per_animal": 1e3 * fast["run_seconds"] / n,
               "run_ms_per_treated_animal": 1e3 * fast["run_seconds"] / (3 * per_arm)}
        if per_arm <= args.ode_max:
            animals = res.animals.drop(columns=["arm_index", "status", "n_steps"])
            _, ode = timed(built, cfg, vt.SolverOptions(**{**dataclasses.asdict(options), "pk": "ode"}), chunk, 1, animals)
            row["ode"] = {**ode, "run_ms_per_animal": 1e3 * ode["run_seconds"] / n}
            row["speedup_vs_ode"] = ode["run_seconds"] / fast["run_seconds"]
        sizes.append(row)
        print(f"{per_arm:>7}/arm: {row['run_ms_per_treated_animal']:.3f} ms per treated animal, compile "
              f"{fast['compile_seconds']:.1f} s, steps {fast['steps_mean']:.0f}, waste {fast['lockstep_waste']:.2f}"
              + (f", {row['speedup_vs_ode']:.1f}x the all-ODE path" if "ode" in row else "") + f" (busy {fast['interference']})")
    at = {s["animals_per_arm"]: s for s in sizes}
    with_ode = [s for s in sizes if "speedup_vs_ode" in s]
    report = {
        "question": "run time against population size; closed-form PK against the all-ODE path",
        "config": CIA_CONFIG.name, "quick": args.quick, "dtype": args.dtype, "waited_for_idle_seconds": waited, "sizes": sizes,
        "targets": {
            "run_ms_per_treated_animal_at_10000": target(at.get(10000, {}).get("run_ms_per_treated_animal"), 0.3, "<="),
            "speedup_vs_ode_at_largest": target(with_ode[-1]["speedup_vs_ode"] if with_ode else None, 10.0, ">="),
            "run_seconds_1m_animals": target(at.get(250000, {}).get("run_seconds"), 1.0, "<"),
        },
    }
    suffix = ("_quick" if args.quick else "") + ("" if args.dtype == "float64" else "_float32")
    path = write_result(report, args.out, f"speed_{device_slug(device_info())}{suffix}")
    print(f"-> {path}")
    return report


if __name__ == "__main__":
    main()
