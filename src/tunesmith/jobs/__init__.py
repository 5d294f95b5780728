"""Jobs: commands executed as recorded runs (`tunesmith run -- COMMAND`, as `spell run` was).

    spec = JobSpec(["python", "train.py"], mounts=["runs/2:data"], pip=["numpy"])
    code = run_job(spec)                       # run N of the workspace, on this machine

A `JobSpec` says what to run and with what; an `Executor` says where (`LocalExecutor`: here,
in the run's folder). The run store (`tunesmith.runs`) records the run either way.
"""

from tunesmith.jobs.executor import Executor, LocalExecutor, run_job
from tunesmith.jobs.spec import JobSpec, Resources, parse_env

__all__ = ["Executor", "JobSpec", "LocalExecutor", "Resources", "parse_env", "run_job"]
