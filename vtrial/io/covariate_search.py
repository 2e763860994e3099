"""Schema of a fit config's `[covariate_search]` (`vtrial covariates`), and TOML text of a
config table (the search writes its final model as a fit config).

```toml
[covariate_search]
forward_p = 0.05     # forward inclusion: dOFV above the chi-square quantile (3.84 for 1 df)
backward_p = 0.01    # backward elimination: kept if removing it raises the OFV by more (6.63)

[[covariate_search.candidates]]
parameter = "cl"         # an estimated typical value of [parameters]
covariate = "wgt"        # a covariate of the model, mapped in [data.covariates]
shape = "power"          # power, linear, exponential or categorical
# reference = 1.3        # default: the covariate's median (categorical: its most common value)
# below = true           # categorical only: the effect applies where covariate < reference
```
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from vtrial.errors import SpecError
from vtrial.io.config import Strict


class CandidateSpec(Strict):
    parameter: str
    covariate: str
    shape: Literal["power", "linear", "exponential", "categorical"] = "power"
    reference: float | None = None
    below: bool = False

    @model_validator(mode="after")
    def _below(self):
        if self.below and (self.shape != "categorical" or self.reference is None):
            raise ValueError("below = true applies to a categorical candidate with its reference (the cut-off) given")
        if self.shape == "power" and self.reference is not None and not self.reference > 0:
            raise ValueError("a power effect's reference must be > 0")
        return self

    @property
    def label(self) -> str:
        """`<parameter>-<covariate>-<shape>` (`<5` appended for a categorical below 5)."""
        return f"{self.parameter}-{self.covariate}-{self.shape}" + (f"<{self.reference:g}" if self.below else "")


class CovariateSearchSpec(Strict):
    candidates: Annotated[list[CandidateSpec], Field(min_length=1)]
    forward_p: Annotated[float, Field(gt=0, lt=1)] = 0.05
    backward_p: Annotated[float, Field(gt=0, lt=1)] = 0.01


def check_candidates(search: CovariateSearchSpec | None, model, typical, fixed, effects) -> None:
    """Every candidate names an estimated typical value and a covariate of the model, once,
    and no relation the config already has (`[[covariate_effects]]`)."""
    if search is None:
        return
    seen = set()
    existing = {(e.parameter, e.covariate) for e in effects}
    for i, c in enumerate(search.candidates):
        where = f"covariate_search.candidates.{i}"
        if c.parameter not in typical or c.parameter in fixed:
            raise SpecError(f"{where}.parameter", f"{c.parameter!r} is not an estimated typical value of [parameters]; "
                                                  f"estimated: {', '.join(p for p in typical if p not in fixed)}")
        if c.covariate not in model.covariate_names:
            raise SpecError(f"{where}.covariate", f"unknown covariate {c.covariate!r}; model {model.name} has: "
                                                  f"{', '.join(model.covariate_names) or 'none'}")
        if (c.parameter, c.covariate) in existing:
            raise SpecError(f"{where}", f"{c.parameter} ~ {c.covariate} is already a [[covariate_effects]] entry of the base model")
        if c.label in seen:
            raise SpecError(f"{where}", f"candidate {c.label} is given twice")
        seen.add(c.label)


# -- TOML text -----------------------------------------------------------------------------


#: TOML's bare keys: ASCII letters, digits, `_` and `-` (anything else is quoted).
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: TOML's short escapes; other control characters get a \u escape (four hex digits).
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(s: str) -> str:
    """`s` as a TOML basic string: backslash, quote and every control character escaped
    (a newline in a description must not end the line)."""
    return '"' + "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04X}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in s) + '"'


def _key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else _string(k)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"no TOML value for {v!r}")


def toml_text(table: dict, prefix: str = "") -> str:
    """A config table (strings, numbers, booleans, lists, tables, arrays of tables) as TOML."""
    lines, tables, arrays = [], [], []
    for k, v in table.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            arrays.append((k, v))
        else:
            lines.append(f"{_key(k)} = {_value(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        name = f"{prefix}{_key(k)}"
        out += f"\n[{name}]\n" + toml_text(v, name + ".")
    for k, v in arrays:
        name = f"{prefix}{_key(k)}"
        for item in v:
            out += f"\n[[{name}]]\n" + toml_text(item, name + ".")
    return out
