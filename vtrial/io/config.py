"""Reading config files: TOML (data only, never evaluated) validated by pydantic.

The only place strings become objects. Every problem is reported as a `SpecError`
naming the dotted field path, before any JAX work starts.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, PrivateAttr, ValidationError, ValidationInfo, model_validator

from vtrial.errors import SpecError
from vtrial.io.writers import atomic_write
from vtrial.models import Model, load_model
from vtrial.schema import Strict as Strict


class NamesModel(Strict):
    """A config with a `model` key: a registry name, an entry point, or `"file.py:factory"`
    relative to the config file's folder. The config keeps the reference as written; the
    folder it was read from is kept beside it (set by `validate`) and `load_model()`
    resolves the reference against it (`vtrial.models.loader.load_model`)."""

    model: str
    _config_folder: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _keep_config_folder(self, info: ValidationInfo):
        folder = (info.context or {}).get("config_folder")
        if folder is not None:
            self._config_folder = Path(folder)
        return self

    def load_model(self) -> Model:
        """The model `model` names (a model file relative to the config's folder)."""
        return load_model(self.model, self._config_folder)


def read_toml(path: str | Path) -> tuple[dict[str, Any], str]:
    """Parse a TOML file; returns (data, sha256 of its bytes)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(str(path), "config file not found")
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(str(path), f"not valid TOML: {e}") from None
    return data, hashlib.sha256(raw).hexdigest()


_KEY_FIRST = re.compile(r"^(?:Value error, )?(?P<key>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*): (?P<msg>.+)$", re.DOTALL)


def _input_path(loc, data) -> list[str]:
    """`loc` as a path through the input: the tag pydantic adds for a tagged union (the
    `bolus` of `arms.0.doses.0.bolus.count`, the value of the table's `type`) is no key of
    the config and is dropped."""
    out, node = [], data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part in [v for v in node.values() if isinstance(v, str)]:
            continue  # a union tag
        else:
            node = None
        out.append(str(part))
    return out


def _problems(err: ValidationError, data=None) -> list[tuple[str, str]]:
    """(dotted key, message) per problem. A check of a whole table reports at the table;
    when its message starts with the key it is about (`readout_times_h.1: ...`), that
    key is the location instead."""
    out = []
    for e in err.errors():
        loc = _input_path(e["loc"], data) if data is not None else [str(x) for x in e["loc"]]
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the shipped configs for the allowed keys)"
        elif e["type"] == "missing":
            msg = "missing: this key is required"
        elif (m := _KEY_FIRST.match(msg)) and e["type"] == "value_error":
            loc, msg = [*loc, m.group("key")], m.group("msg")
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        if e["type"] in ("float_type", "int_type", "bool_type", "string_type") and "input" in e:
            msg = f"{msg}, got {e['input']!r}"
        out.append((".".join(loc) or "(top level)", msg))
    return out


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: `dotted.path: message`."""
    return "\n".join(f"{loc}: {msg}" for loc, msg in _problems(err))


def validate(schema: type[BaseModel], data: dict[str, Any], config_folder: str | Path | None = None) -> BaseModel:
    """Validate `data` against `schema`, raising `SpecError` with every field named.
    `config_folder`: the folder of the config file, which file references in it (a
    `model = "file.py:factory"`) are relative to (default: the current folder)."""
    try:
        return schema.model_validate(data, context={"config_folder": config_folder})
    except ValidationError as e:
        problems = _problems(e, data)
        field = problems[0][0] if problems[0][0] != "(top level)" else "config"
        raise SpecError(field, "invalid config\n" + "\n".join(f"{loc}: {msg}" for loc, msg in problems)) from None


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def write_calibrated_value(path: str | Path, parameter: str, value: float) -> str:
    """Replace `parameter = <number>` in the `[parameters]` table of the TOML file at `path`.

    Only the number changes: the key, its comment and every other line stay as written.
    The file is rewritten atomically. Returns the new text. **Raises** `SpecError` if
    the line is not found exactly once.
    """
    path = Path(path)
    text = path.read_text()
    section = re.search(r"^\[parameters\][^\n]*\n(?P<body>(?:(?!^\[).*\n?)*)", text, flags=re.MULTILINE)
    if section is None:
        raise SpecError(str(path), "no [parameters] table to write the calibrated value into")
    body = section.group("body")
    pattern = re.compile(rf"^(?P<key>{re.escape(parameter)}\s*=\s*){_NUMBER}", flags=re.MULTILINE)
    if len(pattern.findall(body)) != 1:
        raise SpecError(f"{path}: parameters.{parameter}", "expected exactly one line `name = number` to update")
    new_body = pattern.sub(lambda m: f"{m.group('key')}{value:.6g}", body)
    new_text = text[: section.start("body")] + new_body + text[section.end("body"):]
    atomic_write(path, lambda p: p.write_text(new_text))
    return new_text
