"""`tunesmith runs rm`: removing a run, refused while later runs used it, and stopping it first
(cleanly, as Ctrl-C would) when it is still running and `--force` is given."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

from tunesmith.errors import RunError
from tunesmith.runs import environment
from tunesmith.runs.schema import Run
from tunesmith.runs.workspace import Workspace


def stop_run(
    workspace: Workspace,
    run: Run,
    timeout: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """SIGTERM the process recording a running run and wait until it has recorded its end
    (`interrupted`), so that nothing writes into a folder about to be removed."""
    if run.host != environment.hostname():
        raise RunError(f"run {run.id} is running on {run.host}; stop it there first")
    if run.pid == os.getpid():
        raise RunError(f"run {run.id} is this process's own run; it cannot remove itself")
    if environment.process_alive(run.pid, run.proc_start):
        print(f"stopping run {run.id} (SIGTERM to process {run.pid})", file=sys.stderr, flush=True)
        try:
            os.kill(run.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workspace.reap_stale()  # a process that died without recording is marked failed
        current = workspace.get(run.id)
        if current is None or current.status != "running":
            return
        sleep(0.1)
    raise RunError(
        f"run {run.id} did not stop within {timeout:g}s; stop process {run.pid} and try again"
    )


def remove_run(workspace: Workspace, run_id: int, force: bool = False) -> None:
    """Delete a run's folder and records. Refused while later runs depend on it or while it
    is still running; with `force`, dependents are ignored and a running run is stopped first."""
    run = workspace.get(run_id)
    if run is None:
        raise RunError(f"there is no run {run_id} in {workspace.root} (see `tunesmith runs`)")
    if run.status == "running":
        if not force:
            raise RunError(
                f"run {run_id} is still running; stop it first, or pass --force to stop and "
                "remove it"
            )
        stop_run(workspace, run)
    dependents = workspace.used_by(run_id)
    if dependents and not force:
        names = ", ".join(f"runs/{i}" for i in dependents)
        raise RunError(
            f"run {run_id} is used by {names}; remove those first, "
            "or pass --force to remove it anyway"
        )
    workspace.delete(run_id)
