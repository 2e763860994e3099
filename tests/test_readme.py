"""Every code block and command of README.md runs, at small sizes, so the documentation
cannot drift from the code (and a fresh clone needs nothing but the repository).

How the README is run, as a reader who follows it from the top would:
- Blocks run in README order in one scratch folder (`workspace`), where `configs/` and
  `examples/` link to the repository's, so a block may use what an earlier one wrote
  (the quick start's `study.csv`).
- ```bash blocks: every command (continuation lines joined, comments dropped, `&&`
  chains split) that starts with `vtrial` runs in-process through the CLI (typer's
  CliRunner) and must exit 0. `pip install ...` and `python -m pytest` (installing, and
  running this very suite) are not run. Sizes: a `vtrial run` gets at most
  `MAX_ANIMALS_PER_ARM` animals per arm (`--animals-per-arm` lowered, or added unless the
  run is `--typical`); blocks of three or more runs, or on reference data, are marked
  slow. Arguments under `../shared/` are reference data outside the
  repository: the command runs when they exist (`conftest.shared_data`: skipped otherwise,
  a failure with CI=true). Commands with an option of `PARSED_ONLY` are parsed, not run.
- ```toml blocks must parse; plain, text and output blocks are only shown.
- ```python blocks: each runs in a fresh namespace after the text replacements of
  `PYTHON_SIZES` (exact README text -> smaller size); every replacement must still match
  the README, so a stale entry fails instead of silently running the full size.
- Inline commands in the text (`` `vtrial ...` ``): a concrete one is parsed by the CLI and
  the files it names under configs/ and examples/ exist; a synopsis (`CONFIG`, `[--out DIR]`)
  names only options its command has.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import typer.main
from typer.testing import CliRunner

from vtrial.cli import app

from conftest import REPO_ROOT, shared_data, shared_dir

README = REPO_ROOT / "README.md"
MAX_ANIMALS_PER_ARM = 6
#: Options that make a command unrunnable on one machine: parsed, not run (the reason).
PARSED_ONLY = {"--coordinator": "a multi-host run (JAX's distributed runtime on several hosts)"}
#: Commands of bash blocks that are not vtrial commands and are deliberately not run:
#: installing, this very suite, and the benchmarks (minutes each; tests/test_benchmarks.py
#: runs every script with --quick).
NOT_VTRIAL = ("pip install", "python -m pytest", "python benchmarks/", "apt-get install")
#: Fenced blocks by language: run (bash, python), parsed (toml: a config snippet must be
#: valid TOML), or only shown (output, plain text).
RUN, PARSED, SHOWN = ("bash", "python"), ("toml",), ("", "text", "console", "output")
#: Python blocks at small sizes: README text -> what runs instead (each must occur).
PYTHON_SIZES = {
    "n_animals=500, seed=1": "n_animals=20, seed=1",
    "grid_points=40": "grid_points=4",
    "n_animals=1000, seed=1": "n_animals=20, seed=1",
    "animals_per_arm=[5, 10, 20, 40])": "animals_per_arm=[3, 5], replicates=20)",
}


def fenced_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number, language, body) of every fenced block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if m:
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            blocks.append((i + 1, m.group(1), "\n".join(lines[i + 1:j])))
            i = j
        i += 1
    return blocks


def bash_commands(body: str) -> list[list[str]]:
    """Each command of a bash block as its argument list."""
    commands = []
    for line in body.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:cut])
            words = words[cut + 1:]
    return commands


BLOCKS = fenced_blocks(README.read_text())
CLI = typer.main.get_command(app)
runner = CliRunner()


def parse(args: list[str]):
    """Parse `vtrial ARGS` as the CLI would (command, options, their types), running nothing."""
    name, command, rest = CLI.resolve_command(CLI.make_context("vtrial", list(args), resilient_parsing=True), list(args))
    return command.make_context(name, rest)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    for name in ("configs", "examples", "benchmarks"):
        (folder / name).symlink_to(REPO_ROOT / name, target_is_directory=True)
    return folder


def test_the_readme_has_runnable_blocks():
    unknown = {lang for _, lang, _ in BLOCKS} - set(RUN + PARSED + SHOWN)
    assert not unknown, f"blocks in {unknown}: run, parse or show them (RUN, PARSED, SHOWN)"
    assert {lang for _, lang, _ in BLOCKS} >= set(RUN)
    text = README.read_text()
    for old in PYTHON_SIZES:
        assert old in text, f"PYTHON_SIZES entry {old!r} no longer matches the README (stale: update or remove it)"


def small(args: list[str]) -> list[str]:
    """A `vtrial run` at most MAX_ANIMALS_PER_ARM animals per arm; ../shared/ paths resolved."""
    args = list(args)
    for i, a in enumerate(args):
        if a.startswith("../shared/"):
            shared_data(a.removeprefix("../shared/"))
            args[i] = str(shared_dir() / a.removeprefix("../shared/"))
    if args[0] == "run":
        if "--animals-per-arm" in args:
            k = args.index("--animals-per-arm") + 1
            args[k] = str(min(int(args[k]), MAX_ANIMALS_PER_ARM))
        elif "--typical" not in args:
            args += ["--animals-per-arm", "2"]
    return args


#: Blocks whose commands a dedicated test runs end to end, at sizes chosen for them: here
#: they are parsed (commands and options exist) but not run twice. The tutorial's fit needs
#: more animals than this file's size cap gives for its covariance step to succeed.
RUN_ELSEWHERE = {"examples/my_fit.toml": "tests/test_tutorial_own_model.py::test_tutorial_steps"}


def _run_elsewhere(body: str) -> str | None:
    return next((test for needle, test in RUN_ELSEWHERE.items() if needle in body), None)


def _marks(lang: str, body: str):
    """Blocks that compile several models, or fit a reference dataset, take minutes: slow."""
    commands = bash_commands(body) if lang == "bash" else []
    runs = [c for c in commands if (c[:1] == ["vtrial"] or c[:3] == ["python", "-m", "vtrial"])
            and not any(o in c for o in PARSED_ONLY)]
    if _run_elsewhere(body):
        return []
    return [pytest.mark.long] if len(runs) >= 3 or any(a.startswith("../shared/") for c in runs for a in c) else []


@pytest.mark.parametrize("line, lang, body", [pytest.param(n, lang, body, marks=_marks(lang, body), id=f"README.md:{n}-{lang}")
                                              for n, lang, body in BLOCKS])
def test_block_runs(line, lang, body, workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    if lang in SHOWN:
        return
    if lang in PARSED:
        tomllib.loads(body)
        return
    if lang == "python":
        code = body
        for old, new in PYTHON_SIZES.items():
            code = code.replace(old, new)
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
        return
    for words in bash_commands(body):
        command = " ".join(words)
        if command.startswith(NOT_VTRIAL):
            continue
        if words[:3] == ["python", "-m", "vtrial"]:
            words = ["vtrial", *words[3:]]
        assert words[0] == "vtrial", f"README.md:{line}: {command!r} is not a vtrial command (add it to NOT_VTRIAL?)"
        parse(words[1:])
        if any(option in words for option in PARSED_ONLY) or _run_elsewhere(body):
            continue
        result = runner.invoke(app, small(words[1:]), catch_exceptions=False)
        assert result.exit_code == 0, f"README.md:{line}: {command}\n{result.output}"


def test_the_quick_start_fit_finds_the_simulated_values(workspace):
    """The quick start's claim: with 6 rats per arm the 95% intervals cover the values the
    study was simulated with (configs/oral_pk_study.toml)."""
    table = pd.read_csv(workspace / "fit" / "parameters.csv").set_index("name")
    for name, value in {"ka": 1.2, "cl": 0.3, "v": 2.0}.items():
        assert table.loc[name, "ci_low"] <= value <= table.loc[name, "ci_high"], name


INLINE = re.compile(r"`(vtrial (?:run|check|fit|fit-curve|calibrate|optimize|power|model|predict)\b[^`]*)`")


@pytest.mark.parametrize("span", sorted({" ".join(m.split()) for m in INLINE.findall(README.read_text())}))
def test_inline_command_parses(span):
    words = span.split()[1:]
    synopsis = len(words) == 1 or words[-1] == "--help" or any(w.startswith("[") or "|" in w or re.sub(r"\.\w+$", "", w).isupper() for w in words)
    if synopsis:  # a command's name or its usage: the command and every option named exist
        command = CLI.get_command(CLI.make_context("vtrial", [words[0]], resilient_parsing=True), words[0])
        assert command is not None, f"{span}: no command {words[0]!r}"
        known = {o for p in command.get_params(CLI.make_context("vtrial", [words[0]], resilient_parsing=True))
                 for o in (*p.opts, *p.secondary_opts)}  # --help included
        named = {m for w in words for m in re.findall(r"--[a-z][a-z0-9-]*", w)}
        assert named <= known, f"{span}: options {sorted(named - known)} do not exist"
        return
    parse(words)
    for w in words:
        if w.startswith(("configs/", "examples/")):
            assert (REPO_ROOT / w).is_file(), f"{span}: {w} does not exist"


def test_shared_data_skips_without_the_data_and_fails_in_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("VTRIAL_SHARED_DIR", str(tmp_path))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "here.csv").write_text("x\n")
    assert shared_data("data/here.csv") == tmp_path / "data" / "here.csv"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not present"):
        shared_data("data/absent.csv")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        shared_data("data/absent.csv")
