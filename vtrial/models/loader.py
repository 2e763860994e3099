"""One way to get a model: a registry name, a `file.py:factory`, or an installed entry point.

`load_model(reference, base_dir)` resolves, in this order:
1. `"path/to/file.py:factory"` (a reference whose part before the last `:` ends in
   `.py`): the file is imported (this runs its Python, as any plugin does) and
   `factory()` is called; a relative path is taken from `base_dir` (a config's folder);
2. a name of `vtrial.models.REGISTRY` (the shipped models);
3. the name of an entry point of installed packages in the group `vtrial.models`
   (`[project.entry-points."vtrial.models"] my_pk = "my_package.models:my_pk"`), whose
   object is a factory (or a `Model`).

Whatever the source, the result is checked the same way (`check_model`): it must be a
`Model`, its vector field must give one derivative per state, and the vector field and
the observables must be finite at the typical values. A broken model raises
`SpecError("model", ...)` naming the file (or entry point), the line and the problem.

One instance per resolved reference (a file by its absolute path, factory name and
modification time), so each model compiles once per process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from importlib.metadata import entry_points
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vtrial.errors import SpecError
from vtrial.models.base import Model

#: The entry-point group installed packages add models to.
ENTRY_POINT_GROUP = "vtrial.models"

_CACHE: dict[tuple, Model] = {}
#: id(model) -> the reference that reaches it from anywhere (registry or entry-point
#: name, or the model file's absolute path and factory), for files that name it again.
_REFERENCES: dict[int, str] = {}


def is_model_file(reference: str) -> bool:
    """Whether `reference` names a model file (`file.py:factory`) rather than a name."""
    path, sep, _ = reference.rpartition(":")
    return bool(sep) and path.endswith(".py")


def load_model(reference: str, base_dir: str | Path | None = None) -> Model:
    """The `Model` that `reference` names (see the module docstring).

    **Arguments:**
    - `reference`: a registry name, `"file.py:factory"` or an entry-point name;
    - `base_dir`: the folder a relative model file is taken from (a config's folder;
      default: the current folder).

    **Raises:** `SpecError("model", ...)` for an unknown name or a broken model.
    """
    from vtrial.models import REGISTRY  # the registry imports this module's users, not this module

    if not isinstance(reference, str) or not reference.strip():
        raise SpecError("model", f"must be a model name or 'file.py:factory', got {reference!r}")
    if is_model_file(reference):
        return _load_file(reference, base_dir)
    if reference in REGISTRY:
        key = ("registry", reference)
        if key not in _CACHE:
            _CACHE[key] = _checked(_call(REGISTRY[reference], f"shipped model {reference!r}", None), f"shipped model {reference!r}")
            _REFERENCES[id(_CACHE[key])] = reference
        return _CACHE[key]
    found = [ep for ep in _entry_points() if ep.name == reference]
    if found:
        return _load_entry_point(found[0])
    known = sorted(set(REGISTRY) | {ep.name for ep in _entry_points()})
    raise SpecError("model", f"unknown model {reference!r}; known: {', '.join(known)}; or give a model file as "
                             "'file.py:factory' (a Python file whose factory() returns a vtrial.models.Model)")


def model_reference(model: Model) -> str:
    """A reference that loads `model` again from any folder: its registry or entry-point
    name, or `"/absolute/path/file.py:factory"`; the model's name when it was not loaded
    by `load_model` (a model built in Python)."""
    return _REFERENCES.get(id(model), model.name)


def available_models() -> dict[str, str]:
    """Every model a name reaches: name -> where it comes from ("shipped" or the entry point's value)."""
    from vtrial.models import REGISTRY

    out = {name: "shipped" for name in REGISTRY}
    for ep in _entry_points():
        out.setdefault(ep.name, f"entry point {ep.value}")
    return out


def _entry_points():
    return tuple(entry_points(group=ENTRY_POINT_GROUP))


def _load_entry_point(ep) -> Model:
    where = f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP}"
    key = ("entry_point", ep.name, ep.value)
    if key not in _CACHE:
        try:
            obj = ep.load()
        except Exception as e:  # the package's own import failed
            raise SpecError("model", f"{where}: could not be imported: {type(e).__name__}: {e}") from None
        model = obj if isinstance(obj, Model) else _call(obj, where, None)
        _CACHE[key] = _checked(model, where)
        _REFERENCES[id(model)] = ep.name
    return _CACHE[key]


def _load_file(reference: str, base_dir) -> Model:
    text, _, factory = reference.rpartition(":")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path(base_dir or ".") / path
    path = path.resolve()
    if not factory.isidentifier():
        raise SpecError("model", f"{reference!r}: {factory!r} is not a Python name; write 'file.py:factory'")
    if not path.is_file():
        raise SpecError("model", f"model file {path} not found (from {reference!r}"
                                 + (f", relative to {Path(base_dir).resolve()}" if base_dir and not Path(text).is_absolute() else "") + ")")
    key = ("file", str(path), factory, path.stat().st_mtime_ns)
    if key in _CACHE:
        return _CACHE[key]
    module = _import_file(path)
    if not hasattr(module, factory):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__)
        raise SpecError("model", f"{path}: has no factory {factory!r}; functions defined there: {', '.join(names) or 'none'}")
    where = f"{path}:{factory}"
    _CACHE[key] = _checked(_call(getattr(module, factory), where, path), where)
    _REFERENCES[id(_CACHE[key])] = f"{path}:{factory}"
    return _CACHE[key]


def _import_file(path: Path):
    name = "vtrial_model_file_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SpecError("model", f"{path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(name, None)
        raise SpecError("model", f"{path}, line {e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:
        sys.modules.pop(name, None)
        raise SpecError("model", f"{_where_in(e, path)}: importing the model file failed: {type(e).__name__}: {e}") from None
    return module


def _where_in(e: BaseException, path: Path | None) -> str:
    """`file, line N` of the deepest frame of the traceback inside `path` (the user's file)."""
    if path is None:
        return "model"
    line = None
    for frame in traceback.extract_tb(e.__traceback__):
        if Path(frame.filename).resolve() == path:
            line = frame.lineno
    return f"{path}, line {line}" if line is not None else str(path)


def _call(factory, where: str, path: Path | None) -> Model:
    if not callable(factory):
        raise SpecError("model", f"{where}: is not callable (a factory returning a vtrial.models.Model); got {type(factory).__name__}")
    try:
        return factory()
    except SpecError as e:  # the Model constructor's own checks: a route naming an unknown state, ...
        raise SpecError("model", f"{_where_in(e, path) if path else where}: the model is invalid: {e}") from None
    except Exception as e:
        raise SpecError("model", f"{_where_in(e, path) if path else where}: the factory raised {type(e).__name__}: {e}") from None


def _checked(model, where: str) -> Model:
    check_model(model, where)
    return model


def check_model(model, where: str = "model") -> None:
    """Checks every model passes before it is used: it is a `Model`; its vector field,
    called at the initial state and the typical values, returns one finite derivative per
    state; every observable is a finite scalar there. Raises `SpecError("model", ...)`
    naming `where` (the file, entry point or name)."""
    if not isinstance(model, Model):
        raise SpecError("model", f"{where}: must return a vtrial.models.Model, got {type(model).__name__}")
    # With the model's derived quantities (its $PK, `Model.derive`), as the solve sees them.
    p = model.typical_inputs()
    n = model.n_states

    def at_start(p):
        p = model.derive(p)
        return model.vector_field(0.0, model.initial_state(p), p, jnp.zeros(n))

    try:
        shape = jax.eval_shape(at_start, p).shape  # traced only
    except Exception as e:
        raise SpecError("model", f"{where}: the vector field fails at the typical values: {type(e).__name__}: {e}") from None
    if shape != (n,):
        raise SpecError("model", f"{where}: the vector field returns shape {shape}; it must return one derivative per state, "
                                 f"shape ({n},) for states {', '.join(model.state_names)}")

    def at(p, y):  # traced (one compilation, `Model.typical_inputs`): derivatives and observables at state y
        values = {}
        for o in model.observables:
            try:
                values[o.name] = jnp.asarray(o.fn(y, p), dtype=float)
            except Exception as e:
                raise SpecError("model", f"{where}: observable {o.name!r} fails: {type(e).__name__}: {e}") from None
            if values[o.name].shape != ():
                raise SpecError("model", f"{where}: observable {o.name!r} must be a scalar, got shape {values[o.name].shape}")
        return model.vector_field(0.0, y, p, jnp.zeros(n)), values

    def both(p):
        p = model.derive(p)
        return at(p, model.initial_state(p)), at(p, jnp.ones(n))

    # At the initial state (where every solve starts) and with every state at 1 (a state
    # the solve reaches once dosed; catches e.g. a division by a parameter that is 0).
    for label, (dy, observed) in zip(("the initial state", "every state at 1"), jax.jit(both)(p)):
        dy = np.asarray(dy, dtype=float)
        bad = np.flatnonzero(~np.isfinite(dy))
        if bad.size:
            raise SpecError("model", f"{where}: the vector field is {dy[bad[0]]} for d{model.state_names[bad[0]]}/dt at the typical "
                                     f"values and {label}")
        for o in model.observables:
            v = np.asarray(observed[o.name], dtype=float)
            if not np.isfinite(v):
                raise SpecError("model", f"{where}: observable {o.name!r} is {v} at the typical values and {label}")
