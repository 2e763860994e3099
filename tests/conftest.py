"""Test configuration shared by every test module.

- float64 everywhere (the engine's default precision; tolerances below assume it);
- implicit rank promotion is an error, so a silently broadcast `(n,)` against `(n, 1)`
  fails loudly instead of producing an `(n, n)` array;
- JAX's persistent compilation cache lives in `.jax_cache/` at the repository root
  (gitignored), so a second run of the suite skips most XLA compilation;
- compiled code is freed after every module (see `_free_compiled_code`);
- `getkey` hands out fresh, reproducible PRNG keys;
- `compile_log` records every XLA compilation inside a `with` block (to check that
  something did *not* compile);
- `PK_PATHS` / `solver_options(path, ...)`: the ways a linear PK model is solved, for
  parametrizing: closed-form PK (the default, events as jumps of one solve), the
  diffrax ODE reference path (one solve per event segment), and the ODE path with
  events as jumps of one solve;
- `shared_data(relative)`: reference data kept outside the repository (public datasets,
  model cards, the seed in `../shared/`): the path, or the test skips saying what is
  missing, or fails when `CI=true` (CI has the data, so nothing is skipped silently there);
- `trial_config(path)`: a trial config file validated as a `TrialConfig`;
- `by_arm(result)`: a simulation's observables split by arm;
- `free_port()`: a free TCP port on this machine (a multi-process run's coordinator);
- `assert_run_refuses_edit(tmp_path, config, old, new, field)`: `vtrial run` of a config
  with one edit exits 2 naming the field and writes nothing.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import os
import socket
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



def shared_dir() -> Path:
    """Where the reference data outside the repository live: `$VTRIAL_SHARED_DIR`, or
    `shared/` next to the repository (`../shared` from its root)."""
    return Path(os.environ.get("VTRIAL_SHARED_DIR") or REPO_ROOT.parent / "shared")


def shared_data(relative: str | os.PathLike) -> Path:
    """The path of `relative` (e.g. "data/bolus_2cpt/bolus_2cpt_nonmem.csv") under
    `shared_dir()`, if it exists. Otherwise the calling test (or fixture) is skipped with
    the reason, and fails instead when the environment says `CI=true`: a fresh clone
    passes without the data, and CI, which has them, never skips a reference test."""
    path = shared_dir() / relative
    if path.exists():
        return path
    reason = (f"reference data {path} not present (public data kept outside the repository, "
              "see README 'Reference datasets'; set VTRIAL_SHARED_DIR to their folder)")
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.skip(reason)


def trial_config(path: str | os.PathLike):
    """The trial config at `path` (`kind = "trial"`) validated as a `TrialConfig`."""
    from vtrial.io.config import read_toml, validate
    from vtrial.io.trial_config import TrialConfig

    data, _ = read_toml(path)
    data.pop("kind")
    return validate(TrialConfig, data)


def by_arm(result, values=None) -> dict:
    """`{arm: {name: its animals' rows}}` of a simulation result's observables (or of
    `values`, e.g. `result.noisy`), the arms in the order of the animals table."""
    arms = result.animals["arm"].to_numpy()
    values = result.solution.observables if values is None else values
    return {a: {k: v[arms == a] for k, v in values.items()} for a in dict.fromkeys(arms)}


def assert_control_stream_refused(path: Path, change: dict[str, str], where: str, why: str) -> None:
    """The control stream at `path` with each `old -> new` of `change` applied (each must be
    there) is refused by `vtrial import-nonmem`'s reader with `why`, naming `where`."""
    from vtrial.io.nonmem_control import read_control_stream

    text = path.read_text()
    for old, new in change.items():
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    with pytest.raises(vtrial.SpecError) as e:
        read_control_stream(path)
    assert e.value.field == where and why in e.value.problem, e.value


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the coordinator of a multi-process run)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_run_refuses_edit(tmp_path: Path, config: Path, old: str, new: str, field: str) -> None:
    """`vtrial run` of `config` with its first `old` replaced by `new` exits 2 naming
    `field`, and leaves neither its output folder nor a partial one."""
    from typer.testing import CliRunner

    from vtrial.cli import app

    text = Path(config).read_text()
    assert old in text, f"{Path(config).name} no longer holds {old!r}: update the test's edit"
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(old, new, 1))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(bad), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert field in result.output, result.output
    assert not out.exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


#: "auto" = closed-form linear PK (the default), "ode" = integrate every state with
#: diffrax, one solve per event segment; "ode-jumps" = the same in one solve per animal.
PK_PATHS = ("auto", "ode", "ode-jumps")
#: The same, with the all-ODE paths marked `long`: for test modules whose every test repeats
#: per path (jit/vmap/grad, chunking), the default run checks the default path and CI's
#: long step the ODE reference paths (which tests/test_pk_analytic.py checks by default).
PK_PATHS_DEFAULT_AUTO = ("auto", *(pytest.param(p, marks=pytest.mark.long) for p in ("ode", "ode-jumps")))


def solver_options(path: str, **kwargs) -> vtrial.SolverOptions:
    """`SolverOptions(**kwargs)` on one of `PK_PATHS`."""
    if path == "ode-jumps":
        return vtrial.SolverOptions(pk="ode", events="jumps", **kwargs)
    return vtrial.SolverOptions(pk=path, **kwargs)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_code():
    """After each test module, drop every compiled executable. XLA keeps each one's machine
    code in separate memory mappings; over the whole suite (thousands of compilations)
    one process passed Linux's limit of 65,530 mappings and died inside the compiler
    (SIGABRT/SIGSEGV at about 85% of the suite). The persistent cache makes the few
    recompilations across modules cheap."""
    yield
    from vtrial.engine.runner import clear_compiled

    clear_compiled()
    jax.clear_caches()
    gc.collect()


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
