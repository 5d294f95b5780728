"""`tunesmith runs` (list, `show`, `rm`) and `tunesmith logs`: looking at recorded runs."""

from __future__ import annotations

import argparse
import json
import sys
import time

from tunesmith.errors import RunError
from tunesmith.runs import open_workspace
from tunesmith.runs.report import describe_text, follow_log, runs_table
from tunesmith.runs.stop import is_running_remote, stop_local_run


def _add_workspace(parser: argparse.ArgumentParser, nested: bool = False) -> None:
    # SUPPRESS in nested parsers so they don't reset a --workspace given before the action.
    parser.add_argument(
        "--workspace",
        metavar="DIR",
        default=argparse.SUPPRESS if nested else None,
        help="workspace folder holding runs/ (default: $TUNESMITH_HOME or the current directory)",
    )


def register(subparsers) -> None:
    p = subparsers.add_parser("runs", help="list, show and remove runs")
    _add_workspace(p)
    p.set_defaults(handler=list_runs)
    actions = p.add_subparsers(dest="action", metavar="ACTION")

    show = actions.add_parser("show", help="everything recorded about one run")
    show.add_argument("run", metavar="N", help="run id, runs/N or runs/last")
    show.add_argument("--json", action="store_true", help="print the record as JSON")
    _add_workspace(show, nested=True)
    show.set_defaults(handler=show_run)

    rm = actions.add_parser("rm", help="remove a run's folder and record")
    rm.add_argument("run", metavar="N", help="run id, runs/N or runs/last")
    rm.add_argument("--force", action="store_true", help="remove even if later runs used it")
    _add_workspace(rm, nested=True)
    rm.set_defaults(handler=remove_run)

    sync = actions.add_parser("sync", help="copy a remote run's outputs back (so far)")
    sync.add_argument("run", metavar="N", help="run id, runs/N or runs/last")
    _add_workspace(sync, nested=True)
    sync.set_defaults(handler=sync_run)

    stop = actions.add_parser("stop", help="stop a running run, here or on its cluster")
    stop.add_argument("run", metavar="N", help="run id, runs/N or runs/last")
    _add_workspace(stop, nested=True)
    stop.set_defaults(handler=stop_run)

    logs = subparsers.add_parser("logs", help="print a run's log")
    logs.add_argument("run", metavar="N", help="run id, runs/N or runs/last")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing until the run ends"
    )
    _add_workspace(logs)
    logs.set_defaults(handler=show_logs)


def _pick(workspace, text: str) -> int:
    """`3`, `runs/3` or `last`/`runs/last` → a run id that exists."""
    name = text.strip().removeprefix("./").removeprefix("runs/").rstrip("/")
    if name == "last":
        latest = workspace.latest()
        if latest is None:
            raise RunError(f"there are no runs in {workspace.root} yet")
        return latest.id
    if not name.isdigit():
        raise RunError(f"{text!r} is not a run; give its number, e.g. 3 or runs/3")
    if workspace.get(int(name)) is None:
        raise RunError(f"there is no run {name} in {workspace.root} (see `tunesmith runs`)")
    return int(name)


def list_runs(args: argparse.Namespace) -> int:
    workspace = open_workspace(args.workspace)
    runs = workspace.list_runs()
    if not runs:
        print(f"no runs yet in {workspace.root}", file=sys.stderr)
        return 0
    print(runs_table(workspace, runs))
    return 0


def show_run(args: argparse.Namespace) -> int:
    workspace = open_workspace(args.workspace)
    run_id = _pick(workspace, args.run)
    if args.json:
        print(json.dumps(workspace.describe(run_id), indent=2, default=str))
    else:
        print(describe_text(workspace, run_id))
    return 0


def remove_run(args: argparse.Namespace) -> int:
    workspace = open_workspace(args.workspace)
    run_id = _pick(workspace, args.run)
    workspace.remove(run_id, force=args.force)
    print(f"removed run {run_id}")
    return 0


def show_logs(args: argparse.Namespace) -> int:
    workspace = open_workspace(args.workspace)
    run_id = _pick(workspace, args.run)
    remote = args.follow and is_running_remote(workspace, run_id)
    for text in follow_log(workspace, run_id, follow=args.follow and not remote, sleep=time.sleep):
        sys.stdout.write(text)
        sys.stdout.flush()
    if remote:  # re-attach: the rest comes from the cluster (and into the log)
        from tunesmith.cluster.client import follow

        follow(workspace, run_id)
    return 0


def sync_run(args: argparse.Namespace) -> int:
    workspace = open_workspace(args.workspace)
    run_id = _pick(workspace, args.run)
    if not workspace.get(run_id).info.get("cluster", {}).get("job"):
        raise RunError(f"run {run_id} ran here, not on a cluster: there is nothing to sync")
    from tunesmith.cluster.client import sync

    status = sync(workspace, run_id)
    outputs = workspace.outputs(run_id)
    print(
        f"run {run_id} {status}" + (f"; {len(outputs)} outputs here" if status != "running" else "")
    )
    return 0


def stop_run(args: argparse.Namespace) -> int:
    workspace = open_workspace(args.workspace)
    run_id = _pick(workspace, args.run)
    run = workspace.get(run_id)
    if run.status != "running":
        raise RunError(f"run {run_id} is not running (it {run.status})")
    if run.info.get("cluster", {}).get("job"):
        from tunesmith.cluster.client import stop

        stop(workspace, run_id)
    else:
        stop_local_run(workspace, run_id)
    print(f"run {run_id} {workspace.get(run_id).status}")
    return 0
