"""How accurate is vtrial on CIA-1: against a tight LSODA solve, the all-ODE path, and in float32?

On the study of configs/cia_rat_liu2011.toml:

- **vs LSODA**: the first `--lsoda-per-arm` animals of every arm integrated by the tests'
  independent scipy reference (tests/cia_reference.py) at rtol 1e-10, atol 1e-12:
  maximum relative difference of paw volume, and of concentration relative to each
  animal's Cmax, for vtrial's default path and the all-ODE path at the config's tolerances;
- **vs the all-ODE path on every animal** of `--animals-per-arm` (a rare bad animal is
  what a sample misses);
- **float32** (`--float32`): the same animals in float32 against float64.
A figure above 1e-5 (the card's bar) is flagged.

    python benchmarks/bench_accuracy.py                  # 1,000 per arm, LSODA on 20 per arm (~5 min, 2-core CPU)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cia_peers import max_rel
from harness import (CIA_CONFIG, base_parser, cia_pumps, cia_reference, device_info, device_slug, load_trial,
                     use_cores_like_vtrial_run, wait_idle, write_result)

BAR = 1e-5


def rel_to_cmax(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = np.nanmax(np.abs(b), axis=1, keepdims=True)
    r = np.abs(a - b) / np.where(scale > 0, scale, np.nan)
    r = r[np.isfinite(r)]
    return float(r.max()) if r.size else float("nan")


def main(argv=None) -> dict:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--animals-per-arm", type=int, default=1000)
    ap.add_argument("--lsoda-per-arm", type=int, default=20)
    ap.add_argument("--float32", action="store_true")
    args = ap.parse_args(argv)
    use_cores_like_vtrial_run()
    import vtrial as vt

    if args.quick:
        args.animals_per_arm, args.lsoda_per_arm = 3, 1
    waited = wait_idle(args.wait_idle)
    cfg, built = load_trial(CIA_CONFIG, args.animals_per_arm)

    def run(options, animals=None):
        res = vt.simulate(built.model, built.arms, built.population, times_h=built.times_h, seed=cfg.seed, animals=animals,
                          options=options, chunk_size=cfg.chunk_size, states=False)
        return res, res.solution.observables

    res, fast = run(built.options)
    animals = res.animals.drop(columns=["arm_index", "status", "n_steps"])
    _, ode = run(dataclasses.replace(built.options, pk="ode"), animals)
    report = {"question": "accuracy against LSODA, the all-ODE path and float64", "config": CIA_CONFIG.name,
              "quick": args.quick, "waited_for_idle_seconds": waited, "n_animals": len(animals),
              "tolerances": {"rtol": built.options.rtol, "atol": built.options.atol},
              "vs_ode_all_animals": {"paw_volume_max_rel": max_rel(fast["paw_volume_ml"], ode["paw_volume_ml"]),
                                     "conc_max_rel_to_cmax": rel_to_cmax(fast["conc_mg_per_l"], ode["conc_mg_per_l"])}}

    ref = cia_reference()
    pumps = cia_pumps(cfg)
    sample = res.animals.groupby("arm_index", sort=True).head(args.lsoda_per_arm)
    rows = sample.index.to_numpy()
    paw, conc = [], []
    for row in sample.itertuples(index=False):
        row = row._asdict()
        start, duration, rate = pumps[row["arm"]]
        out = ref.simulate_cia_scipy({k: float(row[k]) for k in ref.CIA_TYPICAL}, float(row["bw"]), start, duration, rate,
                                     built.times_h, rtol=1e-10, atol=1e-12, method="LSODA")
        paw.append(out["paw_volume_ml"])
        conc.append(out["conc_mg_per_l"])
    paw, conc = np.array(paw), np.array(conc)
    report["vs_lsoda"] = {"n_animals": len(rows), "lsoda_rtol": 1e-10, "lsoda_atol": 1e-12, **{
        f"{name}_{what}": value for name, obs in (("vtrial", fast), ("ode_path", ode)) for what, value in (
            ("paw_volume_max_rel", max_rel(obs["paw_volume_ml"][rows], paw)),
            ("conc_max_rel_to_cmax", rel_to_cmax(obs["conc_mg_per_l"][rows], conc)))}}
    if args.float32:
        _, f32 = run(dataclasses.replace(built.options, dtype="float32", rtol=max(built.options.rtol, 1e-6),
                                         atol=max(built.options.atol, 1e-8)), animals)
        report["float32_vs_float64"] = {"paw_volume_max_rel": max_rel(f32["paw_volume_ml"], fast["paw_volume_ml"]),
                                        "conc_max_rel_to_cmax": rel_to_cmax(f32["conc_mg_per_l"], fast["conc_mg_per_l"])}
    figures = [v for part in ("vs_ode_all_animals", "vs_lsoda") for k, v in report[part].items() if "max_rel" in k]
    report["within_card_bar_1e-5"] = bool(np.all(np.asarray(figures) <= BAR))
    path = write_result(report, args.out, f"accuracy_{device_slug(device_info())}" + ("_quick" if args.quick else ""))
    print(f"paw volume: vs ODE path (every animal) {report['vs_ode_all_animals']['paw_volume_max_rel']:.2e}, "
          f"vs LSODA {report['vs_lsoda']['vtrial_paw_volume_max_rel']:.2e} -> {path}")
    return report


if __name__ == "__main__":
    main()
