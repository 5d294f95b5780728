"""`tunesmith runs rm`: removing a run, refused while later runs used it, and stopping it first
(cleanly, as Ctrl-C would) when it is still running and `--force` is given."""

from __future__ import annotations

from tunesmith.errors import RunError
from tunesmith.runs.stop import stop_local_run
from tunesmith.runs.workspace import Workspace


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
        stop_local_run(workspace, run_id)
    dependents = workspace.used_by(run_id)
    if dependents and not force:
        names = ", ".join(f"runs/{i}" for i in dependents)
        raise RunError(
            f"run {run_id} is used by {names}; remove those first, "
            "or pass --force to remove it anyway"
        )
    workspace.delete(run_id)
