"""Finished chunks of a resumable run, and the manifest that says which run they belong to.

A run's hidden `.<out>.partial/` folder holds `manifest.json` (what the run is: config
hash, seed, animals per arm, chunk size, options) and `chunks/chunk_<index>.npz`, one
file per finished chunk, each written to a temporary name and renamed into place, so a
file that exists is complete whenever the run is killed. Files are plain `.npz`
(read with `allow_pickle=False`; nothing is ever pickled).
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np

from vtrial.errors import SpecError
from vtrial.io.writers import atomic_write, write_json
from vtrial.simulate import ChunkResult

MANIFEST = "manifest.json"
_NAME = re.compile(r"^chunk_(\d+)\.npz$")


class ResumeMismatch(SpecError):
    """A partial run exists but was started with other settings."""


class ChunkStore:
    """Chunk results kept in `folder` (`chunk_<index>.npz`)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, index: int) -> Path:
        return self.folder / f"chunk_{index:06d}.npz"

    def finished(self) -> set[int]:
        if not self.folder.is_dir():
            return set()
        return {int(m.group(1)) for p in self.folder.iterdir() if (m := _NAME.match(p.name))}

    def save(self, result: ChunkResult) -> None:
        arrays = {
            "index": np.int64(result.index),
            "animals": result.animals,
            "status": result.status,
            "n_steps": result.n_steps,
            "lockstep_steps": np.int64(result.lockstep_steps),
            **{f"obs:{name}": v for name, v in result.observables.items()},
        }
        if result.states is not None:
            arrays["states"] = result.states

        def write(tmp: Path):
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        atomic_write(self.path(result.index), write)

    def load(self, index: int) -> ChunkResult:
        path = self.path(index)
        try:
            with np.load(path, allow_pickle=False) as z:
                obs = {k.removeprefix("obs:"): z[k] for k in z.files if k.startswith("obs:")}
                return ChunkResult(
                    index=int(z["index"]),
                    animals=z["animals"],
                    observables=obs,
                    status=z["status"],
                    n_steps=z["n_steps"],
                    lockstep_steps=int(z["lockstep_steps"]),
                    states=z["states"] if "states" in z.files else None,
                    resumed=True,
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise SpecError("--resume", f"{path} cannot be read ({e}); run without --resume to start afresh") from None


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} (partial run: {a!r}, now: {b!r})")
    return out


def open_partial(partial: Path, manifest: dict, *, resume: bool) -> tuple[ChunkStore, int]:
    """Prepare `partial` for a run described by `manifest`; returns its chunk store and the
    number of chunks already finished there.

    Without `resume` any old partial folder is discarded. With `resume` an existing one
    is reused if its manifest equals `manifest` (JSON-normalised), otherwise
    `ResumeMismatch` names every difference; with no partial folder the run starts afresh.
    """
    manifest = json.loads(json.dumps(manifest, sort_keys=True, default=str))
    path = partial / MANIFEST
    if resume and path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ResumeMismatch("--resume", f"{path} cannot be read ({e}); remove {partial} to start afresh") from None
        diff = _differences(old, manifest)
        if diff:
            raise ResumeMismatch(
                "--resume",
                f"the partial run in {partial} was started with other settings: {'; '.join(diff)}. "
                f"Run with the same settings, or without --resume to start afresh",
            )
        for leftover in partial.iterdir():  # half-written outputs of the interrupted attempt
            if leftover.name not in (MANIFEST, "chunks"):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        store = ChunkStore(partial / "chunks")
        store.folder.mkdir(exist_ok=True)
        for leftover in store.folder.glob("*.tmp"):
            leftover.unlink()
        return store, len(store.finished())
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "chunks").mkdir(parents=True)
    write_json(manifest, path)
    return ChunkStore(partial / "chunks"), 0


def close_partial(partial: Path) -> None:
    """Remove the chunk files and manifest once the run's outputs are complete."""
    shutil.rmtree(partial / "chunks", ignore_errors=True)
    (partial / MANIFEST).unlink(missing_ok=True)
