"""The job API: a JobSpec run by an executor inside a recorded run."""

from __future__ import annotations

import sys

import pytest

from tunesmith.errors import RunError, UsageError
from tunesmith.jobs import JobSpec, Resources, run_job
from tunesmith.jobs.executor import check_resources, local_capacity
from tunesmith.runs import open_workspace

PY = sys.executable


def test_a_job_runs_as_a_recorded_run_with_its_spec_as_params(workspace, capsys):
    spec = JobSpec([PY, "-c", "open('out.txt', 'w').write('x')"], env={"A": "1"})
    assert run_job(spec, argv=["test"]) == 0
    run = open_workspace().get(1)
    assert run.status == "succeeded" and run.kind == "run"
    assert run.params == {
        "command": spec.command,
        "mounts": [],
        "pip": [],
        "requirements": None,
        "git": None,
        "env": {"A": "1"},
        "kill_after": 10.0,
    }
    assert [o.path for o in open_workspace().outputs(1)] == ["out.txt"]


def test_the_command_starts_in_its_workdir_inside_the_run_folder(workspace, capsys):
    script = "import os; os.makedirs('sub', exist_ok=True)"
    assert run_job(JobSpec([PY, "-c", script])) == 0
    spec = JobSpec(
        [PY, "-c", "import os; print(os.getcwd())"], mounts=["runs/1"], workdir="run-1/sub"
    )
    assert run_job(spec) == 0
    assert capsys.readouterr().out.strip() == str(workspace / "runs" / "2" / "run-1" / "sub")
    assert open_workspace().get(2).params["workdir"] == "run-1/sub"
    with pytest.raises(RunError, match="workdir nowhere: no such folder"):
        run_job(JobSpec(["true"], workdir="nowhere"))
    assert open_workspace().get(3).status == "failed"
    with pytest.raises(UsageError, match="inside the run"):
        JobSpec(["true"], workdir="../elsewhere")


def test_a_request_the_machine_cannot_satisfy_fails_at_once_naming_what_it_has(workspace, capsys):
    capacity = local_capacity()
    assert capacity["cpus"] >= 1 and capacity["memory_gb"] > 0
    check_resources(Resources(cpus=1), capacity)  # fits
    too_many = int(capacity["gpus"]) + 1
    with pytest.raises(
        RunError,
        match=rf"cannot give {too_many} GPUs \(it has \d+ CPUs, \d+ GPUs, [\d.]+ GB memory\)",
    ):
        run_job(JobSpec([PY, "-c", "open('ran', 'w')"], resources=Resources(gpus=too_many)))
    run = open_workspace().get(1)
    assert run.status == "failed" and run.params["resources"] == {"gpus": too_many}
    assert not (workspace / "runs" / "1" / "ran").exists()
    with pytest.raises(UsageError, match="--cpus must not be negative"):
        Resources(cpus=-1)


def test_another_executor_takes_the_place_of_the_local_one(workspace, capsys):
    class Recording:
        def __init__(self):
            self.seen = []

        def execute(self, spec, run):
            self.seen.append((spec.command, run.id))
            (run.dir / "done.txt").write_text("remote")
            return 5

    executor = Recording()
    assert run_job(JobSpec(["anything"]), executor=executor) == 5
    assert executor.seen == [(["anything"], 1)]
    run = open_workspace().get(1)
    assert (run.status, run.exit_code) == ("failed", 5)
    assert [o.path for o in open_workspace().outputs(1)] == ["done.txt"]
