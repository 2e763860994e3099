"""`calibrate_config`: re-run the calibration of a functional assay config (`vtrial calibrate`)."""

from __future__ import annotations

from pathlib import Path

from vtrial.assays.calibration import CalibrationResult, calibrate
from vtrial.assays.specs import FunctionalSpec
from vtrial.errors import SpecError
from vtrial.io.config import read_toml, validate


def calibrate_config(path: str | Path) -> CalibrationResult:
    """Calibrate the `[calibration]` parameter of the `functional_neutralisation` config at
    `path` to its target IC50 (the config is not changed; see `write_calibrated_value`)."""
    data, _ = read_toml(path)
    kind = data.pop("kind", None)
    if kind != "functional_neutralisation":
        raise SpecError("kind", f"{kind!r} has nothing to calibrate; calibration applies to "
                                "kind = \"functional_neutralisation\" configs")
    return calibrate(validate(FunctionalSpec, data))
