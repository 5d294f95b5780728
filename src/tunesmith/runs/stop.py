"""Stopping a run that another tunesmith process on this host is executing: SIGTERM it (it
records itself as interrupted, stopping its command first), then wait for the record."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

from tunesmith.errors import RunError
from tunesmith.runs import environment
from tunesmith.runs.workspace import Workspace

STOP_TIMEOUT = 60.0  # seconds to wait for the run to record its end


def is_running_remote(workspace: Workspace, run_id: int) -> bool:
    """Whether the run is running on a cluster (tunesmith.cluster), not in a local process."""
    run = workspace.get(run_id)
    return bool(run and run.status == "running" and run.info.get("cluster", {}).get("job"))


def stop_local_run(
    workspace: Workspace,
    run_id: int,
    timeout: float = STOP_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """SIGTERM the process recording a running run and wait until it has recorded its end
    (`interrupted`), so that nothing writes into its folder afterwards."""
    run = workspace.get(run_id)
    if run.host != environment.hostname():
        raise RunError(f"run {run_id} is running on {run.host}; stop it there first")
    if run.pid == os.getpid():
        raise RunError(f"run {run_id} is this process's own run; it cannot stop itself")
    if environment.process_alive(run.pid, run.proc_start):
        print(f"stopping run {run_id} (SIGTERM to process {run.pid})", file=sys.stderr, flush=True)
        try:
            os.kill(run.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # it ended between the check and the signal
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workspace.reap_stale()  # a process that died without recording is marked failed
        current = workspace.get(run_id)
        if current is None or current.status != "running":
            return
        sleep(0.1)
    raise RunError(
        f"run {run_id} did not stop within {timeout:g}s; stop process {run.pid} and try again"
    )
