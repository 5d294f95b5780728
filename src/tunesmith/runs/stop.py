"""Stopping a run that another tunesmith process on this host is executing: SIGTERM it (it
records itself as interrupted, stopping its command first), then wait for the record."""

from __future__ import annotations

import os
import signal
import time

from tunesmith.errors import RunError
from tunesmith.runs import environment
from tunesmith.runs.workspace import Workspace

STOP_TIMEOUT = 60.0  # seconds to wait for the run to record its end


def is_running_remote(workspace: Workspace, run_id: int) -> bool:
    """Whether the run is running on a cluster (tunesmith.cluster), not in a local process."""
    run = workspace.get(run_id)
    return bool(run and run.status == "running" and run.info.get("cluster", {}).get("job"))


def stop_local_run(workspace: Workspace, run_id: int, timeout: float = STOP_TIMEOUT) -> None:
    run = workspace.get(run_id)
    if run.host != environment.hostname():
        raise RunError(f"run {run_id} runs on {run.host}; stop it there")
    if environment.process_alive(run.pid, run.proc_start):
        os.kill(run.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workspace.reap_stale()  # a process that died without recording is marked failed
        if workspace.get(run_id).status != "running":
            return
        time.sleep(0.2)
    raise RunError(f"run {run_id} (pid {run.pid}) did not stop within {timeout:g}s")
