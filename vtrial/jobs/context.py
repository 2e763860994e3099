"""What every job receives besides its validated config, and what a job is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel


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
      of a multi-process run: they compute their share and write nothing);
    - `data`: an input data file the job reads (e.g. the NONMEM dataset of a fit);
    - `dataset_out`: where a trial also writes its simulated study as a NONMEM dataset;
    - `method`: an override of the config's method (e.g. the estimation method of a fit);
    - `on_iteration`: `on_iteration(iteration, objective)` callback of iterative jobs
      (a fit's outer iterations and its OFV);
    - `figures`: draw the figures (False: `--no-figures`, every number written the same).
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
    data: Path | None = None
    dataset_out: Path | None = None
    method: str | None = None
    on_iteration: Callable[[int, float], None] | None = None
    figures: bool = True


@dataclass(frozen=True)
class Job:
    """A job: configs of `kind` validate against `schema`; `run(spec, ctx)` writes the
    outputs into `ctx.out_dir` and returns the facts for run.json; `check(spec, ctx)`
    raises every error `run` would raise before its first solve, and returns a short
    summary of what would run (`vtrial check`); `needs_data`: a run needs an input data
    file (`RunContext.data`, e.g. a fit's dataset)."""

    kind: str
    schema: type[BaseModel]
    run: Callable[[Any, RunContext], dict]
    description: str = ""
    check: Callable[[Any, RunContext], dict] | None = None
    needs_data: bool = False
