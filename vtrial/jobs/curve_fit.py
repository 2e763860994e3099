"""`fit_curve_file`: a four-parameter logistic fit of a user's concentration-response file,
written to one output folder (`curve_fit.csv`, `curve_fit.png`), as `vtrial fit-curve` does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vtrial.assays.common import curve_table, fit_logistic4_scaled, fit_rows, goodness_of_fit_rows, value_row
from vtrial.errors import SpecError
from vtrial.estimation.curvefit import cheng_prusoff_ki, curve_fit_figure
from vtrial.estimation.least_squares import FitResult
from vtrial.io.run_folder import RunFolder, output_folder
from vtrial.io.tables import load_concentration_response
from vtrial.io.writers import save_figure, write_csv
from vtrial.units import concentration_to_nm_factor


@dataclass(frozen=True)
class CurveFitRecord:
    """What `fit_curve_file` wrote: the folder, the table of `curve_fit.csv`, the fit itself,
    the data's concentration unit and number of points."""

    out_dir: Path
    table: pd.DataFrame
    fit: FitResult
    conc_unit: str
    n_points: int


def fit_curve_file(
    data: str | Path, *, out: str | Path | None = None, ligand_nm: float | None = None, kd_nm: float | None = None,
    mw_kda: float | None = None,
) -> CurveFitRecord:
    """Fit a 4PL to `data` (columns `concentration_<unit>`, `response`, optional
    `replicate`); with `ligand_nm` and `kd_nm` also the Cheng-Prusoff Ki (nM; mass
    concentrations need `mw_kda`). Writes `curve_fit.csv` and `curve_fit.png` into `out`
    (default `runs/fit-curve-<data>-<timestamp>`), all or nothing.

    **Raises:** `SpecError`/`DataError` naming the option, file, column or row."""
    data = Path(data)
    if (ligand_nm is None) != (kd_nm is None):
        raise SpecError("--ligand-nm/--kd-nm", "give both (ligand concentration and its KD, nM) or neither")
    for name, v, lowest in (("--ligand-nm", ligand_nm, 0.0), ("--kd-nm", kd_nm, None), ("--mw-kda", mw_kda, None)):
        if v is not None and not (v >= lowest if lowest is not None else v > 0):
            raise SpecError(name, f"must be {'>= 0' if lowest is not None else '> 0'}, got {v}")
    frame, unit = load_concentration_response(data)
    conc, response = frame["concentration"].to_numpy(), frame["response"].to_numpy()
    fit = fit_logistic4_scaled(conc, response, conc_unit=unit)
    parts = [fit_rows(fit, "4pl"), goodness_of_fit_rows(fit, response, "")]
    if ligand_nm is not None:
        f = concentration_to_nm_factor(unit, mw_kda)
        cp = cheng_prusoff_ki(fit.estimates["ic50"] * f, ligand_nm, kd_nm, ic50_se=fit.se["ic50"] * f,
                              ic50_ci=(fit.ci_low["ic50"] * f, fit.ci_high["ic50"] * f))
        parts.append(value_row("ki_cheng_prusoff", cp.ki, "nM", "cheng_prusoff",
                               f"IC50/(1 + L/KD), L = {ligand_nm:g} nM, KD = {kd_nm:g} nM; assumes equilibrium and "
                               "negligible depletion (use the full model of `vtrial run` when they fail)",
                               cp.se, (cp.ci_low, cp.ci_high)))
    table = curve_table(parts)
    out_dir = output_folder(out, f"fit-curve-{data.stem}")
    folder = RunFolder(out_dir, chunks=False)
    try:
        write_csv(table, folder.path / "curve_fit.csv")
        save_figure(lambda: curve_fit_figure(conc, response, fit, conc_unit=unit, title=f"{data.name}: 4PL fit"), folder.path / "curve_fit.png")
    except BaseException:
        folder.discard()
        raise
    folder.commit()
    return CurveFitRecord(out_dir, table, fit, unit, fit.n_obs)
