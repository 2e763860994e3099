"""The base of every config schema (pydantic), shared by the job configs and the assay designs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors, values are never coerced (`"1"`, `true` or `1.5` are no
    whole numbers; `"1"` and `true` are no numbers), every number is finite (no `nan` or
    `inf`), and the model is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
