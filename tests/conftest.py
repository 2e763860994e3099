"""Test configuration shared by every test module.

- float64 everywhere (the engine's default precision; tolerances below assume it);
- implicit rank promotion is an error, so a silently broadcast `(n,)` against `(n, 1)`
  fails loudly instead of producing an `(n, n)` array;
- JAX's persistent compilation cache lives in `.jax_cache/` at the repository root
  (gitignored), so a second run of the suite skips most XLA compilation;
- `getkey` hands out fresh, reproducible PRNG keys;
- `compile_log` records every XLA compilation inside a `with` block (to check that
  something did *not* compile);
- `PK_PATHS` / `solver_options(pk, ...)`: the two ways a linear PK model is solved
  (closed form, the default, and the diffrax ODE reference path), for parametrizing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
from pathlib import Path

import jax
import jax.random as jr
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_compilation_cache_dir", str(REPO_ROOT / ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import vtrial  # noqa: E402  (after the configuration above)

_HAS_PK_OPTION = "pk" in {f.name for f in dataclasses.fields(vtrial.SolverOptions)}
#: "auto" = closed-form linear PK (the default), "ode" = integrate every state with diffrax.
PK_PATHS = ("auto", "ode") if _HAS_PK_OPTION else (None,)


def solver_options(pk: str | None, **kwargs) -> vtrial.SolverOptions:
    """`SolverOptions(pk=pk, **kwargs)`; `pk` is dropped where the engine has no such
    option (every state is then integrated, which is the "ode" path)."""
    return vtrial.SolverOptions(**kwargs, **({"pk": pk} if pk and _HAS_PK_OPTION else {}))


@pytest.fixture
def getkey():
    """`getkey()` returns a new key each call; the sequence is the same in every run."""
    counter = itertools.count()
    base = jr.PRNGKey(5678)
    return lambda: jr.fold_in(base, next(counter))


class _CompileRecorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.compiled: list[str] = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Compiling "):
            self.compiled.append(msg.split(" with ", 1)[0].removeprefix("Compiling "))


@contextlib.contextmanager
def _record_compilations():
    """`with compile_log() as compiled:` leaves the names of everything XLA compiled in
    the block (jitted functions and eager primitives alike) in the list `compiled`."""
    recorder = _CompileRecorder()
    logger = logging.getLogger("jax")
    logger.addHandler(recorder)
    try:
        with jax.log_compiles(True):
            yield recorder.compiled
    finally:
        logger.removeHandler(recorder)


@pytest.fixture
def compile_log():
    return _record_compilations
