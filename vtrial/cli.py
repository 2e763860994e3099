"""The `vtrial` command line: parse, call the library, write. Nothing else lives here."""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

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
):
    """Run the job a config describes and write its outputs into one folder."""
    from vtrial import __version__
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
        animal_table = read_table(animals) if animals is not None else None
    except (SpecError, DataError) as e:
        fail(str(e))

    out_dir = out or Path("runs") / f"{config.stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if out_dir.exists() and any(out_dir.iterdir()):
        fail(f"--out: folder {out_dir} exists and is not empty; choose another")
    partial = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    t_start = time.perf_counter()
    try:
        with Progress(
            TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err_console, transient=True, disable=not err_console.is_terminal,
        ) as bar:
            task = bar.add_task(f"{kind}: {config.stem}", total=None)

            def progress(done: int, total: int):
                bar.update(task, completed=done, total=total)

            ctx = RunContext(
                out_dir=partial, seed=seed, animals_per_arm=animals_per_arm, typical=typical,
                animals=animal_table, progress=progress, config_name=config.stem,
            )
            facts = job.run(spec, ctx)
    except (SpecError, DataError) as e:
        shutil.rmtree(partial, ignore_errors=True)
        fail(str(e))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    from vtrial.io.writers import write_json

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
    for k in ("n_animals", "n_failed", "compile_seconds", "run_seconds"):
        if k in facts:
            console.print(f"  {k}: {facts[k]}")


def main():  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
