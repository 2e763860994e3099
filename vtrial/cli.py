"""The `vtrial` command line: parse, call the library, write. Nothing else lives here."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vtrial.errors import DataError, SpecError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="vtrial: virtual trials for preclinical pharmacology.")
err_console = Console(stderr=True)
console = Console()


@app.callback()
def _root():
    """vtrial: virtual trials for preclinical pharmacology (run `vtrial COMMAND --help`)."""
    from vtrial.runtime import enable_persistent_cache, use_all_cpu_cores

    use_all_cpu_cores()
    enable_persistent_cache()


def fail(message: str, code: int = 2):
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def read_table(path: Path):
    """A CSV or Parquet table, chosen by suffix."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as e:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(f"{path}: cannot be read as {'Parquet' if path.suffix.lower() in ('.parquet', '.pq') else 'CSV'} ({e})") from None


def _device() -> str:
    import jax

    d = jax.devices()[0]
    return f"{d.platform}:{getattr(d, 'device_kind', d.platform)} x{jax.device_count()}"


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
):
    """Run the job a config describes and write its outputs into one folder."""
    from vtrial import __version__, distributed
    from vtrial.io.chunks import ResumeMismatch, close_partial, open_partial
    from vtrial.io.config import read_toml, validate
    from vtrial.jobs import RunContext, get_job

    try:
        data, config_hash = read_toml(config)
        kind = data.pop("kind", "trial")
        if not isinstance(kind, str):
            raise SpecError("kind", "must be a string naming the job")
        job = get_job(kind)
        spec = validate(job.schema, data)
        if animals_per_arm is not None and animals_per_arm < 1:
            raise SpecError("--animals-per-arm", "must be >= 1")
        if chunk_size is not None and chunk_size < 1:
            raise SpecError("--chunk-size", "must be >= 1")
        animal_table = read_table(animals) if animals is not None else None
        distributed.initialize(coordinator, num_processes, process_id)  # before any JAX work
    except (SpecError, DataError) as e:
        fail(str(e))

    writer = distributed.is_writer()
    out_dir = out or Path("runs") / f"{config.stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    problem, store = None, None
    if writer:
        partial = out_dir.parent / f".{out_dir.name}.partial"
        manifest = {  # what makes two attempts the same run (a resumed run must match it)
            "vtrial_version": __version__,
            "kind": kind,
            "config_sha256": config_hash,
            "seed": seed if seed is not None else getattr(spec, "seed", None),
            "animals_per_arm": animals_per_arm if animals_per_arm is not None else getattr(spec, "animals_per_arm", None),
            "chunk_size": chunk_size if chunk_size is not None else getattr(spec, "chunk_size", None),
            "typical": typical,
            "animals_file_sha256": _sha256(animals) if animals is not None else None,
            "trajectories": trajectories,
        }
        if out_dir.exists() and any(out_dir.iterdir()):
            problem = f"--out: folder {out_dir} exists and is not empty; choose another"
        else:
            try:
                store, n_done = open_partial(partial, manifest, resume=resume)
                if resume:
                    err_console.print(f"resuming {partial}: {n_done} finished chunks" if n_done else "nothing to resume; starting afresh", highlight=False)
            except ResumeMismatch as e:
                problem = str(e)
    else:  # other processes of a multi-process run compute their share and write nothing
        partial = Path(tempfile.mkdtemp(prefix="vtrial-process-"))
    if distributed.process_count() > 1 and distributed.broadcast(np.array([problem is not None], np.int32))[0] and problem is None:
        problem = "process 0 could not start the run (see its error)"
    if problem is not None:
        if not writer:
            shutil.rmtree(partial, ignore_errors=True)
        fail(problem)
    t_start = time.perf_counter()
    try:
        with Progress(
            TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err_console, transient=True, disable=not (writer and err_console.is_terminal),
        ) as bar:
            task = bar.add_task(f"{kind}: {config.stem}", total=None)

            def progress(done: int, total: int):
                bar.update(task, completed=done, total=total)

            ctx = RunContext(
                out_dir=partial, seed=seed, animals_per_arm=animals_per_arm, typical=typical,
                animals=animal_table, progress=progress, config_name=config.stem,
                chunk_size=chunk_size, trajectories=trajectories, chunk_store=store, writer=writer,
            )
            facts = job.run(spec, ctx)
    except (SpecError, DataError) as e:
        shutil.rmtree(partial, ignore_errors=True)
        fail(str(e))
    except BaseException:
        if writer and store is not None and store.finished():
            err_console.print(f"interrupted: {len(store.finished())} finished chunks kept in {partial}; "
                              "run the same command with --resume to continue", highlight=False)
        else:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    if not writer:
        shutil.rmtree(partial, ignore_errors=True)
        err_console.print(f"process {process_id}: done", highlight=False)
        return
    from vtrial.io.writers import write_json

    close_partial(partial)
    info = {
        "vtrial_version": __version__,
        "kind": kind,
        "config": str(config),
        "config_sha256": config_hash,
        "device": _device(),
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        "command": " ".join(sys.argv),
        **facts,
    }
    write_json(info, partial / "run.json")
    if out_dir.exists():
        out_dir.rmdir()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(out_dir)
    console.print(f"[green]done[/] {kind} -> {out_dir}")
    for k in ("n_animals", "n_failed", "compile_seconds", "run_seconds", "chunks_resumed", "lockstep_waste"):
        if k in facts:
            console.print(f"  {k}: {facts[k]}")
    if facts.get("trajectories") is False:
        console.print("  trajectories/observations not written (large population; --trajectories writes them)")


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

# ---------------------------------------------------------------------------
# in vitro assays: concentration-response fitting and calibration


_MOLAR_TO_NM = {"fM": 1e-6, "pM": 1e-3, "nM": 1.0, "uM": 1e3, "mM": 1e6, "M": 1e9}
_MASS_TO_NG_PER_ML = {"ng/mL": 1.0, "ug/mL": 1e3, "mg/mL": 1e6, "ng/L": 1e-3, "ug/L": 1.0, "mg/L": 1e3, "g/L": 1e6}


def _to_nm_factor(unit: str, mw_kda: float | None) -> float:
    """Multiply a concentration in `unit` by this to get nM (mass units need the molecular weight)."""
    if unit in _MOLAR_TO_NM:
        return _MOLAR_TO_NM[unit]
    if mw_kda is None:
        raise SpecError("--mw-kda", f"concentrations are in {unit}; give the antagonist's molecular weight (kDa, "
                                    "anakinra 17.3) to compute a Ki in nM")
    return _MASS_TO_NG_PER_ML[unit] / mw_kda


def _print_curve_table(table, title: str) -> None:
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for col in ("parameter", "estimate", "se", "ci_low", "ci_high", "unit"):
        t.add_column(col, justify="left" if col in ("parameter", "unit") else "right")
    for r in table.itertuples(index=False):
        t.add_row(r.parameter, *(f"{v:.4g}" for v in (r.estimate, r.se, r.ci_low, r.ci_high)), r.unit)
    console.print(t)


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
    from vtrial import curvefit
    from vtrial.assays.common import curve_table, fit_logistic4_scaled, fit_rows, goodness_of_fit_rows, value_row
    from vtrial.io.writers import write_csv

    data_errors = tuple({DataError, curvefit.DataError})
    try:
        if (ligand_nm is None) != (kd_nm is None):
            raise SpecError("--ligand-nm/--kd-nm", "give both (ligand concentration and its KD, nM) or neither")
        for name, v in (("--ligand-nm", ligand_nm), ("--kd-nm", kd_nm), ("--mw-kda", mw_kda)):
            if v is not None and not (v > 0 if name != "--ligand-nm" else v >= 0):
                raise SpecError(name, f"must be {'>= 0' if name == '--ligand-nm' else '> 0'}, got {v}")
        frame, unit = curvefit.load_concentration_response(data)
        conc, response = frame["concentration"].to_numpy(), frame["response"].to_numpy()
        fit = fit_logistic4_scaled(conc, response, conc_unit=unit)
        parts = [fit_rows(fit, "4pl"), goodness_of_fit_rows(fit, response, "")]
        if ligand_nm is not None:
            f = _to_nm_factor(unit, mw_kda)
            cp = curvefit.cheng_prusoff_ki(fit.estimates["ic50"] * f, ligand_nm, kd_nm, ic50_se=fit.se["ic50"] * f,
                                           ic50_ci=(fit.ci_low["ic50"] * f, fit.ci_high["ic50"] * f))
            parts.append(value_row("ki_cheng_prusoff", cp.ki, "nM", "cheng_prusoff",
                                   f"IC50/(1 + L/KD), L = {ligand_nm:g} nM, KD = {kd_nm:g} nM; assumes equilibrium and "
                                   "negligible depletion (use the full model of `vtrial run` when they fail)",
                                   cp.se, (cp.ci_low, cp.ci_high)))
        table = curve_table(parts)
    except FileNotFoundError as e:
        fail(str(e))
    except (SpecError, *data_errors) as e:
        fail(f"{data}: {e}" if str(data) not in str(e) else str(e))
    out_dir = out or Path("runs") / f"fit-curve-{data.stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    write_csv(table, out_dir / "curve_fit.csv")
    curvefit.plot_curve_fit(conc, response, fit, out_dir / "curve_fit.png", conc_unit=unit, title=f"{data.name}: 4PL fit")
    _print_curve_table(table, f"{data.name}: {fit.n_obs} points, concentrations in {unit}")
    for w in fit.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    console.print(f"[green]done[/] fit-curve -> {out_dir}")


@app.command("calibrate")
def calibrate_command(
    config: Annotated[Path, typer.Argument(help="functional assay config (kind = functional_neutralisation)")],
    write: Annotated[bool, typer.Option("--write", help="write the calibrated value into the config's [parameters] table")] = False,
):
    """Re-run the optax calibration of a functional assay's unknown parameter to its target IC50."""
    from rich.table import Table

    from vtrial.assays.calibration import calibrate, write_calibrated_value
    from vtrial.assays.specs import FunctionalSpec
    from vtrial.io.config import read_toml, validate

    try:
        data, _ = read_toml(config)
        kind = data.pop("kind", None)
        if kind != "functional_neutralisation":
            raise SpecError("kind", f"{kind!r} has nothing to calibrate; calibration applies to "
                                    "kind = \"functional_neutralisation\" configs")
        spec = validate(FunctionalSpec, data)
        result = calibrate(spec)
    except SpecError as e:
        fail(str(e))
    t = Table(title=f"calibration of {config.name}")
    for col in ("parameter", "config value", "calibrated", "target IC50 (nM)", "simulated IC50 (nM)", "rounds"):
        t.add_column(col)
    t.add_row(result.parameter, f"{result.initial:.6g}", f"{result.value:.6g}", f"{result.target_ic50_nm:.6g}",
              f"{result.ic50_nm:.6g}", str(len(result.rounds)))
    console.print(t)
    if write:
        try:
            write_calibrated_value(config, result.parameter, result.value)
        except SpecError as e:
            fail(str(e))
        console.print(f"[green]wrote[/] parameters.{result.parameter} = {result.value:.6g} into {config}")
    else:
        console.print("(dry run: pass --write to update the config)")


def main():  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
