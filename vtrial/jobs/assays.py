"""`vtrial run` jobs of the in vitro assays: one per config `kind`.

| kind | schema | outputs besides run.json |
|---|---|---|
| `binding_displacement` | `DisplacementSpec` | wells.parquet, summary.csv, curve_fit.csv, curve_fit.png |
| `functional_neutralisation` | `FunctionalSpec` | wells.parquet, summary.csv, curve_fit.csv, curve_fit.png |
| `pbmc_lps` | `PbmcSpec` | wells.parquet, readouts.csv, summary.csv, curve_fit.csv, curve_fit.png, time_course.png |
| `tslp_neutralisation` | `TslpSpec` | wells.parquet, summary.csv, curve_fit.csv (per stimulus), curve_fit.png |

Every job checks its context before simulating (a `SpecError` leaves nothing written),
honours `--seed` and `--typical` (noise-free, one well per concentration / one typical
donor), reads `--animals-per-arm` as the number of replicate wells per concentration
(donors for PBMC), writes with the atomic writers, and returns the facts for run.json.
"""

from __future__ import annotations

import time

from vtrial.assays.common import compile_timer, config_keys
from vtrial.assays.specs import DisplacementSpec, FunctionalSpec, PbmcSpec
from vtrial.assays.tslp_specs import TslpSpec
from vtrial.errors import SpecError
from vtrial.io.writers import save_figure, write_csv, write_parquet
from vtrial.jobs.context import RunContext


def _check_context(ctx: RunContext, spec, field: str):
    """The spec with the command-line overrides applied (`--animals-per-arm` -> `field`)."""
    if ctx.animals is not None:
        raise SpecError("--animals", "does not apply to in vitro assays (their wells are set by the config)")
    if ctx.animals_per_arm is not None:
        if ctx.animals_per_arm < 1:
            raise SpecError("--animals-per-arm", "must be >= 1")
        spec = spec.model_copy(update={field: int(ctx.animals_per_arm)})
    return spec, (spec.seed if ctx.seed is None else ctx.seed)


def check_displacement(spec: DisplacementSpec, ctx: RunContext) -> dict:
    """What `run_displacement` checks before its first solve."""
    from vtrial.assays.displacement import CONFIG_KEYS, DisplacementDesign, binding_model

    spec, _ = _check_context(ctx, spec, "replicates")
    wells = {**DisplacementDesign.from_spec(spec).wells(spec.grid.concentrations_nm()), "ki": spec.antagonist.ki_nm}
    with config_keys(CONFIG_KEYS):
        binding_model().validate_values(wells, "parameters")
    return {"n_wells": spec.grid.n * (1 if ctx.typical else spec.replicates)}


def check_functional(spec: FunctionalSpec, ctx: RunContext) -> dict:
    """What `run_functional` checks before its first solve."""
    from vtrial.assays.functional import CONFIG_KEYS, functional_model, model_parameters

    spec, _ = _check_context(ctx, spec, "replicates")
    with config_keys(CONFIG_KEYS):
        functional_model().validate_values(model_parameters(spec.parameters, spec.grid.concentrations_nm()), "parameters")
    return {"n_wells": spec.grid.n * (1 if ctx.typical else spec.replicates)}


def check_pbmc(spec: PbmcSpec, ctx: RunContext) -> dict:
    """What `run_pbmc` checks before its first solve."""
    from vtrial.assays.pbmc import donors

    spec, _ = _check_context(ctx, spec, "donors")
    donors(spec, typical=True)  # builds and checks the donor population
    return {"n_donors": 1 if ctx.typical else spec.donors, "n_conditions": len(spec.conditions)}


def _write(ctx: RunContext, files: dict) -> None:
    """Write an assay's outputs into `ctx.out_dir`, on the writing process only: a table per
    `.parquet`/`.csv` name, a figure per `.png` name (given as a function that draws it, so
    processes that write nothing draw nothing)."""
    if not ctx.writer:
        return
    for name, content in sorted(files.items(), key=lambda item: item[0].endswith(".png")):  # numbers, then figures
        path = ctx.out_dir / name
        if name.endswith(".png"):
            save_figure(content, path, skip=not ctx.figures)
        elif name.endswith(".parquet"):
            write_parquet(content, path)
        else:
            write_csv(content, path)


def _facts(seed, n_wells, ctx, timer, t0, **extra) -> dict:
    return {"seed": seed, "n_wells": int(n_wells), "typical": bool(ctx.typical),
            "compile_seconds": round(timer["seconds"], 3), "run_seconds": round(time.perf_counter() - t0, 3), **extra}


def run_displacement(spec: DisplacementSpec, ctx: RunContext) -> dict:
    from vtrial.assays.displacement import fit_displacement, simulate_displacement, summarise_plate

    spec, seed = _check_context(ctx, spec, "replicates")
    t0 = time.perf_counter()
    with compile_timer() as timer:
        plate = simulate_displacement(spec, seed=seed, typical=ctx.typical, progress=ctx.progress)
        w = plate.wells
        fit = fit_displacement(w["concentration_nM"], w["counts_cpm"], plate.design, spec.trust, well_cv=spec.counting.well_cv)
        table = fit.table()
    _write(ctx, {"wells.parquet": w, "summary.csv": summarise_plate(plate), "curve_fit.csv": table,
                 "curve_fit.png": lambda: fit.figure(spec.title)})
    est = dict(zip(table["parameter"], table["estimate"]))
    return _facts(seed, len(w), ctx, timer, t0, ic50_nm=est["ic50"], hill=est["hill"],
                  ki_cheng_prusoff_nm=est["ki_cheng_prusoff"], ki_full_model_nm=est["ki_full_model"],
                  ki_recommended=fit.assumptions.recommended, ki_advice=fit.assumptions.reason,
                  fit_warnings=list(fit.logistic.warnings + fit.full_model.warnings))


def run_functional(spec: FunctionalSpec, ctx: RunContext) -> dict:
    from vtrial.assays.functional import fit_functional, simulate_functional, summarise_functional

    spec, seed = _check_context(ctx, spec, "replicates")
    t0 = time.perf_counter()
    with compile_timer() as timer:
        plate = simulate_functional(spec, seed=seed, typical=ctx.typical, progress=ctx.progress)
        fit = fit_functional(spec, plate)
        table = fit.table()
    _write(ctx, {"wells.parquet": plate.wells, "summary.csv": summarise_functional(plate), "curve_fit.csv": table,
                 "curve_fit.png": lambda: fit.figure(spec.title)})
    return _facts(seed, len(plate.wells), ctx, timer, t0, ic50_nm=fit.ic50_nm, hill=fit.logistic.estimates["hill"],
                  target_ic50_nm=spec.calibration.target_ic50_nm, fit_warnings=list(fit.logistic.warnings))


def run_pbmc(spec: PbmcSpec, ctx: RunContext) -> dict:
    from vtrial.assays.pbmc import fit_pbmc_curve, readouts, simulate_pbmc, summarise_pbmc, time_course_figure

    spec, seed = _check_context(ctx, spec, "donors")
    t0 = time.perf_counter()
    with compile_timer() as timer:
        result = simulate_pbmc(spec, seed=seed, typical=ctx.typical, progress=ctx.progress)
        fit = fit_pbmc_curve(spec, result)
        table = fit.table()
    summary = summarise_pbmc(spec, result)
    _write(ctx, {"wells.parquet": result.wells, "readouts.csv": readouts(spec, result), "summary.csv": summary,
                 "curve_fit.csv": table, "curve_fit.png": lambda: fit.figure(f"{spec.title}: anakinra on {spec.curve.readout}"),
                 "time_course.png": lambda: time_course_figure(spec, result)})
    treated = summary[summary["condition"] == spec.treated]
    reduction = {f"{r.cytokine}_{r.time_h:g}h": round(float(r.median_reduction_percent), 2) for r in treated.itertuples()}
    n_wells = result.wells.groupby(["donor", "condition"]).ngroups + len(result.curve)
    return _facts(seed, n_wells, ctx, timer, t0, n_donors=len(result.donors), median_reduction_percent=reduction,
                  curve_ic50_nm=fit.logistic.estimates["ic50"], fit_warnings=list(fit.logistic.warnings))


def check_tslp(spec: TslpSpec, ctx: RunContext) -> dict:
    """What `run_tslp` checks before its first solve."""
    from vtrial.assays.tslp import donors

    spec, seed = _check_context(ctx, spec, "replicates")
    donors(spec, seed=seed, typical=True)  # builds and checks the donor population
    return {"n_donors": 1 if ctx.typical else spec.donors, "stimuli": [s.name for s in spec.stimuli]}


def run_tslp(spec: TslpSpec, ctx: RunContext) -> dict:
    from vtrial.assays.tslp import fit_tslp, simulate_tslp, summarise_tslp

    spec, seed = _check_context(ctx, spec, "replicates")
    t0 = time.perf_counter()
    with compile_timer() as timer:
        plate = simulate_tslp(spec, seed=seed, typical=ctx.typical, progress=ctx.progress)
        fit = fit_tslp(spec, plate)
        table = fit.table()
    _write(ctx, {"wells.parquet": plate.wells, "summary.csv": summarise_tslp(spec, plate), "curve_fit.csv": table,
                 "curve_fit.png": lambda: fit.figure(spec.title)})
    fitted = [name for name, f in fit.fits.items() if f is not None]
    return _facts(seed, len(plate.wells), ctx, timer, t0, n_donors=len(plate.donors),
                  ic50_ng_per_ml={n: fit.ic50_ng_per_ml(n) for n in fitted},
                  ic50_closed_form_ng_per_ml={n: fit.closed_form_ng_per_ml(n) for n in fitted},
                  fit_warnings=[w for n in fitted for w in fit.fits[n].warnings])
