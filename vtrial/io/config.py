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

from pydantic import BaseModel, ValidationError

from vtrial.errors import SpecError
from vtrial.io.writers import atomic_write
from vtrial.schema import Strict as Strict


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


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: `dotted.path: message` (pydantic's own text)."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the shipped configs for the allowed keys)"
        lines.append(f"{loc}: {msg}")
    return "\n".join(lines)


def validate(schema: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """Validate `data` against `schema`, raising `SpecError` with every field named."""
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(x) for x in first["loc"]) or "config"
        raise SpecError(field, "invalid config\n" + format_validation_error(e)) from None


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
