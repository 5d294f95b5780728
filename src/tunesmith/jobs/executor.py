"""Executors: where a job's command runs. `LocalExecutor` runs it on this machine, in the run's
folder, after the code was cloned there (`--git`), earlier outputs were mounted read-only
(`--mount`) and an isolated environment was prepared (`--pip`, `--requirements`). The command's
exit code becomes the run's; whatever it leaves is the run's output. A cluster executor sits
beside it behind the same `Executor` protocol.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Protocol

from tunesmith.errors import RunError
from tunesmith.jobs.git import clone
from tunesmith.jobs.mounts import Mount, place_mount, remove_mount
from tunesmith.jobs.process import stream_process
from tunesmith.jobs.spec import JobSpec, Resources
from tunesmith.jobs.venvs import activated, ensure_environment
from tunesmith.runs.record import RunHandle, recorded_run


class Executor(Protocol):
    """Runs a job inside a recorded run and returns the command's exit code."""

    def execute(self, spec: JobSpec, run: RunHandle) -> int: ...


def local_capacity() -> dict[str, float]:
    """What this machine offers: CPU cores, GPUs nvidia-smi lists, physical memory in GB."""
    gpus = 0
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
            gpus = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            gpus = 0
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    return {"cpus": os.cpu_count() or 1, "gpus": gpus, "memory_gb": memory}


def _describe(amounts: dict[str, float]) -> str:
    """`{"gpus": 2, "memory_gb": 8}` → `2 GPUs, 8 GB memory`."""
    units = {"cpus": "CPUs", "gpus": "GPUs", "memory_gb": "GB memory"}
    return ", ".join(f"{amount:g} {units[name]}" for name, amount in amounts.items())


def check_resources(resources: Resources, capacity: dict[str, float]) -> None:
    """Refuse at once a request this machine can never satisfy, saying what it has."""
    wanted = resources.requested()
    short = {name: amount for name, amount in wanted.items() if amount > capacity[name]}
    if short:
        has = _describe({k: round(v, 1) for k, v in capacity.items()})
        raise RunError(f"this machine cannot give {_describe(short)} (it has {has}); ask for less")


def job_environment(spec: JobSpec, run: RunHandle) -> dict[str, str]:
    """The command's environment: ours, pointed at the run's workspace, with the job's
    packages activated and its own variables on top."""
    env = dict(os.environ)
    env.pop("TUNESMITH_RUN_ID", None)
    env["TUNESMITH_HOME"] = str(run.workspace.root)  # tunesmith inside uses this workspace
    if run.id is not None:
        env["TUNESMITH_RUN_ID"] = str(run.id)
    env.setdefault("PYTHONUNBUFFERED", "1")  # stream Python's output as it is printed
    if spec.pip or spec.requirements:
        requirements = Path(spec.requirements) if spec.requirements else None
        env_dir = ensure_environment(run.workspace.root, spec.pip, requirements)
        run.info["python_env"] = str(env_dir)
        env = activated(env, env_dir)
    env.update(spec.env)
    return env


class LocalExecutor:
    """Runs jobs on this machine, in the run's folder."""

    def execute(self, spec: JobSpec, run: RunHandle) -> int:
        """Prepare the run folder and run the command in it; returns its exit code."""
        if spec.resources.requested():
            check_resources(spec.resources, local_capacity())
        if spec.git:
            git = clone(run, spec.git, spec.kill_after)
            run.info["git"] = git
            run.info["git_commit"] = git["commit"]  # the code this run ran
        mounts: list[Mount] = []
        try:
            for text in spec.mounts:
                mount = place_mount(run, text)
                mounts.append(mount)
                print(
                    f"mounted {mount.ref} at {mount.dest} (read-only)", file=sys.stderr, flush=True
                )
            run.info["mounts"] = [m.to_dict() for m in mounts]
            env = job_environment(spec, run)
            cwd = run.dir / spec.workdir
            if not cwd.is_dir():
                raise RunError(f"workdir {spec.workdir}: no such folder in the run folder")
            return stream_process(spec.argv(), cwd=cwd, env=env, kill_after=spec.kill_after)
        finally:
            for mount in reversed(mounts):
                remove_mount(run, mount)


def run_job(
    spec: JobSpec,
    workspace: str | Path | None = None,
    argv: list[str] | None = None,
    executor: Executor | None = None,
    name: str | None = None,
) -> int:
    """Run `spec` as a recorded run of kind `run` (also `runs/NAME`, given a name); returns the
    command's exit code."""
    executor = executor or LocalExecutor()
    params = spec.to_params()
    with recorded_run("run", params, workspace=workspace, argv=argv, name=name) as run:
        code = executor.execute(spec, run)
        run.exit_code = code
        if code != 0:
            run.error = f"command exited with code {code}"
    return code
