"""The statistics of virtual studies against scipy's own per-study functions and textbook values.

- Clopper-Pearson equals scipy's exact binomial interval;
- the vectorised Welch and Mann-Whitney p-values equal scipy called study by study, NaN
  animals left out;
- Holm's adjustment on a worked example, and it never rejects less than Bonferroni;
- Dunnett's critical value: Student's t for one comparison, the published table value
  for three, and the p-values of scipy.stats.dunnett at the statistics of random samples;
- the analytic power of the t-test at the classic sample size (64 per group, d = 0.5).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from vtrial.analysis.statistics import (
    _dunnett_coverage, bonferroni, clopper_pearson, dunnett_critical_value, dunnett_statistics, holm, mann_whitney_p,
    t_test_power, welch_p,
)


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (7, 10), (10, 10), (900, 1000), (1, 1)])
def test_clopper_pearson_is_scipys_exact_interval(k, n):
    lo, hi = clopper_pearson(k, n)
    want = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    np.testing.assert_allclose([lo, hi], [want.low, want.high], rtol=1e-10, atol=1e-12)


def test_clopper_pearson_rejects_impossible_counts():
    with pytest.raises(ValueError):
        clopper_pearson(11, 10)


def test_two_sample_tests_equal_scipy_study_by_study():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, (50, 8)), rng.normal(0.7, 1.5, (50, 9))
    x[3, 2] = np.nan  # a failed animal
    welch, mw = welch_p(x, y), mann_whitney_p(x, y)
    for r in range(50):
        xr = x[r][np.isfinite(x[r])]
        assert welch[r] == pytest.approx(stats.ttest_ind(xr, y[r], equal_var=False).pvalue, rel=1e-12)
        assert mw[r] == pytest.approx(stats.mannwhitneyu(xr, y[r], alternative="two-sided").pvalue, rel=1e-12)


def test_holm_worked_example_and_bonferroni_bound():
    p = np.array([[0.01, 0.04, 0.03], [0.5, 0.001, 0.02]])
    np.testing.assert_allclose(holm(p), [[0.03, 0.06, 0.06], [0.5, 0.003, 0.04]])
    q = np.random.default_rng(1).uniform(size=(200, 4)) ** 3
    assert np.all(holm(q) <= bonferroni(q) + 1e-15)


def test_dunnett_critical_values():
    assert dunnett_critical_value(1, 20) == pytest.approx(stats.t.ppf(0.975, 20), rel=1e-12)
    # Dunnett (1955) two-sided table, 3 treatments vs control, 20 df: 2.54
    assert dunnett_critical_value(3, 20) == pytest.approx(2.54, abs=0.005)
    c = dunnett_critical_value(2, 27, 0.05)
    assert 1 - _dunnett_coverage(c, 2, 27) == pytest.approx(0.05, abs=1e-8)


@pytest.mark.parametrize("n", [4, 10])
def test_dunnett_p_values_match_scipy(n):
    rng = np.random.default_rng(n)
    control, treated = rng.normal(size=n), rng.normal(0.8, 1.0, (3, n))
    t, df = dunnett_statistics(control, treated)
    want = stats.dunnett(*treated, control=control, random_state=1)
    np.testing.assert_allclose(t, want.statistic, rtol=1e-12)
    got = [1 - _dunnett_coverage(abs(v), 3, df) for v in t]
    np.testing.assert_allclose(got, want.pvalue, atol=2e-3)  # scipy integrates by quasi-Monte Carlo


def test_t_test_power_classic_sample_size():
    # Cohen: 64 animals per group detect d = 0.5 with power 0.80 (two-sided, alpha 0.05)
    assert t_test_power(0.5, 64) == pytest.approx(0.8015, abs=5e-4)
    assert t_test_power(0.0, 10) == pytest.approx(0.05, abs=1e-12)
