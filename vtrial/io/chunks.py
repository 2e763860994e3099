"""Finished chunks of a resumable run (the partial folder and its manifest: `vtrial.io.run_folder`).

A run's hidden `.<out>.partial/chunks/` folder holds `chunk_<index>.npz`, one file per
finished chunk, each written to a temporary name and renamed into place, so a
file that exists is complete whenever the run is killed. Files are plain `.npz`
(read with `allow_pickle=False`; nothing is ever pickled).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from vtrial.errors import SpecError
from vtrial.io.writers import atomic_write
from vtrial.engine.runner import ChunkResult

_NAME = re.compile(r"^chunk_(\d+)\.npz$")


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
            **{f"extra:{name}": v for name, v in result.extras.items()},
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
                extras = {k.removeprefix("extra:"): z[k] for k in z.files if k.startswith("extra:")}
                return ChunkResult(
                    index=int(z["index"]),
                    animals=z["animals"],
                    observables=obs,
                    status=z["status"],
                    n_steps=z["n_steps"],
                    lockstep_steps=int(z["lockstep_steps"]),
                    states=z["states"] if "states" in z.files else None,
                    resumed=True,
                    extras=extras,
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise SpecError("--resume", f"{path} cannot be read ({e}); run without --resume to start afresh") from None
