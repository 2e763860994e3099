"""The `vtrial` command line: parse, call the library, print. Nothing else lives here.

Exit status: 0 on success, 2 on bad input (config, data file, option), with one message
naming the field, file, row or column and no output folder left behind; 3 when `vtrial
fit` did not converge or its covariance step failed (its output folder is written and
says so); 4 when `vtrial optimize` finds no regimen meeting the target (its output folder
is written); 5 when a check of `vtrial model` fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vtrial.errors import DataError, SpecError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="vtrial: virtual trials for preclinical pharmacology.")
err_console = Console(stderr=True)
console = Console()
BAD_INPUT = 2


@app.callback()
def _root():
    """vtrial: virtual trials for preclinical pharmacology (run `vtrial COMMAND --help`)."""
    from vtrial.settings import enable_persistent_cache, use_all_cpu_cores

    use_all_cpu_cores()
    enable_persistent_cache()


def fail(message: str, code: int = BAD_INPUT):
    """Print `error: <message>` on stderr and exit with `code`; the message is printed
    literally (its `[data.routes]`-style key names are text, not rich markup)."""
    # soft_wrap: a long path or key is never broken across lines (it stays copyable and greppable).
    err_console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """Print `warning: <message>` on stderr, the message literally."""
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def say(text: str, *, done: str | None = None, to=None) -> None:
    """Print a line of user text literally (paths, keys and values may hold brackets), after
    a green `done` label when given."""
    (to or console).print((f"[green]{done}[/] " if done else "") + escape(str(text)), highlight=False)


def _progress_bar(description: str, enabled: bool = True) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True, disable=not (enabled and err_console.is_terminal),
    )


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="TOML config file (see configs/)")],
    out: Annotated[Optional[Path], typer.Option("--out", help="output folder (default runs/<config>-<timestamp>)")] = None,
    animals_per_arm: Annotated[Optional[int], typer.Option("--animals-per-arm", help="animals in every arm (overrides the config)")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="random seed (overrides the config)")] = None,
    typical: Annotated[bool, typer.Option("--typical", help="typical animal per arm / noise-free wells only")] = False,
    animals: Annotated[Optional[Path], typer.Option("--animals", help="CSV/Parquet of exactly the animals to simulate")] = None,
    chunk_size: Annotated[Optional[int], typer.Option("--chunk-size", help="animals per compiled batch, over all devices (overrides the config)")] = None,
    trajectories: Annotated[Optional[bool], typer.Option("--trajectories/--no-trajectories", help="write trajectories.parquet and observations.parquet (default: only when animals x times <= 10 million)", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted run of the same --out from its finished chunks")] = False,
    coordinator: Annotated[Optional[str], typer.Option("--coordinator", help="HOST:PORT of process 0 for a multi-process run ('auto': detect SLURM/MPI)")] = None,
    num_processes: Annotated[Optional[int], typer.Option("--num-processes", help="processes in a multi-process run")] = None,
    process_id: Annotated[Optional[int], typer.Option("--process-id", help="this process's number, 0 .. N-1 (0 writes the outputs)")] = None,
    dataset: Annotated[Optional[Path], typer.Option("--dataset", help="also write the simulated study as a NONMEM-style CSV dataset (trial configs; vtrial fit reads it)")] = None,
    no_figures: Annotated[bool, typer.Option("--no-figures", help="write no figures (faster; every number the same)")] = False,
):
    """Run the job a config describes and write its outputs into one folder."""
    import sys

    from vtrial.io.run_folder import partial_folder
    from vtrial.jobs import run_config

    with _progress_bar(f"run: {config.stem}", enabled=process_id in (None, 0)) as bar:
        task = bar.add_task(f"run: {config.stem}", total=None)
        try:
            record = run_config(
                config, out=out, seed=seed, animals_per_arm=animals_per_arm, typical=typical, animals=animals,
                chunk_size=chunk_size, trajectories=trajectories, resume=resume,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                coordinator=coordinator, num_processes=num_processes, process_id=process_id, command=" ".join(sys.argv),
                dataset_out=dataset, figures=not no_figures,
            )
        except (SpecError, DataError) as e:
            fail(str(e))
        except KeyboardInterrupt:
            if out is not None and (partial_folder(out) / "chunks").is_dir():
                say(f"interrupted: finished chunks kept in {partial_folder(out)}; "
                    "run the same command with --resume to continue", to=err_console)
            raise
    if record.out_dir is None:
        say(f"process {process_id}: done", to=err_console)
        return
    if record.resumed_chunks:
        say(f"resumed {record.resumed_chunks} finished chunks", to=err_console)
    say(f"{record.kind} -> {record.out_dir}", done="done")
    for k in ("n_animals", "n_failed", "compile_seconds", "run_seconds", "chunks_resumed", "lockstep_waste"):
        if k in record.facts:
            say(f"  {k}: {record.facts[k]}")
    if record.facts.get("trajectories") is False:
        say("  trajectories/observations not written (large population; --trajectories writes them)")
    if record.facts.get("dataset"):
        console.print(f"  dataset written to {Path(record.facts['dataset']).resolve()}", highlight=False, markup=False)
    _print_assay_results(record.facts)
    _print_warnings(record.facts)


#: An assay run's results worth reading on the terminal (all are in run.json and curve_fit.csv).
ASSAY_RESULTS = ("ic50_nm", "hill", "ki_cheng_prusoff_nm", "ki_full_model_nm", "ki_recommended", "target_ic50_nm",
                 "curve_ic50_nm", "ic50_ng_per_ml", "ic50_closed_form_ng_per_ml", "median_reduction_percent")


def _print_assay_results(facts: dict) -> None:
    def show(key, v):
        if isinstance(v, float) and key.endswith("_nm"):
            return f"{v:.4g} nM ({v * 1e3:.4g} pM)"
        if isinstance(v, dict):
            return ", ".join(f"{k} {show(key, x)}" for k, x in v.items())
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    for k in ASSAY_RESULTS:
        if facts.get(k) is not None:
            console.print(f"  {k}: {show(k, facts[k])}", highlight=False, markup=False)
    if facts.get("ki_advice"):
        console.print(f"  ki_advice: {facts['ki_advice']}", highlight=False, markup=False)
    for w in facts.get("fit_warnings") or []:
        warn(w)


def _print_warnings(facts: dict) -> None:
    """What a run survived and recorded in run.json (a figure not drawn, endpoints not finite)."""
    for w in facts.get("warnings") or []:
        warn(w)


@app.command()
def check(
    config: Annotated[Path, typer.Argument(help="TOML config file (see configs/)")],
    animals_per_arm: Annotated[Optional[int], typer.Option("--animals-per-arm", help="animals in every arm (overrides the config)")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="random seed (overrides the config)")] = None,
    typical: Annotated[bool, typer.Option("--typical", help="typical animal per arm / noise-free wells only")] = False,
    animals: Annotated[Optional[Path], typer.Option("--animals", help="CSV/Parquet of exactly the animals to simulate")] = None,
    chunk_size: Annotated[Optional[int], typer.Option("--chunk-size", help="animals per compiled batch (overrides the config)")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="the NONMEM-style dataset of a fit config, checked against it")] = None,
    method: Annotated[Optional[str], typer.Option("--method", help="estimation method of a fit config (focei, foce, laplace, fo)")] = None,
):
    """Check a config (and an animals file or a fit's dataset) as `vtrial run` / `vtrial fit` would,
    without solving or writing anything."""
    from vtrial.jobs import check_config

    try:
        summary = check_config(config, seed=seed, animals_per_arm=animals_per_arm, typical=typical, animals=animals,
                               chunk_size=chunk_size, data=data, method=method)
    except (SpecError, DataError) as e:
        fail(str(e))
    say(f"{config} ({summary.pop('kind')})", done="ok")
    for k, v in summary.items():
        say(f"  {k}: {v}")


@app.command("fit-curve")
def fit_curve(
    data: Annotated[Path, typer.Argument(help="CSV/Parquet: concentration_<unit>, response, optional replicate")],
    out: Annotated[Optional[Path], typer.Option("--out", help="output folder (default runs/fit-curve-<data>-<timestamp>)")] = None,
    ligand_nm: Annotated[Optional[float], typer.Option("--ligand-nm", help="labelled ligand / agonist concentration (nM), for the Cheng-Prusoff Ki")] = None,
    kd_nm: Annotated[Optional[float], typer.Option("--kd-nm", help="KD of that ligand (nM), for the Cheng-Prusoff Ki")] = None,
    mw_kda: Annotated[Optional[float], typer.Option("--mw-kda", help="antagonist molecular weight (kDa) when concentrations are mass units")] = None,
):
    """Fit a four-parameter logistic to your concentration-response data: IC50, Hill slope
    (and Ki by Cheng-Prusoff with --ligand-nm and --kd-nm); writes curve_fit.csv and curve_fit.png."""
    from rich.table import Table

    from vtrial.jobs.curve_fit import fit_curve_file

    try:
        record = fit_curve_file(data, out=out, ligand_nm=ligand_nm, kd_nm=kd_nm, mw_kda=mw_kda)
    except (SpecError, DataError) as e:
        fail(str(e) if str(data) in str(e) else f"{data}: {e}")
    t = Table(title=escape(f"{data.name}: {record.n_points} points, concentrations in {record.conc_unit}"))
    for col in ("parameter", "estimate", "se", "ci_low", "ci_high", "unit"):
        t.add_column(col, justify="left" if col in ("parameter", "unit") else "right")
    for r in record.table.itertuples(index=False):
        t.add_row(escape(r.parameter), *(f"{v:.4g}" for v in (r.estimate, r.se, r.ci_low, r.ci_high)), escape(r.unit))
    console.print(t)
    for w in record.fit.warnings:
        warn(w)
    say(f"fit-curve -> {record.out_dir}", done="done")


@app.command("calibrate")
def calibrate_command(
    config: Annotated[Path, typer.Argument(help="functional assay config (kind = functional_neutralisation)")],
    write: Annotated[bool, typer.Option("--write", help="write the calibrated value into the config's [parameters] table")] = False,
):
    """Re-run the optax calibration of a functional assay's unknown parameter to its target IC50."""
    from rich.table import Table

    from vtrial.io.config import write_calibrated_value
    from vtrial.jobs.calibrate import calibrate_config

    try:
        result = calibrate_config(config)
        if write:
            write_calibrated_value(config, result.parameter, result.value)
    except (SpecError, DataError) as e:
        fail(str(e))
    t = Table(title=escape(f"calibration of {config.name}"))
    for col in ("parameter", "config value", "calibrated", "target IC50 (nM)", "simulated IC50 (nM)", "rounds"):
        t.add_column(col)
    t.add_row(escape(result.parameter), f"{result.initial:.6g}", f"{result.value:.6g}", f"{result.target_ic50_nm:.6g}",
              f"{result.ic50_nm:.6g}", str(len(result.rounds)))
    console.print(t)
    if write:
        say(f"parameters.{result.parameter} = {result.value:.6g} into {config}", done="wrote")
    else:
        say("(dry run: pass --write to update the config)")


INFEASIBLE = 4


@app.command("optimize")
def optimize_command(
    config: Annotated[Path, typer.Argument(help="dose optimisation config (kind = optimize; see configs/cia_dose_optimization.toml)")],
    out: Annotated[Optional[Path], typer.Option("--out", help="output folder (default runs/<config>-<timestamp>)")] = None,
    animals_per_arm: Annotated[Optional[int], typer.Option("--animals-per-arm", help="training animals and fresh (verification) animals (overrides the config)")] = None,
):
    """Find the least-drug regimen that meets a target attainment (grid sweep and gradient search);
    exit status 4 when no regimen in the space meets it."""
    import sys

    from vtrial.jobs import run_config

    with _progress_bar(f"optimize: {config.stem}") as bar:
        task = bar.add_task(f"optimize: {config.stem}", total=None)
        try:
            record = run_config(config, out=out, animals_per_arm=animals_per_arm, command=" ".join(sys.argv),
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
        except (SpecError, DataError) as e:
            fail(str(e))
    f = record.facts
    say(f"optimize -> {record.out_dir}", done="done")
    _print_warnings(f)
    if f["feasible"]:
        say(f"  regimen: {f['regimen']}")
    for k in ("agreement", "grid_animal_regimens", "gradient_animal_regimens", "seconds"):
        if f.get(k) is not None:
            say(f"  {k}: {f[k]}")
    if not f["feasible"]:
        best = f["best_attainable"] or {}
        fail(f"no regimen in the space meets the target; best attainable PTA {best.get('pta')} with {best.get('regimen')} "
             f"(failing: {', '.join(best.get('failing', []))})", INFEASIBLE)


@app.command("power")
def power_command(
    config: Annotated[Path, typer.Argument(help="power config (kind = power; see configs/cia_power.toml)")],
    out: Annotated[Optional[Path], typer.Option("--out", help="output folder (default runs/<config>-<timestamp>)")] = None,
):
    """Power against animals per arm by replicate virtual studies; the smallest n reaching the target power."""
    import sys

    from vtrial.jobs import run_config

    with _progress_bar(f"power: {config.stem}") as bar:
        task = bar.add_task(f"power: {config.stem}", total=None)
        try:
            record = run_config(config, out=out, progress=lambda done, total: bar.update(task, completed=done, total=total),
                                command=" ".join(sys.argv))
        except (SpecError, DataError) as e:
            fail(str(e))
    say(f"power -> {record.out_dir}", done="done")
    _print_warnings(record.facts)
    for comparison, n in record.facts["smallest_n"].items():
        say(f"  {comparison}: smallest n for power {record.facts['target_power']:g} = {n if n is not None else 'not reached'}")


NOT_CONVERGED = 3


def _fit_progress(description: str) -> Progress:
    """A live line over a fit's outer iterations: iteration count, the current OFV, time."""
    return Progress(
        TextColumn("[progress.description]{task.description}"), TextColumn("iteration {task.completed:.0f}"),
        TextColumn("OFV {task.fields[ofv]}"), TimeElapsedColumn(),
        console=err_console, transient=True, disable=not err_console.is_terminal,
    )


@app.command("fit")
def fit_command(
    config: Annotated[Path, typer.Argument(help="population fit config (kind = fit; see configs/bolus_2cpt_fit.toml)")],
    data: Annotated[Optional[Path], typer.Argument(help="NONMEM-style CSV dataset (ID, TIME, AMT, EVID, CMT, DV, MDV, ...); default: the config's [data.source] file (an imported control stream's $DATA)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="output folder (default runs/<config>-<timestamp>)")] = None,
    method: Annotated[Optional[str], typer.Option("--method", help="focei (default), foce, laplace or fo (overrides the config)")] = None,
    no_figures: Annotated[bool, typer.Option("--no-figures", help="no gof.png and vpc.png (faster; every number the same)")] = False,
):
    """Fit a population model to a NONMEM-style dataset: estimates with SEs, EBEs, predictions and residuals,
    goodness-of-fit plots and a VPC; exit status 3 when the fit did not converge or its covariance step failed."""
    import sys

    from vtrial.jobs import run_config

    with _fit_progress(f"fit: {config.stem}") as bar:
        task = bar.add_task(f"fit: {config.stem}", total=None, ofv="-")
        try:
            record = run_config(config, out=out, data=data, method=method, command=" ".join(sys.argv), kind="fit", figures=not no_figures,
                                on_iteration=lambda i, ofv: bar.update(task, completed=int(i), ofv=f"{float(ofv):.3f}"))
        except (SpecError, DataError) as e:
            fail(str(e))
    f = record.facts
    say(f"fit -> {record.out_dir}", done="done")
    for k in ("method", "n_subjects", "n_observations", "iterations", "seconds"):
        say(f"  {k}: {f.get(k)}")
    converged, covariance = bool(f.get("converged")), str(f.get("covariance_step"))
    if converged:
        say(f"  OFV: {f.get('ofv')} (with the N log 2 pi constant: {f.get('ofv_with_constant')})")
    for w in f.get("warnings") or []:
        warn(w)
    if not converged:
        fail(f"the fit did not converge after {f.get('iterations')} iterations (last OFV {f.get('ofv')}); its estimates are "
             "not a minimum: see fit.json and parameters.csv, change the initial values or the method", NOT_CONVERGED)
    if covariance not in ("ok", "not requested"):
        fail(f"covariance step {covariance}: the estimates have no standard errors (see fit.json)", NOT_CONVERGED)
    _print_estimates(record.out_dir / "parameters.csv")


def _print_estimates(path: Path) -> None:
    import pandas as pd
    from rich.table import Table

    table = pd.read_csv(path)
    t = Table(title="estimates (SE and 95% CI from the covariance step)")
    for col in ("name", "estimate", "se", "rse_pct", "ci_low", "ci_high", "unit"):
        t.add_column(col, justify="left" if col in ("name", "unit") else "right")
    for r in table.itertuples(index=False):
        fixed = str(r.fixed).lower() == "true"
        numbers = [f"{v:.4g}" if pd.notna(v) else "-" for v in (r.estimate, r.se, r.rse_pct, r.ci_low, r.ci_high)]
        t.add_row(escape(r.name + (" (fixed)" if fixed else "")), *numbers, "" if pd.isna(r.unit) else escape(str(r.unit)))
    console.print(t)


@app.command("bootstrap")
def bootstrap_command(
    config: Annotated[Path, typer.Argument(help="population fit config (kind = fit)")],
    data: Annotated[Path, typer.Argument(help="NONMEM-style CSV dataset")],
    samples: Annotated[int, typer.Option("--samples", help="bootstrap replicates")] = 200,
    stratify: Annotated[Optional[str], typer.Option("--stratify", help="resample within the strata of this dataset column")] = None,
    seed: Annotated[int, typer.Option("--seed", help="random seed of the resampling")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", help="output folder (default runs/bootstrap-<config>-<timestamp>)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted bootstrap of the same --out")] = False,
    batch: Annotated[int, typer.Option("--batch", help="replicates fitted together (results do not depend on it)")] = 50,  # vtrial.jobs.bootstrap.DEFAULT_BATCH (not imported: a fast --help)
):
    """Case-resampling bootstrap of a population fit: all replicates fitted together; writes
    bootstrap_results.csv (one row per replicate) and bootstrap_summary.csv (PsN's layout)."""
    from vtrial.jobs.bootstrap import run_bootstrap

    with _progress_bar(f"bootstrap: {config.stem}") as bar:
        task = bar.add_task(f"bootstrap: {config.stem}", total=None)
        try:
            facts = run_bootstrap(config, data, samples=samples, stratify=stratify, seed=seed, out=out, resume=resume, batch=batch,
                                  progress=lambda done, total: bar.update(task, completed=done, total=total))
        except (SpecError, DataError) as e:
            fail(str(e))
    say(f"bootstrap -> {facts['out_dir']}", done="done")
    say(f"  {samples} replicates, {facts['failed']} failed (not converged); original OFV {facts['original_ofv']:.3f}; "
        f"{facts['seconds']:.1f} s")


@app.command("covariates")
def covariates_command(
    config: Annotated[Path, typer.Argument(help="population fit config (kind = fit) with [covariate_search] candidates")],
    data: Annotated[Path, typer.Argument(help="NONMEM-style CSV dataset")],
    out: Annotated[Optional[Path], typer.Option("--out", help="output folder (default runs/covariates-<config>-<timestamp>)")] = None,
):
    """Stepwise covariate search (forward inclusion, backward elimination), every candidate of a step
    fitted in one batch; writes scm_log.csv and final_fit.toml (loadable by vtrial fit)."""
    from vtrial.jobs.covariates import run_covariates

    with _progress_bar(f"covariates: {config.stem}") as bar:
        task = bar.add_task(f"covariates: {config.stem}", total=None)
        try:
            facts = run_covariates(config, data, out=out,
                                   on_step=lambda direction, step: bar.update(task, description=f"covariates: {direction} step {step}"))
        except (SpecError, DataError) as e:
            fail(str(e))
    say(f"covariates -> {facts['out_dir']}", done="done")
    say(f"  included: {', '.join(facts['included']) or 'none'}; OFV {facts['base_ofv']:.3f} -> {facts['final_ofv']:.3f} "
        f"({facts['models_fitted']} models in {facts['steps']} steps, {facts['seconds']:.1f} s)")


@app.command("predict")
def predict_command(
    config: Annotated[Path, typer.Argument(help="a fit config (its values as given, as NONMEM's MAXEVAL=0) or a trial config")],
    data: Annotated[Path, typer.Argument(help="NONMEM-style CSV dataset whose records to predict")],
    out: Annotated[Optional[Path], typer.Option("--out", help="output folder (default runs/<config>-predict-<timestamp>)")] = None,
    replicates: Annotated[int, typer.Option("--replicates", help="simulated studies with variability and residual error (SIM_DV, long form with REP)")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="random seed of the simulated studies")] = 0,
    individual: Annotated[Optional[Path], typer.Option("--individual", help="individual parameter values per ID for IPRED (a fit's individual.csv)")] = None,
):
    """Predict a dataset's own records: PRED, IPRED and, with --replicates, simulated DVs (predictions.csv
    keeps the dataset's rows, order and columns)."""
    import sys

    from vtrial.jobs.predict import predict_to_folder

    try:
        folder, facts = predict_to_folder(config, data, out=out, individual=individual, replicates=replicates, seed=seed,
                                          command=" ".join(sys.argv))
    except (SpecError, DataError) as e:
        fail(str(e))
    console.print(f"[green]done[/] predict -> {folder}")
    for k in ("rows", "ipred", "ofv_at_config_values", "replicates"):
        if facts.get(k) is not None:
            console.print(f"  {k}: {facts[k]}", highlight=False)


MODEL_CHECK_FAILED = 5


@app.command("model")
def model_command(
    model: Annotated[Optional[str], typer.Argument(help="a model name (vtrial model --list), 'file.py:factory' or an entry point")] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="solve and differentiate the model to check its code")] = True,
    list_models: Annotated[bool, typer.Option("--list", help="list the models a name reaches (shipped and entry points)")] = False,
):
    """Print a model's card (states, parameters, routes, observables, covariates, endpoints) and check it:
    jit and vmap, gradients against central differences, linear PK against the ODE solve.
    Exit status 2 for a broken model, 5 when a check fails. Loading a file runs its Python."""
    from rich.table import Table

    from vtrial.jobs.model_check import check_model_code, model_card
    from vtrial.models.loader import available_models, load_model

    if list_models:
        for name, source in available_models().items():
            console.print(f"{name}  ({source})", highlight=False)
        return
    if model is None:
        fail("MODEL: give a model name, 'file.py:factory' or an entry point (vtrial model --list lists the names)")
    try:
        loaded = load_model(model)
    except (SpecError, DataError) as e:
        fail(str(e))
    console.print(f"[bold]{loaded.name}[/]: {loaded.description}", highlight=False)
    for section, rows in model_card(loaded).items():
        if not rows:
            continue
        t = Table(title=section, title_justify="left")
        for col in rows[0]:
            t.add_column(col)
        for row in rows:
            t.add_row(*row.values())
        console.print(t)
    if not check:
        return
    results = check_model_code(loaded)
    for r in results:
        mark = "[green]pass[/]" if r.passed else "[bold red]FAIL[/]"
        console.print(f"{mark} {r.name}: {r.detail}", highlight=False)
    if not all(r.passed for r in results):
        fail(f"model {model}: {sum(not r.passed for r in results)} check(s) failed", MODEL_CHECK_FAILED)


@app.command("import-nonmem")
def import_nonmem_command(
    control_stream: Annotated[Path, typer.Argument(help="a NONMEM control stream (RUN.ctl or RUN.mod)")],
    out: Annotated[Optional[Path], typer.Option("--out", help="folder for <RUN>.py and <RUN>_fit.toml (default runs/<RUN>-import)")] = None,
    check: Annotated[bool, typer.Option("--check", help="compare with NONMEM's outputs beside it (.ext, .phi, $TABLE file): exit 5 when they differ")] = False,
):
    """Write a NONMEM control stream as a vtrial model file and fit config (vtrial fit runs it as it is);
    with --check, evaluate it at NONMEM's estimates and compare PRED, IPRED and the OFV with NONMEM's.
    Needs pharmpy-core: pip install "vtrial\\[nonmem]". Exit status 2 for what cannot be imported (the record and line named)."""
    from vtrial.jobs.import_nonmem import check_import, import_nonmem

    try:
        cs, model_path, config_path = import_nonmem(control_stream, out)
    except (SpecError, DataError) as e:
        fail(str(e))
    say(f"import-nonmem -> {config_path.parent}", done="done")
    say(f"  model: {model_path}")
    say(f"  fit config: {config_path} (vtrial fit {config_path})")
    for note in cs.notes:
        say(f"  note: {note}")
    if not check:
        return
    try:
        facts = check_import(cs, config_path)
    except (SpecError, DataError) as e:
        fail(str(e))
    for k, v in facts.items():
        if k not in ("worst_rows", "matches"):
            say(f"  {k}: {v:.6g}" if isinstance(v, float) else f"  {k}: {v}")
    if not facts["matches"]:
        for w in facts["worst_rows"]:
            say(f"  worst: {w}")
        fail(f"{control_stream}: the import does not match NONMEM's outputs (dOFV {facts['d_ofv']:.4g})", MODEL_CHECK_FAILED)
    say("  matches NONMEM's outputs")


def main():  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
