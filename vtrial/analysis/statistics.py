r"""Statistics of virtual studies: binomial intervals, two-sample tests vectorised over
replicate studies, multiplicity corrections, and analytic power for checks.

Everything takes and returns numpy arrays; the leading axes are replicates (or candidate
regimens) and the last axis is the animals of one group, so 1,000 replicate studies are
one call. The tests are scipy's (`scipy.stats.ttest_ind`, `mannwhitneyu`, `beta`,
`nct`); what scipy lacks for arrays of studies (Holm's step-down adjustment, Dunnett's
critical value for equal groups) is written here with its formula.

- `clopper_pearson(k, n)`: the exact (conservative) binomial interval,
  $[B^{-1}(\alpha/2; k, n-k+1),\ B^{-1}(1-\alpha/2; k+1, n-k)]$ with $B$ the beta
  distribution, 0 and 1 at the ends.
- `welch_p(x, y)`, `mann_whitney_p(x, y)`: two-sided p-values per replicate; missing
  values (NaN: animals whose solve failed) are left out.
- `holm(p)`: Holm's step-down adjusted p-values over the last axis (the comparisons of
  one study): $\tilde p_{(i)} = \max_{j \le i} \min(1, (m - j + 1) p_{(j)})$.
- `dunnett_critical_value(k, df, alpha)`: Dunnett's two-sided critical value for `k`
  treated groups of equal size against one control, and `dunnett_reject` applies it.
- `t_test_power(d, n, alpha)`: the power of the two-sided two-sample t-test with `n`
  animals per group and standardised effect $d = \Delta/\sigma$ (noncentral t).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import integrate, optimize, special, stats


def clopper_pearson(successes, trials, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact binomial interval of a proportion, elementwise.

    **Arguments:** `successes`, `trials`: counts (broadcastable arrays, `0 <= k <= n`,
    `n >= 1`); `confidence`: e.g. 0.95.

    **Returns:** `(low, high)` arrays of the interval of `k / n`."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError("clopper_pearson needs 0 <= successes <= trials and trials >= 1")
    tail = (1.0 - confidence) / 2.0
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, stats.beta.ppf(tail, k, n - k + 1), 0.0)
        high = np.where(k < n, stats.beta.ppf(1.0 - tail, k + 1, n - k), 1.0)
    return low, high


def _has_nan(*arrays) -> bool:
    return any(np.isnan(a).any() for a in arrays)


def welch_p(x, y) -> np.ndarray:
    """Two-sided p-values of Welch's unequal-variance t-test of `x` against `y` over the
    last axis (`(..., n_x)` and `(..., n_y)`); NaN values are left out."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    policy = "omit" if _has_nan(x, y) else "propagate"  # scipy loops in Python when omitting
    return np.asarray(stats.ttest_ind(x, y, axis=-1, equal_var=False, nan_policy=policy).pvalue, dtype=float)


def mann_whitney_p(x, y) -> np.ndarray:
    """Two-sided p-values of the Mann-Whitney U test of `x` against `y` over the last axis
    (scipy's choice of exact or normal approximation, with the tie correction); NaN values
    are left out."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    policy = "omit" if _has_nan(x, y) else "propagate"
    return np.asarray(stats.mannwhitneyu(x, y, axis=-1, alternative="two-sided", nan_policy=policy).pvalue, dtype=float)


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values over the last axis (one family of `m`
    comparisons per row); reject comparison `i` at level alpha when the adjusted
    p-value is <= alpha. Controls the family-wise error rate without assumptions on the
    dependence of the tests."""
    p = np.asarray(p, dtype=float)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)
    scaled = np.minimum(1.0, (m - np.arange(m)) * ranked)
    adjusted_sorted = np.maximum.accumulate(scaled, axis=-1)
    out = np.empty_like(adjusted_sorted)
    np.put_along_axis(out, order, adjusted_sorted, axis=-1)
    return out


def bonferroni(p) -> np.ndarray:
    """Bonferroni-adjusted p-values over the last axis: `min(1, m p)`."""
    p = np.asarray(p, dtype=float)
    return np.minimum(1.0, p.shape[-1] * p)


def _dunnett_coverage(c: float, k: int, df: float) -> float:
    r"""$P(\max_i |T_i| \le c)$ for Dunnett's statistics of `k` equal groups against a
    control of the same size: $T_i = (\bar x_i - \bar x_0)/(s \sqrt{2/n})$ with $s$ the
    pooled SD on `df` degrees of freedom. Conditioning on the control's standardised mean
    $u$ and on $w = s/\sigma$ (density $f$ of $\sqrt{\chi^2_{df}/df}$), the comparisons
    are independent: $\int\int [\Phi(u + c w \sqrt 2) - \Phi(u - c w \sqrt 2)]^k
    \phi(u)\, f(w)\, du\, dw$, integrated with Simpson's rule on fine grids (both
    integrands are smooth; the error is far below the Monte Carlo error of any power)."""
    u = np.linspace(-9.0, 9.0, 721)
    w_hi = math.sqrt(stats.chi2.ppf(1 - 1e-13, df) / df)
    w_lo = math.sqrt(stats.chi2.ppf(1e-13, df) / df)
    w = np.linspace(w_lo, w_hi, 721)
    a = c * math.sqrt(2.0) * w[:, None]
    inner = (special.ndtr(u[None, :] + a) - special.ndtr(u[None, :] - a)) ** k * stats.norm.pdf(u)[None, :]
    given_w = integrate.simpson(inner, x=u, axis=1)
    density = stats.chi.pdf(w * math.sqrt(df), df) * math.sqrt(df)
    return float(integrate.simpson(given_w * density, x=w))


@lru_cache(maxsize=256)
def dunnett_critical_value(k: int, df: float, alpha: float = 0.05) -> float:
    """Two-sided single-step critical value of Dunnett's many-to-one test: `k` treated
    groups and one control, all of equal size, pooled SD on `df` degrees of freedom
    (`(k + 1)(n - 1)`). With `k = 1` it is Student's `t_{1 - alpha/2, df}`."""
    if k < 1 or df <= 0 or not 0 < alpha < 1:
        raise ValueError("dunnett_critical_value needs k >= 1, df > 0 and 0 < alpha < 1")
    lo = stats.t.ppf(1 - alpha / 2, df)  # one comparison: the least critical value
    hi = stats.t.ppf(1 - alpha / (2 * k), df) + 1e-9  # Bonferroni: the largest
    if k == 1:
        return float(lo)
    return float(optimize.brentq(lambda c: _dunnett_coverage(c, k, df) - (1 - alpha), lo, hi, xtol=1e-10))


def dunnett_statistics(control, treated) -> tuple[np.ndarray, int]:
    """Dunnett's t statistics of each treated group against the control, per replicate.

    **Arguments:** `control` `(..., n)`; `treated` `(k, ..., n)` (equal group sizes).
    **Returns:** `(T, df)` with `T` of shape `(k, ...)` and the pooled degrees of freedom
    `(k + 1)(n - 1)`. Groups with missing (NaN) animals are not supported: the caller
    leaves such replicates out or uses a test that omits them."""
    control, treated = np.asarray(control, dtype=float), np.asarray(treated, dtype=float)
    k, n = treated.shape[0], control.shape[-1]
    groups = np.concatenate([control[None], treated], axis=0)
    pooled_var = np.sum(np.var(groups, axis=-1, ddof=1), axis=0) / (k + 1)
    t = (treated.mean(axis=-1) - control.mean(axis=-1)[None]) / np.sqrt(pooled_var * 2.0 / n)[None]
    return t, (k + 1) * (n - 1)


def t_test_power(effect_size, n_per_group, alpha: float = 0.05) -> np.ndarray:
    r"""Power of the two-sided two-sample t-test (equal variances, `n` per group) for a
    standardised effect $d = \Delta / \sigma$: with $\nu = 2n - 2$ and noncentrality
    $\delta = d \sqrt{n/2}$, $1 - F_{\nu,\delta}(t_{1-\alpha/2,\nu}) + F_{\nu,\delta}(-t_{1-\alpha/2,\nu})$."""
    d = np.asarray(effect_size, dtype=float)
    n = np.asarray(n_per_group, dtype=float)
    df = 2 * n - 2
    crit = stats.t.ppf(1 - alpha / 2, df)
    ncp = d * np.sqrt(n / 2.0)
    return 1.0 - stats.nct.cdf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp)
