"""Long validations of the batched fits on reference data (`python -m pytest -m long`):

- the bootstrap of Bolus_2CPT (120 subjects, a well-behaved problem): its percentile
  intervals agree with the covariance step's (by theory, on such a problem);
- the stepwise covariate search on pheno (../shared/data/pheno) with WGT and APGR
  candidates finds the published relations CL ~ WGT, V ~ WGT and V ~ APGR < 5.
"""

from __future__ import annotations

import pandas as pd
import pytest

import vtrial
from vtrial.jobs.bootstrap import run_bootstrap
from vtrial.jobs.covariates import run_covariates

from conftest import REPO_ROOT, shared_data, shared_dir

pytestmark = pytest.mark.long


def test_bootstrap_percentiles_agree_with_the_covariance_step_on_bolus_2cpt(tmp_path):
    shared_data("data/bolus_2cpt/bolus_2cpt_nonmem.csv")
    config = REPO_ROOT / "configs" / "bolus_2cpt_fit.toml"
    data = shared_dir() / "data" / "bolus_2cpt" / "bolus_2cpt_nonmem.csv"
    fit = vtrial.fit(config, data)
    assert fit.covariance_step == "ok"
    # Batches of 50: 6,000 subjects in one computation (it deadlocked in jaxlib's LAPACK before the
    # replicates were chunked under its parallel threshold).
    facts = run_bootstrap(config, data, samples=100, seed=1, out=tmp_path / "boot", batch=50)
    assert facts["failed"] <= 5
    summary = pd.read_csv(tmp_path / "boot" / "bootstrap_summary.csv").set_index("statistic")
    table = fit.to_frame().set_index("name")
    assert summary.loc["original", "ofv"] == pytest.approx(fit.ofv, abs=1e-3)
    # Within a share of the interval's width: Monte Carlo error of 100 replicates' 2.5%
    # and 97.5% quantiles, and the variances' skewness (their Wald intervals are symmetric).
    for names, share in ((["cl", "v1", "q", "v2", "conc_mg_per_l.proportional"], 0.3),
                         (["omega2_cl", "omega2_v1", "omega2_q", "omega2_v2"], 0.5)):
        for name in names:
            lo, hi = table.loc[name, "ci_low"], table.loc[name, "ci_high"]
            width = hi - lo
            assert summary.loc["percentile_2.5", name] == pytest.approx(lo, abs=share * width), name
            assert summary.loc["percentile_97.5", name] == pytest.approx(hi, abs=share * width), name
            assert abs(summary.loc["bias", name]) < 0.3 * width, name


def test_covariate_search_finds_the_published_pheno_relations(tmp_path):
    shared_data("data/pheno/pheno_nonmem.csv")
    data = shared_dir() / "data" / "pheno" / "pheno_nonmem.csv"
    facts = run_covariates(REPO_ROOT / "tests" / "models" / "pheno_scm.toml", data, out=tmp_path / "scm")
    assert set(facts["included"]) == {"cl-wgt-power", "v-wgt-power", "v-apgr-categorical<5"}
    log = pd.read_csv(tmp_path / "scm" / "scm_log.csv")
    chosen = log[(log["direction"] == "forward") & log["chosen"]]["candidate"].tolist()
    assert chosen == ["v-wgt-power", "cl-wgt-power", "v-apgr-categorical<5"]
    apgr = log[(log["step"] == 3) & (log["candidate"] == "v-apgr-categorical<5")].iloc[0]
    assert 3.84 < apgr["dOFV"] < 6.63  # significant at 0.05, not at 0.01 (see pheno_scm.toml)
    assert not log[(log["direction"] == "backward") & log["chosen"]].shape[0]  # none removed at backward_p 0.05
    final = vtrial.fit(tmp_path / "scm" / "final_fit.toml", data)  # vtrial fit loads the final model
    assert final.converged
    assert final.ofv == pytest.approx(facts["final_ofv"], abs=0.05)
