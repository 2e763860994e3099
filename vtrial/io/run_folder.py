"""The life cycle of one output folder: written hidden, moved into place whole, resumable.

A run writes into `.<name>.partial/` next to the output folder `<name>/` and renames it
onto `<name>` only when every output is complete, so a failed or interrupted run never
leaves a half-written output folder. The partial folder also holds the resume state of a
chunked run (`vtrial.io.chunks`): `manifest.json` says what the run is (config hash,
seed, animals, chunk size, options) and `chunks/` the finished chunks; `resume=True`
reuses them when the manifest matches and names every difference when it does not.

In a multi-process run only process 0 (the writer) owns the folder; the other processes
compute their share in a scratch folder that is always removed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from vtrial.errors import SpecError
from vtrial.io.chunks import ChunkStore
from vtrial.io.writers import write_json

MANIFEST = "manifest.json"


class ResumeMismatch(SpecError):
    """A partial run exists but was started with other settings."""


def output_folder(out: str | Path | None, name: str) -> Path:
    """A job's output folder: `out` (`--out`), or `runs/<name>-<YYYYmmdd-HHMMSS>` (local
    time) when none is given."""
    if out is not None:
        return Path(out)
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def partial_folder(out_dir: Path) -> Path:
    """Where a run of `out_dir` writes until it completes: `.<name>.partial` beside it."""
    return out_dir.parent / f".{out_dir.name}.partial"


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} (partial run: {a!r}, now: {b!r})")
    return out


class RunFolder:
    """One run's output folder, from creation to the final rename.

    - `RunFolder(out_dir, manifest, resume=..., writer=...)` checks that `out_dir` is new
      (or empty) and prepares the partial folder: fresh, or (with `resume`) the matching
      one of an interrupted run. Raises `SpecError` / `ResumeMismatch` otherwise.
    - `path`: the folder to write outputs into; `store`: the chunk store (None for
      folders without chunks); `resumed_chunks`: chunks found finished.
    - `commit(run_info)` writes `run.json` and moves the folder into place;
      `discard()` removes it; `keep_for_resume()` keeps only what a resume needs.
    """

    def __init__(self, out_dir: str | Path, manifest: dict | None = None, *, resume: bool = False, writer: bool = True,
                 chunks: bool = True):
        self.out_dir = Path(out_dir)
        self.writer = writer
        self.store: ChunkStore | None = None
        self.resumed_chunks = 0
        if not writer:  # another process of a multi-process run: scratch space only
            self.path = Path(tempfile.mkdtemp(prefix="vtrial-process-"))
            return
        self.path = partial_folder(self.out_dir)
        if self.out_dir.exists() and (not self.out_dir.is_dir() or any(self.out_dir.iterdir())):
            raise SpecError("--out", f"folder {self.out_dir} exists and is not empty; choose another")
        manifest = json.loads(json.dumps(manifest or {}, sort_keys=True, default=str))
        if resume and (self.path / MANIFEST).is_file():
            self._reopen(manifest)
        else:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir(parents=True)
            write_json(manifest, self.path / MANIFEST)
            if chunks:
                self.store = ChunkStore(self.path / "chunks")
                self.store.folder.mkdir()

    def _reopen(self, manifest: dict) -> None:
        path = self.path / MANIFEST
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ResumeMismatch("--resume", f"{path} cannot be read ({e}); remove {self.path} to start afresh") from None
        diff = _differences(old, manifest)
        if diff:
            raise ResumeMismatch(
                "--resume",
                f"the partial run in {self.path} was started with other settings: {'; '.join(diff)}. "
                "Run with the same settings, or without --resume to start afresh",
            )
        for leftover in self.path.iterdir():  # half-written outputs of the interrupted attempt
            if leftover.name not in (MANIFEST, "chunks"):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        self.store = ChunkStore(self.path / "chunks")
        self.store.folder.mkdir(exist_ok=True)
        for leftover in self.store.folder.glob("*.tmp"):
            leftover.unlink()
        self.resumed_chunks = len(self.store.finished())

    def commit(self, run_info: dict | None = None) -> Path | None:
        """Write `run.json` (when given), drop the resume state and move the folder into
        place; returns the output folder (None on processes that write nothing)."""
        if not self.writer:
            self.discard()
            return None
        shutil.rmtree(self.path / "chunks", ignore_errors=True)
        (self.path / MANIFEST).unlink(missing_ok=True)
        if run_info is not None:
            write_json(run_info, self.path / "run.json")
        if self.out_dir.exists():
            self.out_dir.rmdir()  # checked empty at the start
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.path.rename(self.out_dir)
        return self.out_dir

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def keep_for_resume(self) -> int:
        """After an interruption: keep the finished chunks (returns how many) or, when there
        are none, remove the folder (returns 0)."""
        n = len(self.store.finished()) if (self.writer and self.store is not None) else 0
        if n == 0:
            self.discard()
        return n
