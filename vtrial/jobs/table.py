"""The table of jobs: a config's `kind` selects a schema and a runner.

Written out rather than filled by registration on import, so the jobs there are is
readable in one place and nothing depends on import order. A new job is one schema, one
runner `run(spec, ctx) -> facts` (writing its outputs into `ctx.out_dir`) and one row.

Each row names its schema and functions as `"module:attribute"`, imported when the job
is first looked up: `vtrial run` of a trial then never imports the estimation code, the
assays or the optimiser (seconds of imports a command does not use).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from vtrial.errors import SpecError
from vtrial.jobs.context import Job

#: kind -> (schema, runner, description, check, needs a data file); "module:attribute"
_ROWS: dict[str, tuple[str, str, str, str, bool]] = {
    "trial": ("vtrial.io.trial_config:TrialConfig", "vtrial.jobs.trial:run_trial",
              "virtual trial of a model under arms of dose regimens", "vtrial.jobs.trial:check_trial_config", False),
    "binding_displacement": ("vtrial.assays.specs:DisplacementSpec", "vtrial.jobs.assays:run_displacement",
                             "radioligand displacement assay (EL4 6.1): IC50, Ki by Cheng-Prusoff and full model",
                             "vtrial.jobs.assays:check_displacement", False),
    "functional_neutralisation": ("vtrial.assays.specs:FunctionalSpec", "vtrial.jobs.assays:run_functional",
                                  "functional IL-1β neutralisation assay (MRC-5 IL-6, whole-blood IL-8)",
                                  "vtrial.jobs.assays:check_functional", False),
    "pbmc_lps": ("vtrial.assays.specs:PbmcSpec", "vtrial.jobs.assays:run_pbmc",
                 "PBMC + LPS cytokine release with and without anakinra", "vtrial.jobs.assays:check_pbmc", False),
    "tslp_neutralisation": ("vtrial.assays.tslp_specs:TslpSpec", "vtrial.jobs.assays:run_tslp",
                            "CAF TSLP across stimuli and an anakinra grid: IC50 per stimulus", "vtrial.jobs.assays:check_tslp", False),
    "optimize": ("vtrial.io.optimize_config:OptimizeConfig", "vtrial.jobs.optimize:run_optimize",
                 "least-drug regimen meeting a target attainment: grid sweep and gradient search on the same animals",
                 "vtrial.jobs.optimize:check_optimize", False),
    "power": ("vtrial.io.optimize_config:PowerConfig", "vtrial.jobs.power:run_power",
              "power against animals per arm by replicate virtual studies", "vtrial.jobs.power:check_power", False),
    "fit": ("vtrial.io.fit_config:FitConfig", "vtrial.jobs.fit:run_fit",
            "population fit (FOCE-I, FOCE, Laplace) of a model to a NONMEM-style dataset: estimates, SEs, diagnostics, VPC",
            "vtrial.jobs.fit:check_fit", True),
}


def _load(ref: str):
    module, attribute = ref.split(":")
    return getattr(importlib.import_module(module), attribute)


class _JobTable(Mapping):
    """kind -> `Job`, each built (its modules imported) on first lookup."""

    def __init__(self, rows):
        self._rows, self._built = rows, {}

    def __getitem__(self, kind: str) -> Job:
        if kind not in self._built:
            schema, run, description, check, needs_data = self._rows[kind]
            self._built[kind] = Job(kind, _load(schema), _load(run), description, _load(check), needs_data=needs_data)
        return self._built[kind]

    def __contains__(self, kind) -> bool:  # without building the job
        return kind in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


JOBS: Mapping[str, Job] = _JobTable(_ROWS)


def get_job(kind) -> Job:
    """The job for a config's `kind` (a `SpecError` naming the known kinds otherwise)."""
    if not isinstance(kind, str):
        raise SpecError("kind", f"must be a string naming the job; known: {', '.join(JOBS)}")
    if kind not in JOBS:
        raise SpecError("kind", f"unknown job kind {kind!r}; known: {', '.join(JOBS)}")
    return JOBS[kind]
