r"""Censored observations (below a lower or above an upper limit of quantification) in the
population likelihood: Beal's M3 and M4, and M1 (leaving them out).

A dataset's censored rows carry `cens` = 1 (below a lower limit, BLQ) or -1 (above an
upper limit), and their DV holds that limit (`vtrial.io.nonmem` reads `CENS`, `BLQ` and
`LLOQ` columns into `PopulationData.cens`). With $f$ the prediction, $V$ the residual
variance at $f$ and $\Phi$ the standard normal distribution function, each
observation's -2 log-likelihood term (without the $\log 2\pi$ constant) is

- `m3` (Beal 2001, method M3): a quantified row $(y - f)^2 / V + \log V$; a row below
  the limit $L$: $-2 \log \Phi((L - f)/\sqrt V)$ (the probability of being below it);
  above an upper limit $U$: $-2 \log \Phi((f - U)/\sqrt V)$;
- `m4` (Beal's M4): as M3, every row conditional on the observation being positive:
  a quantified row adds $2 \log \Phi(f/\sqrt V)$, a row below $L$ is
  $-2 \log [(\Phi((L - f)/\sqrt V) - \Phi(-f/\sqrt V)) / \Phi(f/\sqrt V)]$, one above
  $U$ is $-2 \log [\Phi((f - U)/\sqrt V) / \Phi(f/\sqrt V)]$;
- `drop` (M1): censored rows are left out of the likelihood (biased; on request only).

The terms are smooth in $f$ and enter the Laplace objective (`method = "laplace"`) like
the Gaussian ones: the EBE search and the objective use their exact first and second
derivatives (and the third, through the model's expansion, for the gradient). NONMEM
requires the Laplace method for M3/M4 (a likelihood in `$ERROR` with F_FLAG = 1): FOCE-I's
approximate Hessian is the expected information of Gaussian observations, which a
censored row is not. `resolve_censoring` therefore refuses FOCE-I, FOCE and FO with
M3/M4 and names the fix.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

from vtrial.errors import SpecError

#: `[estimation] censoring` values.
CENSORING = ("m3", "m4", "drop")
#: Methods whose objective takes M3/M4 terms exactly.
CENSORED_METHODS = ("laplace",)


def censored_rows(data) -> np.ndarray:
    """`(n_subjects, n_obs)` int: 1 below a lower limit, -1 above an upper one, 0 quantified
    (and on padding), from a `PopulationData` (all 0 when it has no `cens`)."""
    mask = np.asarray(data.obs_mask, bool)
    cens = getattr(data, "cens", None)
    if cens is None:
        return np.zeros(mask.shape, np.int64)
    return np.where(mask, np.asarray(cens, np.int64), 0)


def resolve_censoring(data, censoring: str | None, method: str) -> str:
    """The censoring a fit of `data` by `method` uses: "none" when the data have no
    censored rows, else `censoring` ("m3" when None).

    **Raises:** `SpecError` for an unknown value, and for M3/M4 with a method other than
    Laplace (naming both fixes)."""
    if censoring is not None and censoring not in CENSORING:
        raise SpecError("estimation.censoring", f"unknown censoring {censoring!r}; allowed: {', '.join(CENSORING)}")
    n = int(np.sum(censored_rows(data) != 0))
    if n == 0:
        return "none"
    chosen = censoring or "m3"
    if chosen != "drop" and method not in CENSORED_METHODS:
        raise SpecError(
            "estimation.method",
            f"the dataset has {n} censored observation(s) (CENS/BLQ/LLOQ) and censoring {chosen!r} (Beal's "
            f"{chosen.upper()}) needs the Laplace method, as in NONMEM (method {method} approximates the Hessian by the "
            'information of uncensored Gaussian observations): set [estimation] method = "laplace" (or --method '
            'laplace), or censoring = "drop" to leave the censored rows out (M1, biased)',
        )
    if chosen == "m4":
        below = (censored_rows(data) == 1) & ~(np.asarray(data.dv, float) > 0)
        if below.any():
            i, j = np.argwhere(below)[0]
            raise SpecError("estimation.censoring", f"censoring \"m4\" conditions on positive observations: lower limits "
                                                    f"must be > 0, but ID {data.ids[i]} (row {data.obs_row[i, j]}) has "
                                                    f"{float(data.dv[i, j]):g}; use \"m3\"")
    return chosen


def drop_warning(data) -> str:
    """The warning of a fit that leaves its censored rows out (M1)."""
    n = int(np.sum(censored_rows(data) != 0))
    return (f"censoring = \"drop\": {n} censored observation(s) left out of the likelihood (M1); the estimates are biased "
            "when many observations are censored (M3 with method = \"laplace\" uses them)")


def observation_terms(dv, f, v, cens, censoring: str):
    r"""Per-observation -2 log-likelihood terms (module docstring), elementwise.

    **Arguments:** `dv` (the observation, or the limit of a censored row), `f`, `v` (> 0),
    `cens` (1, -1 or 0) of equal shapes; `censoring`: "m3" or "m4"."""
    sd = jnp.sqrt(v)
    gaussian = (dv - f) ** 2 / v + jnp.log(v)
    z = (dv - f) / sd
    below = -2.0 * log_ndtr(z)
    above = -2.0 * log_ndtr(-z)
    if censoring == "m4":
        log_positive = log_ndtr(f / sd)  # log P(y > 0)
        gaussian = gaussian + 2.0 * log_positive
        below = -2.0 * (_log_ndtr_difference(z, -f / sd) - log_positive)
        above = above + 2.0 * log_positive
    elif censoring != "m3":
        raise ValueError(censoring)
    return jnp.where(cens > 0, below, jnp.where(cens < 0, above, gaussian))


def _log_ndtr_difference(a, b):
    r"""$\log(\Phi(a) - \Phi(b))$ for $a > b$, without cancellation: in the lower tail
    from $\log\Phi$, in the upper tail from the upper tails ($\Phi(-b) - \Phi(-a)$)."""
    upper = b > 0
    hi = jnp.where(upper, -b, a)
    lo = jnp.where(upper, -a, b)
    log_hi, log_lo = log_ndtr(hi), log_ndtr(lo)
    return log_hi + jnp.log1p(-jnp.exp(jnp.minimum(log_lo - log_hi, 0.0)))


def censored_arrays(arrays, censoring: str):
    """The subjects' arrays (`SubjectArrays`) a fit with `censoring` (resolved) sees, and
    the `Problem`'s censoring: "drop" masks the censored rows out of the likelihood (their
    predictions are still made and reported); "m3"/"m4" keep them."""
    if censoring == "drop":
        return arrays._replace(mask=arrays.mask * (arrays.cens == 0)), "none"
    return arrays, censoring


def gaussian_rows(data, censoring: str) -> int:
    """Observations with a Gaussian density in the likelihood (those that add $\\log 2\\pi$
    to the objective with its constant): the quantified ones when any are censored."""
    mask = np.asarray(data.obs_mask, bool)
    return int(np.sum(mask & (censored_rows(data) == 0))) if censoring != "none" else int(np.sum(mask))
