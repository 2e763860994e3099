"""The registry of runnable jobs: a config's `kind` selects a schema and a runner.

A job is data (a pydantic schema for its config) plus a function that writes its
outputs into `ctx.out_dir` and returns facts for `run.json`. The CLI validates the
config, creates a temporary output folder, calls the job and moves the folder into
place only when the job succeeded, so a failed or interrupted run never leaves a
half-written output folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel

from vtrial.errors import SpecError


@dataclass
class RunContext:
    """What the command line passes to a job besides its validated config.

    - `out_dir`: folder to write every output file into;
    - `seed`, `animals_per_arm`: overrides of the config (None keeps the config's);
    - `typical`: simulate typical animals / noise-free wells only;
    - `animals`: a table of exactly the animals to simulate (trial jobs);
    - `progress`: `progress(done, total)` callback for chunks;
    - `config_name`: stem of the config file, for titles;
    - `chunk_size`: override of the config's animals per chunk (None keeps it);
    - `trajectories`: write the per-animal tables (True/False; None: only when small);
    - `chunk_store`: where finished chunks are kept (`vtrial.io.chunks.ChunkStore`) so
      an interrupted run can resume; None: not resumable;
    - `writer`: whether this process writes outputs (False on processes other than 0
      of a multi-process run: they compute their share and write nothing).
    """

    out_dir: Path
    seed: int | None = None
    animals_per_arm: int | None = None
    typical: bool = False
    animals: pd.DataFrame | None = None
    progress: Callable[[int, int], None] | None = None
    config_name: str = "run"
    chunk_size: int | None = None
    trajectories: bool | None = None
    chunk_store: Any = None
    writer: bool = True


@dataclass(frozen=True)
class Job:
    kind: str
    schema: type[BaseModel]
    run: Callable[[Any, RunContext], dict]
    description: str = ""


JOBS: dict[str, Job] = {}


def register(kind: str, schema: type[BaseModel], description: str = ""):
    """Decorator registering `run(spec, ctx) -> dict` as the job for configs of `kind`."""

    def deco(run):
        JOBS[kind] = Job(kind, schema, run, description)
        return run

    return deco


def get_job(kind: str) -> Job:
    _load_builtin_jobs()
    if kind not in JOBS:
        raise SpecError("kind", f"unknown job kind {kind!r}; known: {', '.join(sorted(JOBS))}")
    return JOBS[kind]


def _load_builtin_jobs() -> None:
    # Imported lazily so `import vtrial` stays light; each module registers its jobs.
    import vtrial.assays.jobs  # noqa: F401
    import vtrial.trial_job  # noqa: F401
