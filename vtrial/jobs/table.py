"""The table of jobs: a config's `kind` selects a schema and a runner.

Written out rather than filled by registration on import, so the jobs there are is
readable in one place and nothing depends on import order. A new job is one schema, one
runner `run(spec, ctx) -> facts` (writing its outputs into `ctx.out_dir`) and one row.
"""

from __future__ import annotations

from vtrial.assays.specs import DisplacementSpec, FunctionalSpec, PbmcSpec
from vtrial.assays.tslp_specs import TslpSpec
from vtrial.errors import SpecError
from vtrial.io.fit_config import FitConfig
from vtrial.io.optimize_config import OptimizeConfig, PowerConfig
from vtrial.io.trial_config import TrialConfig
from vtrial.jobs.assays import (check_displacement, check_functional, check_pbmc, check_tslp, run_displacement, run_functional,
                                run_pbmc, run_tslp)
from vtrial.jobs.context import Job
from vtrial.jobs.fit import check_fit, run_fit
from vtrial.jobs.optimize import check_optimize, run_optimize
from vtrial.jobs.power import check_power, run_power
from vtrial.jobs.trial import check_trial_config, run_trial

JOBS: dict[str, Job] = {
    job.kind: job
    for job in (
        Job("trial", TrialConfig, run_trial, "virtual trial of a model under arms of dose regimens", check_trial_config),
        Job("binding_displacement", DisplacementSpec, run_displacement,
            "radioligand displacement assay (EL4 6.1): IC50, Ki by Cheng-Prusoff and full model", check_displacement),
        Job("functional_neutralisation", FunctionalSpec, run_functional,
            "functional IL-1β neutralisation assay (MRC-5 IL-6, whole-blood IL-8)", check_functional),
        Job("pbmc_lps", PbmcSpec, run_pbmc, "PBMC + LPS cytokine release with and without anakinra", check_pbmc),
        Job("tslp_neutralisation", TslpSpec, run_tslp, "CAF TSLP across stimuli and an anakinra grid: IC50 per stimulus",
            check_tslp),
        Job("optimize", OptimizeConfig, run_optimize,
            "least-drug regimen meeting a target attainment: grid sweep and gradient search on the same animals",
            check_optimize),
        Job("power", PowerConfig, run_power, "power against animals per arm by replicate virtual studies", check_power),
        Job("fit", FitConfig, run_fit,
            "population fit (FOCE-I, FOCE, Laplace) of a model to a NONMEM-style dataset: estimates, SEs, diagnostics, VPC",
            check_fit, needs_data=True),
    )
}


def get_job(kind) -> Job:
    """The job for a config's `kind` (a `SpecError` naming the known kinds otherwise)."""
    if not isinstance(kind, str):
        raise SpecError("kind", f"must be a string naming the job; known: {', '.join(JOBS)}")
    if kind not in JOBS:
        raise SpecError("kind", f"unknown job kind {kind!r}; known: {', '.join(JOBS)}")
    return JOBS[kind]
