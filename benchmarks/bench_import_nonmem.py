"""Does a model imported from a NONMEM control stream run as fast as the same model written by hand?

pharmpy's example `pheno` (ADVAN1 TRANS2) is imported with `vtrial import-nonmem` and its
FOCE-I objective with its exact gradient (what every step of a fit evaluates: the EBEs
re-optimised, all 59 subjects) is timed at the control stream's initial values, against
the hand-written `tests/models/pheno.py` with `tests/models/pheno_fit.toml` on the same
data (`data/pheno/pheno_nonmem.csv` under `$VTRIAL_SHARED_DIR`, default `../shared`). The
first call of each is the compile (and the OFVs must agree: the same model); then the best
of `--repeats` calls each, alternately.

    python benchmarks/bench_import_nonmem.py [--quick] [--repeats N]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT, SHARED_DIR, base_parser, device_info, device_slug, target, wait_idle, write_result

sys.path.insert(0, str(ROOT))


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main(argv=None) -> dict:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    waited = wait_idle(args.wait_idle)

    import pharmpy

    from vtrial.estimation import population_objective
    from vtrial.io.nonmem import read_nonmem
    from vtrial.jobs.import_nonmem import import_nonmem, load_config

    example = Path(pharmpy.__file__).parent / "internals" / "example_models" / "pheno.mod"
    with tempfile.TemporaryDirectory(prefix="vtrial-bench-") as tmp:
        _, _, config_path = import_nonmem(example, Path(tmp))
        imported = load_config(config_path)
        imported_data = read_nonmem(imported.cfg.data_file(), imported.model, imported.cfg.data)
    hand = load_config(ROOT / "tests" / "models" / "pheno_fit.toml")
    hand_data = read_nonmem(SHARED_DIR / "data" / "pheno" / "pheno_nonmem.csv", hand.model, hand.cfg.data)
    cases = {"hand_written": (hand, hand_data), "imported": (imported, imported_data)}

    def evaluate(label):
        built, data = cases[label]
        return population_objective(built.model, data, built.estimation_spec(), method=built.method, solver=built.options)

    first, ofv, best = {}, {}, {label: float("inf") for label in cases}
    for label in cases:
        value, first[label] = _timed(lambda: evaluate(label))
        ofv[label] = value.ofv
    for _ in range(repeats):
        for label in cases:
            _, seconds = _timed(lambda: evaluate(label))
            best[label] = min(best[label], seconds)
    ratio = best["imported"] / best["hand_written"]
    report = {"question": "an imported NONMEM model runs as fast as the same model written by hand",
              "command": "population_objective (FOCE-I, gradient, 59 subjects) of pharmpy's pheno imported vs tests/models/pheno.py",
              "waited_for_idle_seconds": waited, "first_call_seconds": first, "best_seconds": best, "ofv": ofv,
              "imported_over_hand_written": ratio,
              "targets": {"run_ratio": target(ratio, 1.2, "<"),
                          "same_ofv": target(abs(ofv["imported"] - ofv["hand_written"]), 1e-6, "<")}}
    path = write_result(report, args.out, f"import_nonmem_{device_slug(device_info())}" + ("_quick" if args.quick else ""))
    for label in cases:
        print(f"{label:13s} first call {first[label]:.2f} s, best {best[label] * 1e3:.1f} ms, OFV {ofv[label]:.6f}")
    print(f"imported / hand-written: {ratio:.2f} -> {path}")
    return report


if __name__ == "__main__":
    main()
