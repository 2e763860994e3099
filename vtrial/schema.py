"""The base of every config schema (pydantic), shared by the job configs and the assay designs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors and the model is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
