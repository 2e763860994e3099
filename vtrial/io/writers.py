"""Atomic writers: every file is written to a temporary name in its folder, then renamed.

A crash mid-write leaves the previous file (or none), never a half-written one.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from vtrial.errors import RunWarning


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` then rename `tmp_path` onto `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    return atomic_write(path, lambda p: df.to_parquet(p, index=False))


class AtomicStream(ABC):
    """A file written piece by piece into a temporary file in the target folder, which
    `close()` renames onto `path`; on an error (or `abort()`) it is removed, so the file is
    either complete or absent. Use as a context manager. Subclasses write into `self._tmp`
    and implement `_finish()` (flush and close what they hold; raise if nothing was
    written) and `_discard()` (close without caring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self.rows = 0

    @abstractmethod
    def _finish(self) -> None:
        """Flush and close what the subclass holds; raise if nothing was written."""

    @abstractmethod
    def _discard(self) -> None:
        """Close what the subclass holds, without flushing for use."""

    def close(self) -> Path:
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        os.chmod(self._tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are ordinary files
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._discard()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


class ParquetStream(AtomicStream):
    """A Parquet file written frame by frame (one row group per `write`), for tables too
    large to hold, atomically (`AtomicStream`). The result reads back like `write_parquet`
    of the concatenated frames."""

    def __init__(self, path: str | Path):
        super().__init__(path)
        self._writer = None
        self._schema = None

    def write(self, df: pd.DataFrame) -> None:
        import pyarrow as pa

        self._write_table(pa.Table.from_pandas(df, schema=self._schema, preserve_index=False))

    def write_columns(self, columns) -> None:
        """Write a dict of equally long 1-D numpy columns (no pandas in between: cheaper for
        the large per-animal-per-time tables). Reads back like `write` of the same frame."""
        import pyarrow as pa

        arrays = [_arrow_array(v) for v in columns.values()]
        table = pa.Table.from_arrays(arrays, names=list(columns))
        if self._schema is not None:
            table = table.cast(self._schema)
        else:  # the pandas metadata lets pandas read the table back exactly as `write` would
            empty = pd.DataFrame({k: np.asarray(v[:0]) for k, v in columns.items()})
            table = table.replace_schema_metadata(pa.Schema.from_pandas(empty, preserve_index=False).metadata)
        self._write_table(table)

    def _write_table(self, table) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            self._schema = table.schema
            # Dictionary-encode the repeating columns (arm, animal, time) only: trying it on
            # the float columns triples the cost for nothing.
            keys = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
            self._writer = pq.ParquetWriter(self._tmp, self._schema, use_dictionary=keys)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def _finish(self) -> None:
        if self._writer is None:
            raise ValueError(f"{self.path}: no rows were written")
        self._writer.close()

    def _discard(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _arrow_array(values):
    import pyarrow as pa

    if isinstance(values, pd.Categorical):  # codes + names: no Python object per row
        names = pa.array(np.asarray(values.categories))
        return pa.DictionaryArray.from_arrays(pa.array(values.codes.astype(np.int32)), names).cast(names.type)
    return pa.array(np.asarray(values))


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    return atomic_write(path, lambda p: df.to_csv(p, index=False))


def write_json(obj, path: str | Path) -> Path:
    def w(p: Path):
        p.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    return atomic_write(path, w)


def preload_matplotlib() -> threading.Thread:
    """Start importing matplotlib (pyplot, Agg backend) in a background thread; returns it.

    A run calls this before its solve, so that the import (about half a CPU second)
    overlaps the loading of the compiled solve and the solve itself, which run outside
    Python's interpreter lock, instead of delaying the report figure at the end.
    `save_figure` imports it anyway: an import in progress is waited for, never repeated."""

    def load():
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401
        except Exception:  # noqa: BLE001 - it fails again, and is reported, where the figure is drawn
            pass

    thread = threading.Thread(target=load, name="vtrial-preload-matplotlib")
    thread.start()
    return thread


def save_figure(fig, path: str | Path, dpi: int = 120, *, skip: bool = False) -> Path | None:
    """Save a matplotlib figure atomically (format from the suffix of `path`) and close it;
    with `skip` (a run's `--no-figures`) draw nothing and return None.

    `fig` is a figure or a function that draws one (so that an error while drawing is
    caught too). A figure never takes a run down: when drawing or saving fails (extreme
    values can make matplotlib's tick locators fail), no file is left, a `RunWarning`
    naming the file and the error is issued (a run records it in `run.json`) and None is
    returned. Write a run's numbers before its figures."""
    if skip:
        return None
    import warnings

    import matplotlib.pyplot as plt

    fmt = Path(path).suffix.lstrip(".") or "png"
    figure = None
    try:
        figure = fig() if callable(fig) and not hasattr(fig, "savefig") else fig
        return atomic_write(path, lambda p: figure.savefig(p, dpi=dpi, format=fmt, bbox_inches="tight"))
    except Exception as e:  # noqa: BLE001 - any drawing failure becomes a warning, by design
        warnings.warn(RunWarning(f"{Path(path).name} was not drawn: {type(e).__name__}: {e}"), stacklevel=2)
        return None
    finally:
        if figure is not None:
            plt.close(figure)
