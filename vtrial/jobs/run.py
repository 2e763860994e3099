"""`run_config`: the one call behind `vtrial run` (and every command that writes a run folder).

It validates the config (a TOML file or its parsed table), joins a multi-process run when
asked to, opens the output folder (`vtrial.io.run_folder.RunFolder`: hidden partial folder,
resume manifest, process 0 writes), calls the job of the config's `kind`, writes
`run.json` and moves the folder into place. Bad input raises `SpecError`/`DataError`
before anything is written; any failure removes the partial folder, except an
interruption after finished chunks, which keeps them for `resume=True`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vtrial.engine import distributed
from vtrial.errors import RunWarning, SpecError
from vtrial.io.config import read_toml, validate
from vtrial.limits import MAX_ANIMALS, MAX_SEED
from vtrial.io.run_folder import RunFolder
from vtrial.io.tables import read_table
from vtrial.jobs.context import RunContext
from vtrial.jobs.table import JOBS, get_job
from vtrial.version import __version__


@dataclass(frozen=True)
class RunRecord:
    """What a run wrote.

    - `kind`: the job;
    - `out_dir`: the output folder (None on processes other than 0 of a multi-process run);
    - `files`: the files in it, sorted;
    - `info`: the contents of `run.json` (the job's facts plus version, config, device,
      timings); `facts` is the job's part of it;
    - `resumed_chunks`: finished chunks reused from an interrupted run.

    Problems the run survived (`vtrial.errors.RunWarning`: a figure that could not be
    drawn, endpoints that are not finite) are listed in `facts["warnings"]` and run.json.
    """

    kind: str
    out_dir: Path | None
    files: tuple[str, ...]
    info: dict[str, Any]
    facts: dict[str, Any] = field(default_factory=dict)
    resumed_chunks: int = 0


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_config(config) -> tuple[dict, str, str, str, Path | None]:
    """(data, sha256, name for titles and folders, what run.json records as the config,
    the folder file references in it are relative to: the config file's, or None for a
    table in memory: the current folder)."""
    if isinstance(config, Mapping):
        data = json.loads(json.dumps(dict(config), default=str))
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        name = str(data.get("name") or "run")
        return data, digest, name, "(in memory)", None
    data, digest = read_toml(config)
    return data, digest, Path(config).stem, str(config), Path(config).parent


def _check_positive(name: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ANIMALS):
        raise SpecError(name, f"must be a whole number in [1, {MAX_ANIMALS:,}], got {value!r}")


@dataclass(frozen=True)
class _Prepared:
    job: object
    spec: object
    kind: str
    config_sha256: str
    config_name: str
    config_label: str
    seed: int | None
    animals_per_arm: int | None
    chunk_size: int | None
    animals: pd.DataFrame | None
    animals_sha256: str | None


def _kind_of(table: dict) -> str:
    """The config's `kind`; a config without one is a trial (the original format) only if
    it looks like one, otherwise the missing key is named."""
    if "kind" in table:
        return table.pop("kind")
    if "arms" in table or "model" in table:
        return "trial"
    raise SpecError("kind", f"missing: say which job this config describes, kind = one of {', '.join(repr(k) for k in JOBS)}")


def _kind_hint(table: dict, kind: str, guessed: bool) -> str | None:
    """Why a config that fails its schema may have the wrong `kind`: it has none (read as
    a trial config), or its keys are those of another job."""
    keys = set(table)
    unknown = keys - set(JOBS[kind].schema.model_fields)
    fits = [k for k, job in JOBS.items() if k != kind and unknown and not keys - set(job.schema.model_fields)]
    if guessed:
        return (f"the config has no `kind`, so it was read as a trial config; if it describes another job, say which: "
                f"kind = {' or '.join(repr(k) for k in fits) if fits else 'one of ' + ', '.join(repr(k) for k in JOBS)}")
    if fits:
        return f"its keys are those of a {' or '.join(repr(k) for k in fits)} config: is `kind = {kind!r}` right?"
    return None


def _prepare(config, *, seed, animals_per_arm, chunk_size, animals, expected_kind: str | None = None) -> _Prepared:
    """The validated config and overrides, before any JAX work or file is written.
    `expected_kind`: the job the command takes (`vtrial fit`: "fit"); a config of another
    kind, or without `kind`, is refused naming `kind` before its keys are validated."""
    table, config_hash, config_name, config_label, folder = _read_config(config)
    if expected_kind is not None and table.get("kind") != expected_kind:
        if "kind" not in table:
            raise SpecError("kind", f"missing: this command takes kind = {expected_kind!r} configs; add kind = \"{expected_kind}\"")
        raise SpecError("kind", f"this is a {table['kind']!r} config; this command takes kind = {expected_kind!r}")
    guessed = "kind" not in table
    kind = _kind_of(table)
    job = get_job(kind)
    try:
        spec = validate(job.schema, table, folder)
    except SpecError as e:
        hint = _kind_hint(table, kind, guessed)
        if hint is None:
            raise
        raise SpecError(e.field, f"{e.problem}\n({hint})") from None
    _check_positive("--animals-per-arm", animals_per_arm)
    _check_positive("--chunk-size", chunk_size)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise SpecError("--seed", f"must be a whole number in [0, {MAX_SEED}], got {seed!r}")
    if isinstance(animals, pd.DataFrame):
        animal_table, animals_hash = animals, hashlib.sha256(pd.util.hash_pandas_object(animals).to_numpy().tobytes()).hexdigest()
    elif animals is not None:
        animal_table, animals_hash = read_table(animals), _sha256_file(Path(animals))
    else:
        animal_table, animals_hash = None, None
    return _Prepared(job, spec, kind, config_hash, config_name, config_label, seed, animals_per_arm, chunk_size,
                     animal_table, animals_hash)


def _check(prepared: _Prepared, *, typical: bool, data=None, method=None, dataset_out=None) -> dict:
    if prepared.job.check is None:
        return {}
    ctx = RunContext(
        out_dir=Path("."), seed=prepared.seed, animals_per_arm=prepared.animals_per_arm, typical=typical,
        animals=prepared.animals, config_name=prepared.config_name, chunk_size=prepared.chunk_size, writer=False,
        data=Path(data) if data is not None else None, method=method,
        dataset_out=Path(dataset_out) if dataset_out is not None else None,
    )
    return prepared.job.check(prepared.spec, ctx) or {}


def _check_data_file(prepared: _Prepared, data, option: str) -> None:
    """An input data file applies only to jobs that read one (a fit's dataset); it must exist."""
    if data is None:
        return
    if not prepared.job.needs_data:
        readers = ", ".join(repr(k) for k, job in JOBS.items() if job.needs_data)
        raise SpecError(option, f"a dataset applies to configs that read one (kind = {readers}); this config is a "
                                f"{prepared.kind!r} job (to write a trial's simulated study as a dataset: vtrial run "
                                "CONFIG --dataset FILE)")
    if not Path(data).is_file():
        raise SpecError(option, f"{data}: file not found")


def check_config(
    config: str | Path | Mapping[str, Any],
    *,
    seed: int | None = None,
    animals_per_arm: int | None = None,
    typical: bool = False,
    animals: str | Path | pd.DataFrame | None = None,
    chunk_size: int | None = None,
    data: str | Path | None = None,
    method: str | None = None,
) -> dict:
    """Check a config (and its data files) as `run_config` would, without solving or
    writing anything: every `SpecError`/`DataError` a run would raise before its first
    solve is raised here. Returns what the run would be (kind and the job's summary)."""
    prepared = _prepare(config, seed=seed, animals_per_arm=animals_per_arm, chunk_size=chunk_size, animals=animals)
    if data is None and prepared.job.needs_data and hasattr(prepared.spec, "data_file"):
        data = prepared.spec.data_file()  # the config's own dataset ([data.source])
    _check_data_file(prepared, data, "--data")
    return {"kind": prepared.kind, **_check(prepared, typical=typical, data=data, method=method)}


def run_config(
    config: str | Path | Mapping[str, Any],
    *,
    out: str | Path | None = None,
    seed: int | None = None,
    animals_per_arm: int | None = None,
    typical: bool = False,
    animals: str | Path | pd.DataFrame | None = None,
    chunk_size: int | None = None,
    trajectories: bool | None = None,
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    command: str | None = None,
    data: str | Path | None = None,
    dataset_out: str | Path | None = None,
    method: str | None = None,
    on_iteration: Callable[[int, float], None] | None = None,
    kind: str | None = None,
    figures: bool = True,
) -> RunRecord:
    """Run the job a config describes and write its outputs into one folder.

    **Arguments:**
    - `config`: a TOML file, or its table as a mapping (`kind` selects the job; default
      `"trial"`);
    - `out`: the output folder (default `runs/<config name>-<timestamp>`); it must not
      exist or be empty;
    - `seed`, `animals_per_arm`, `chunk_size`: override the config's;
    - `typical`: typical animals (noise-free wells) only;
    - `animals`: exactly the animals to simulate (a CSV/Parquet file or a DataFrame);
    - `trajectories`: write the per-animal-per-time tables (None: only when small);
    - `resume`: continue an interrupted run of the same `out` from its finished chunks;
    - `progress(done, total)`: called as chunks finish;
    - `coordinator`, `num_processes`, `process_id`: join a multi-process run
      (`vtrial.engine.distributed.initialize`); process 0 writes;
    - `command`: what `run.json` records as the command (default: `sys.argv`);
    - `data`: an input data file for jobs that read one (a fit's NONMEM dataset);
    - `dataset_out`: also write a trial's simulated study as a NONMEM dataset there;
    - `method`: override the config's method (jobs that have one, e.g. a fit);
    - `on_iteration(iteration, objective)`: called by iterative jobs (a fit's outer
      iterations with its OFV);
    - `kind`: the job the caller expects (e.g. "fit" for `vtrial fit`); another is refused;
    - `figures`: False skips every figure (`--no-figures`); the numbers are the same.

    **Returns:** a `RunRecord`. **Raises:** `SpecError` / `DataError` naming the field,
    file, row or column, before anything is written.
    """
    prepared = _prepare(config, seed=seed, animals_per_arm=animals_per_arm, chunk_size=chunk_size, animals=animals,
                        expected_kind=kind)
    job, spec, kind = prepared.job, prepared.spec, prepared.kind
    config_hash, config_name, config_label = prepared.config_sha256, prepared.config_name, prepared.config_label
    animal_table, animals_hash = prepared.animals, prepared.animals_sha256
    if data is None and job.needs_data and hasattr(spec, "data_file"):
        data = spec.data_file()  # the config's own dataset ([data.source] of an imported control stream)
    _check_data_file(prepared, data, "DATA")
    if data is None and job.needs_data:
        raise SpecError("DATA", f"a {kind!r} job reads a data file: vtrial {kind} CONFIG DATA (run_config(..., data=...))")
    if dataset_out is not None and kind != "trial":
        raise SpecError("--dataset", f"writes the simulated study of a trial config; this config is a {kind!r} job")
    distributed.initialize(coordinator, num_processes, process_id)  # before any JAX work (building a model is some)
    # Everything a job can check without solving is checked before a folder exists.
    _check(prepared, typical=typical, data=data, method=method, dataset_out=dataset_out)
    writer = distributed.is_writer()
    out_dir = Path(out) if out is not None else Path("runs") / f"{config_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    manifest = {  # what makes two attempts the same run (a resumed run must match it)
        "vtrial_version": __version__,
        "kind": kind,
        "config_sha256": config_hash,
        "seed": seed if seed is not None else getattr(spec, "seed", None),
        "animals_per_arm": animals_per_arm if animals_per_arm is not None else getattr(spec, "animals_per_arm", None),
        "chunk_size": chunk_size if chunk_size is not None else getattr(spec, "chunk_size", None),
        "typical": typical,
        "animals_file_sha256": animals_hash,
        "trajectories": trajectories,
        "data_sha256": _sha256_file(Path(data)) if data is not None and Path(data).is_file() else None,
        "method": method,
    }
    problem, folder = None, None
    try:
        folder = RunFolder(out_dir, manifest, resume=resume, writer=writer)
    except SpecError as e:
        problem = e
    if distributed.process_count() > 1:  # every process stops if process 0 cannot start
        failed = bool(distributed.broadcast(_flag(problem is not None))[0])
        if failed and problem is None:
            problem = SpecError("--out", "process 0 could not start the run (see its error)")
    if problem is not None:
        if folder is not None:
            folder.discard()
        raise problem

    t_start = time.perf_counter()
    ctx = RunContext(
        out_dir=folder.path, seed=seed, animals_per_arm=animals_per_arm, typical=typical, animals=animal_table,
        progress=progress, config_name=config_name, chunk_size=chunk_size, trajectories=trajectories,
        chunk_store=folder.store, writer=writer, data=Path(data) if data is not None else None,
        dataset_out=Path(dataset_out) if dataset_out is not None else None, method=method, on_iteration=on_iteration,
        figures=figures,
    )
    try:
        facts = _run_collecting_warnings(job, spec, ctx)
    except (KeyboardInterrupt, SystemExit):
        folder.keep_for_resume()  # finished chunks stay for `resume=True`
        raise
    except BaseException:
        folder.discard()
        raise
    info = {
        "vtrial_version": __version__,
        "kind": kind,
        "config": config_label,
        "config_sha256": config_hash,
        "device": distributed.device_summary(),
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        "command": command if command is not None else " ".join(sys.argv),
        **facts,
    }
    written = folder.commit(info)
    files = tuple(sorted(p.name for p in written.iterdir())) if written is not None else ()
    return RunRecord(kind, written, files, info, facts, folder.resumed_chunks)


def _run_collecting_warnings(job, spec, ctx: RunContext) -> dict:
    """`job.run(spec, ctx)`, with every `RunWarning` it issues (a figure not drawn, endpoints
    not finite) added to its facts' `warnings`, so that run.json records them; other
    warnings pass through as usual."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RunWarning)
        facts = dict(job.run(spec, ctx) or {})
    reported = list(facts.get("warnings") or [])
    for w in caught:
        if issubclass(w.category, RunWarning):
            reported.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if reported:
        facts["warnings"] = reported
    return facts


def _flag(value: bool) -> np.ndarray:
    return np.array([value], np.int32)
