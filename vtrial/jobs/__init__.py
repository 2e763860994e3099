"""Layer 6, jobs: `run_config` (the one run call every command uses) and the table of jobs.

- `table`: `JOBS`, kind -> schema + runner, written out;
- `run`: `run_config`, which validates a config, owns its output folder's life cycle
  (partial folder, atomic rename, resume manifest, multi-process writer) and calls the job;
- `context`: what a job receives (`RunContext`);
- `trial`, `assays`: the runners.
"""

from vtrial.jobs.context import Job as Job, RunContext as RunContext
from vtrial.jobs.run import RunRecord as RunRecord, check_config as check_config, run_config as run_config
from vtrial.jobs.table import JOBS as JOBS, get_job as get_job
