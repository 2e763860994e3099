"""Traced solves kept on disk (`jax.export`), beside JAX's persistent compilation cache.

JAX's persistent cache stores compiled executables, but finding one needs the lowered
program, so every new process first traces the solve again: for the CIA-1 model that
is most of a warm `vtrial run` (seconds of Python tracing diffrax, against a tenth of a
second of solving). Here the traced and lowered program is serialized with
`jax.export` the first time, keyed by everything the trace depends on, and later
processes deserialize it instead of tracing; compiling it then hits the persistent cache.

Keyed by: the model (shipped models, whose whole definition is vtrial's source, and model
files, by path, factory and a digest of the file's content; any other model is traced as
before), the solver options, the start time, the device
mesh and backend, which outputs are kept, the per-animal outputs computed in the solve, the shapes,
dtypes and shardings of the arguments, the versions of vtrial (a digest of its source
files), JAX, jaxlib, diffrax, equinox and lineax, and the settings that change a trace
(`vtrial.settings.trace_settings`). A stale or unreadable file is ignored and rewritten. Off when the
persistent cache is off, or with `VTRIAL_EXPORT_CACHE=0`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import weakref
from collections.abc import Callable
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import jax

from vtrial.engine.events import CovariateChanges, DoseRecords, NonmemItems
from vtrial.settings import trace_settings

FOLDER = "vtrial_exports"
#: Programs this process traced (and exported, where it could) and read from the cache:
#: a test of "no new compilation" watches `traced`.
COUNTS = {"traced": 0, "read": 0}
_LIVE: "weakref.WeakSet[Exported]" = weakref.WeakSet()



def serializable(*classes) -> None:
    """Named tuples that arguments or results of exported functions hold: their pytree
    nodes must be serializable by name (called once, where each class is defined)."""
    for cls in classes:
        jax.export.register_namedtuple_serialization(cls, serialized_name=f"{cls.__module__}.{cls.__qualname__}")


# The solve's arguments hold the dose records.
serializable(DoseRecords, NonmemItems, CovariateChanges)


@lru_cache(maxsize=1)
def _environment() -> str:
    """Versions and source digest: a change of either invalidates every entry."""
    versions = []
    for package in ("jax", "jaxlib", "diffrax", "equinox", "lineax"):
        try:
            versions.append(f"{package}={version(package)}")
        except PackageNotFoundError:
            versions.append(f"{package}=?")
    source = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        source.update(str(path.relative_to(root)).encode())
        source.update(path.read_bytes())
    return ";".join(versions) + f";vtrial={source.hexdigest()}"


def entry_path(model, key: tuple, args) -> Path | None:
    """Where the export of `model`'s function with `key` (hashable parts whose repr is
    stable across processes) for the arguments `args` lives; None when not cacheable."""
    cache_dir = jax.config.jax_compilation_cache_dir
    if not cache_dir or os.environ.get("VTRIAL_EXPORT_CACHE", "1").lower() in ("0", "off", "false", "no"):
        return None
    identity = model_identity(model)
    if identity is None:
        return None
    leaves, treedef = jax.tree_util.tree_flatten(args)
    layout = tuple((tuple(a.shape), str(a.dtype), str(getattr(getattr(a, "sharding", None), "spec", None))) for a in leaves)
    # The backend too: an export lowered for the CPU cannot run on a GPU (one device, no mesh in the key).
    material = repr((_environment(), jax.default_backend(), trace_settings(), identity, key,
                     str(treedef), layout))
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", model.name)[:60]
    return Path(cache_dir) / FOLDER / f"{stem}-{hashlib.sha256(material.encode()).hexdigest()[:40]}.jaxexport"


def model_identity(model) -> str | None:
    """What identifies `model`'s definition across processes: a shipped model's name (its
    definition is vtrial's source, in `_environment`), or a model file's path, factory and
    a digest of the file's content (`vtrial.models.loader`); None for any other model (built
    in Python, an entry point: its source is not known here, so it is never cached)."""
    from vtrial.models import REGISTRY, get_model
    from vtrial.models.loader import is_model_file, model_reference

    if model.name in REGISTRY:
        # a model built elsewhere may differ from the shipped one of that name
        return model.name if get_model(model.name) is model else None
    reference = model_reference(model)
    if not is_model_file(reference):
        return None
    path = Path(reference.rpartition(":")[0])
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
    return f"{reference}@{digest}"


def compile_exported(build: Callable[[], Callable], path: Path | None, args):
    """The jitted function that `build()` returns, compiled for `args`, through the
    export at `path`: read if there (no tracing, and `build` is never called: building a
    solve can cost model checks and compilations of its own), else traced, written and
    used (so the first and later processes compile the same program and share its
    persistent-cache entry). Without an entry path, or when the function cannot be
    exported (e.g. `flatbuffers` missing), it is traced and compiled as usual."""
    if path is None:
        COUNTS["traced"] += 1
        return build().lower(*args).compile()
    exported = None
    if path.is_file():
        try:
            exported = jax.export.deserialize(bytearray(path.read_bytes()))
        except Exception:  # written by another version, truncated: trace afresh
            exported = None
    if exported is None:
        jitted = build()
        try:
            exported = jax.export.export(jitted)(*args)
            blob = exported.serialize()
        except Exception:  # not exportable here: the usual path
            COUNTS["traced"] += 1
            return jitted.lower(*args).compile()
        COUNTS["traced"] += 1
        _write_atomic(path, blob)
    else:
        COUNTS["read"] += 1
    return jax.jit(exported.call).lower(*args).compile()


def output_shapes(build: Callable[[], Callable], path: Path | None, args):
    """The shapes and dtypes (`jax.ShapeDtypeStruct`s) of what `build()`'s function returns
    for `args`: from the export at `path` when there is one (no tracing), else traced."""
    if path is not None and path.is_file():
        try:
            exported = jax.export.deserialize(bytearray(path.read_bytes()))
            leaves = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in exported.out_avals]
            return jax.tree_util.tree_unflatten(exported.out_tree, leaves)
        except Exception:  # written by another version, truncated: trace afresh
            pass
    return jax.eval_shape(build(), *args)


def forget_compiled() -> None:
    """Drop the executables every `Exported` keeps (`vtrial.engine.runner.clear_compiled`):
    with `jax.clear_caches()` this frees their machine code."""
    for function in list(_LIVE):
        function._compiled.clear()


class Exported:
    """`jitted` (a `jax.jit` function of `model`) compiled once per argument layout (pytree
    structure, shapes, dtypes, weak types and shardings) and kept, each through
    `compile_exported` with `key` (hashable parts whose repr is stable across processes
    and that, with the model and the arguments' layout, decide the trace): a new process
    reads the traced program instead of tracing it. Called like `jitted`."""

    def __init__(self, jitted: Callable, model, key: tuple):
        self._jitted, self._model, self._key = jitted, model, key
        self._compiled: dict = {}
        # One compilation per layout when a background thread (`compile`) and the caller
        # ask for the same one at once.
        self._lock = threading.Lock()
        _LIVE.add(self)

    def __call__(self, *args):
        leaves, _ = jax.tree_util.tree_flatten(args)
        if any(isinstance(a, jax.core.Tracer) for a in leaves):
            # Called inside a transformation (e.g. vmapped over bootstrap replicates,
            # `vtrial.estimation.batched_fit`): a compiled executable cannot be
            # transformed, the jitted function can (it composes as any jax.jit).
            return self._jitted(*args)
        return self.compile(*args)(*args)

    def output_shapes(self, *args):
        """What it returns for arguments laid out as `args`, as `jax.ShapeDtypeStruct`s,
        without compiling or running it (`output_shapes`)."""
        return output_shapes(lambda: self._jitted, entry_path(self._model, self._key, args), args)

    def compile(self, *args):
        """The executable for arguments laid out as `args` (arrays or
        `jax.ShapeDtypeStruct`s; compiled, or read, once): without running it, e.g. in a
        background thread while the caller computes."""
        leaves, treedef = jax.tree_util.tree_flatten(args)
        layout = (treedef, tuple((jax.typeof(a), getattr(a, "sharding", None)) for a in leaves))
        with self._lock:
            compiled = self._compiled.get(layout)
            if compiled is None:
                path = entry_path(self._model, self._key, args)
                compiled = self._compiled[layout] = compile_exported(lambda: self._jitted, path, args)
        return compiled


def _write_atomic(path: Path, blob: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache folder: the solve still runs, it is only traced again next time
