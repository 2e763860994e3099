"""Reading config files: TOML (data only, never evaluated) validated by pydantic.

The only place strings become objects. Every problem is reported as a `SpecError`
naming the dotted field path, before any JAX work starts.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from vtrial.errors import SpecError


class Strict(BaseModel):
    """Base of every config schema: unknown keys are errors, values are not coerced silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
