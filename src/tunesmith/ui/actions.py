"""The dashboard's two actions: stop a running run, delete a finished one.

Stopping sends SIGTERM to the run's recorded process, which ends the run as Ctrl-C does
(status `interrupted`, outputs recorded) and stops any command it runs with it. The whole process
group is signalled only when that process leads its own group (started from a shell), so a run
launched by some other program never takes its parent down with it.
"""

from __future__ import annotations

import os
import signal

from tunesmith.errors import RunError
from tunesmith.runs import Workspace
from tunesmith.runs.environment import hostname, process_alive
from tunesmith.runs.removal import remove_run


def stop_run(workspace: Workspace, run_id: int) -> None:
    """SIGTERM a running run of this machine. Refused for a finished run or another host's."""
    run = workspace.get(run_id)
    if run is None:
        raise RunError(f"there is no run {run_id} in {workspace.root}")
    if run.status != "running":
        raise RunError(f"run {run_id} is not running (status: {run.status})")
    if run.host != hostname():
        raise RunError(f"run {run_id} runs on {run.host}; stop it there")
    if run.pid is None or not process_alive(run.pid, run.proc_start):
        workspace.reap_stale()
        raise RunError(f"run {run_id}'s process is gone; it is now marked failed")
    try:
        group = os.getpgid(run.pid)
        if group == run.pid and group != os.getpgrp():
            os.killpg(group, signal.SIGTERM)
        else:
            os.kill(run.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it ended between the check and the signal
    except PermissionError as e:
        raise RunError(f"not allowed to stop run {run_id} (process {run.pid}): {e}") from e


def delete_run(workspace: Workspace, run_id: int) -> None:
    """`tunesmith runs rm` without --force: refused while running or used by later runs."""
    remove_run(workspace, run_id, force=False)
