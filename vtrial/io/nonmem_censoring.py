"""Censored observations in a NONMEM-style dataset (`vtrial.io.nonmem.read_nonmem`).

Which observation rows (EVID 0, MDV 0) are censored, and at which limit:

| column | meaning |
|---|---|
| `CENS` | NONMEM/nlmixr2/Monolix convention: 1 = below the lower limit of quantification (BLQ), DV holds that limit (LLOQ); -1 = above an upper limit, DV holds it; 0 or "." = quantified |
| `BLQ` | 1 = below the limit (as CENS = 1), 0 or "." = quantified; the limit is the row's `LLOQ` when the dataset has that column, else its DV |
| `LLOQ` | the row's lower limit of quantification; without `CENS`/`BLQ`, a row is BLQ when its DV is below its LLOQ (DV < LLOQ) or its DV is missing ("." with MDV 0) and LLOQ is given; a DV equal to LLOQ is quantified. With `CENS`, a CENS = 1 row with a missing DV takes its LLOQ |

A row with MDV = 1 is no observation and never censored (NONMEM's M3 needs MDV = 0 on
the BLQ rows). Which likelihood a fit gives the censored rows is its
`[estimation] censoring` (`vtrial.estimation.censoring`).
"""

from __future__ import annotations

import numpy as np

#: Columns that mark censored observations (`censored_observations`).
CENSORING_COLUMNS = ("CENS", "BLQ", "LLOQ")


def censored_observations(t, is_obs: np.ndarray, dv: np.ndarray, dv_missing: np.ndarray):
    """Per row of the table `t` (`vtrial.io.nonmem._Table`): `cens` (1 below a lower
    limit, -1 above an upper one, 0 quantified or no observation) and the DV with each
    censored row's limit, its missing flags updated (module docstring).

    **Raises:** `DatasetError` naming the row and column of a bad flag or a censored row
    without a limit."""
    cens = np.zeros(t.n, np.int64)
    if not any(t.has(c) for c in CENSORING_COLUMNS):
        return cens, dv, dv_missing
    if t.has("CENS") and t.has("BLQ"):
        raise t.error(None, "BLQ", "the dataset has both CENS and BLQ columns; give one (CENS: 1 below the limit in DV, "
                                   "-1 above an upper limit)")
    lloq, lloq_missing = t.numbers("LLOQ")
    dv, dv_missing = dv.copy(), dv_missing.copy()
    flag = "CENS" if t.has("CENS") else "BLQ" if t.has("BLQ") else None
    if flag is not None:
        values, missing = t.numbers(flag, 0.0)
        allowed = (-1.0, 0.0, 1.0) if flag == "CENS" else (0.0, 1.0)
        bad = np.flatnonzero(is_obs & ~missing & ~np.isin(values, allowed))
        if bad.size:
            what = "1 (below the limit in DV), -1 (above an upper limit in DV) or 0" if flag == "CENS" else "1 (below the limit) or 0"
            raise t.error(bad[0], flag, f"{values[bad[0]]:g} is not a censoring flag; give {what}")
        cens = np.where(is_obs, values, 0.0).astype(np.int64)
        # BLQ rows: the limit is LLOQ when given; CENS rows: DV, or LLOQ when DV is missing.
        take_lloq = (cens == 1) & ~lloq_missing & (dv_missing if flag == "CENS" else True)
    else:
        take_lloq = is_obs & ~lloq_missing & (dv_missing | (dv < lloq))
        cens = take_lloq.astype(np.int64)
    dv[take_lloq] = lloq[take_lloq]
    dv_missing = dv_missing & ~take_lloq
    bad = np.flatnonzero((cens != 0) & dv_missing)
    if bad.size:
        raise t.error(bad[0], "DV", f"a censored row ({flag} = {cens[bad[0]]}) needs its limit of quantification in DV "
                                    "(or in an LLOQ column)")
    return cens, dv, dv_missing
