"""The `tslp_neutralisation` job: CAF TSLP across stimuli and an anakinra grid (card CAF-1, 5a).

Outputs besides run.json: `wells.parquet` (one row per well), `summary.csv` (per stimulus
and concentration), `curve_fit.csv` (per stimulus: the 4PL fit, its IC50 against the
closed form, TSLP levels; the contract columns plus `stimulus`) and `curve_fit.png`.
`--typical` simulates the typical donor with one noise-free well per concentration;
`--animals-per-arm` sets the replicate wells, as for the other assays.
"""

from __future__ import annotations

import time

from vtrial.assays.common import compile_timer
from vtrial.assays.tslp_specs import TslpSpec
from vtrial.io.writers import save_figure, write_csv, write_parquet
from vtrial.jobs.assays import _check_context, _facts, _writes
from vtrial.jobs.context import RunContext


def run_tslp(spec: TslpSpec, ctx: RunContext) -> dict:
    from vtrial.assays.tslp import fit_tslp, simulate_tslp, summarise_tslp

    spec, seed = _check_context(ctx, spec, "replicates")
    t0 = time.perf_counter()
    with compile_timer() as timer:
        plate = simulate_tslp(spec, seed=seed, typical=ctx.typical, progress=ctx.progress)
        fit = fit_tslp(spec, plate)
        table = fit.table()
    if _writes(ctx):
        write_parquet(plate.wells, ctx.out_dir / "wells.parquet")
        write_csv(summarise_tslp(spec, plate), ctx.out_dir / "summary.csv")
        write_csv(table, ctx.out_dir / "curve_fit.csv")
        save_figure(fit.figure(spec.title), ctx.out_dir / "curve_fit.png")
    fitted = [name for name, f in fit.fits.items() if f is not None]
    return _facts(seed, len(plate.wells), ctx, timer, t0, n_donors=len(plate.donors),
                  ic50_ng_per_ml={n: fit.ic50_ng_per_ml(n) for n in fitted},
                  ic50_closed_form_ng_per_ml={n: fit.closed_form_ng_per_ml(n) for n in fitted},
                  fit_warnings=[w for n in fitted for w in fit.fits[n].warnings])
