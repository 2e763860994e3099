"""Benchmark: R bootstrap replicates fitted together against R fits one after another.

PsN runs a bootstrap as R separate NONMEM runs; `vtrial bootstrap` fits the replicates as
one computation over replicates x subjects (`vtrial.estimation.batched_fit.fit_batch`).
For pheno (59 neonates, ../shared/data/pheno) and Bolus_2CPT (120 subjects,
../shared/data/bolus_2cpt), each from its fit config (tests/models/pheno_fit.toml,
configs/bolus_2cpt_fit.toml), FOCE-I, no covariance step:

- `batched`: the R replicates (`--samples`, default 200) in batches of `--batch` (default
  all), warm-started from the original fit, as `vtrial bootstrap` runs them, timed after
  one small warm-up batch has compiled the batched functions (`compile_s`);
- `one_by_one`: `--sequential` replicates (default 5) fitted alone with
  `vtrial.fit_population` on the resampled dataset (what a loop of separate fits does,
  compiled once), timed and scaled to R (`per_fit_s` x R);
- `ratio`: one_by_one / batched (the point of batching; above 1: batching wins).

Writes `<out>/bootstrap_<platform>_<device>.json`. Measures, never asserts. The datasets are
not in the repository (the README's "Reference datasets").

    python benchmarks/bench_bootstrap.py                    # 200 replicates of each (long on a CPU)
    python benchmarks/bench_bootstrap.py --samples 40       # a reduced size
    python benchmarks/bench_bootstrap.py --quick            # pheno, 4 replicates: a smoke run
"""

from __future__ import annotations

import time

from harness import ROOT, SHARED_DIR, CpuMeter, base_parser, device_info, device_slug, use_cores_like_vtrial_run, wait_idle, write_result

SHARED = SHARED_DIR / "data"
PROBLEMS = {
    "pheno": (ROOT / "tests" / "models" / "pheno_fit.toml", SHARED / "pheno" / "pheno_nonmem.csv"),
    "bolus_2cpt": (ROOT / "configs" / "bolus_2cpt_fit.toml", SHARED / "bolus_2cpt" / "bolus_2cpt_nonmem.csv"),
}


def bench_problem(name: str, samples: int, batch: int, sequential: int, seed: int = 1) -> dict:
    import numpy as np

    from vtrial.estimation import fit_population
    from vtrial.estimation.batched_fit import fit_batch
    from vtrial.jobs.bootstrap import read_fit_inputs, resample_counts

    config, data_file = PROBLEMS[name]
    inputs = read_fit_inputs(config, data_file)
    built, data = inputs.built, inputs.data
    spec = built.estimation_spec()
    options = dict(method=built.method, solver=built.options, max_iterations=built.max_iterations, tolerance=built.tolerance)
    with CpuMeter() as original_meter:
        original = fit_batch(built.model, data, spec, np.ones((1, data.n_subjects)), **options)
    weights = resample_counts(data.n_subjects, range(1, samples + 1), seed)

    def batched(rows):
        r = len(rows)
        return fit_batch(built.model, data, spec, weights[rows], x0=np.repeat(original.x, r, axis=0),
                         eta0=np.repeat(original.eta, r, axis=0), **options)

    batch = min(batch, samples)
    with CpuMeter() as warm:
        batched(np.arange(min(2, samples)) if batch > 2 else np.arange(batch))  # compiles (shapes of small batches)
    converged, iterations = [], []
    with CpuMeter() as meter:
        for first in range(0, samples, batch):
            fit = batched(np.arange(first, min(first + batch, samples)))
            converged += fit.converged.tolist()
            iterations += fit.iterations.tolist()
    singles = []
    for r in range(sequential + 1):  # the first compiles
        take = np.repeat(np.arange(data.n_subjects), weights[r].astype(int))
        with CpuMeter() as single:
            fit = fit_population(built.model, data.take(take), spec, covariance=None, **options)
        singles.append({"wall_s": single.wall, "converged": fit.converged, "iterations": fit.iterations, "ofv": fit.ofv})
    per_fit = float(np.mean([s["wall_s"] for s in singles[1:]])) if sequential else float("nan")
    report = {
        "n_subjects": data.n_subjects, "samples": samples, "batch": batch,
        "original": {"wall_s": original_meter.wall, "ofv": float(original.ofv[0]), "converged": bool(original.converged[0])},
        "batched": {"wall_s": meter.wall, "interference": meter.interference, "compile_s": warm.wall,
                    "converged_share": float(np.mean(converged)), "median_iterations": float(np.median(iterations))},
        "one_by_one": {"fits_timed": sequential, "per_fit_s": per_fit, "first_fit_s": singles[0]["wall_s"],
                       "scaled_to_samples_s": per_fit * samples, "fits": singles},
        "ratio": per_fit * samples / meter.wall if meter.wall > 0 else None,
    }
    print(f"{name}: {samples} replicates batched {meter.wall:.1f} s (+{warm.wall:.1f} s compiling); "
          f"one by one {per_fit:.2f} s each, x{samples} = {per_fit * samples:.1f} s; ratio {report['ratio']:.2f}", flush=True)
    return report


def main(argv=None) -> dict:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200, help="bootstrap replicates per dataset")
    ap.add_argument("--batch", type=int, default=None, help="replicates per batched call (default: all)")
    ap.add_argument("--sequential", type=int, default=5, help="single fits timed for the one-by-one figure")
    ap.add_argument("--problems", default="pheno,bolus_2cpt", help="comma-separated: pheno, bolus_2cpt")
    args = ap.parse_args(argv)
    use_cores_like_vtrial_run(1)  # one device: the replicates are the batch axis
    waited = wait_idle(args.wait_idle)
    from vtrial.settings import enable_persistent_cache

    cache = enable_persistent_cache()
    samples, sequential = (4, 1) if args.quick else (args.samples, args.sequential)
    names = ["pheno"] if args.quick else args.problems.split(",")
    started = time.perf_counter()
    results = {name: bench_problem(name, samples, args.batch or samples, sequential) for name in names}
    report = {
        "question": "wall time of R bootstrap replicates fitted together (vtrial bootstrap) against R separate fits",
        "waited_for_idle_seconds": waited, "persistent_compilation_cache": cache, "problems": results,
        "total_s": time.perf_counter() - started, "quick": bool(args.quick),
    }
    path = write_result(report, args.out, f"bootstrap_{device_slug(device_info())}")
    print(f"-> {path}")
    return report


if __name__ == "__main__":
    main()
