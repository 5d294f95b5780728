"""`tunesmith runs` (list, `show`, `rm`, `verify`, `reindex`) and `tunesmith logs`: looking at
recorded runs."""

from __future__ import annotations

import argparse
import json
import sys
import time

from tunesmith.cli._common import add_workspace_option
from tunesmith.errors import RunError
from tunesmith.runs import open_workspace
from tunesmith.runs.references import pick_run
from tunesmith.runs.removal import remove_run
from tunesmith.runs.stop import is_running_remote, stop_local_run
from tunesmith.runs.views import describe_text, follow_log, runs_table, verify_line


def register(subparsers) -> None:
    p = subparsers.add_parser("runs", help="list, show, verify and remove runs")
    add_workspace_option(p)
    p.set_defaults(handler=list_runs)
    actions = p.add_subparsers(dest="action", metavar="ACTION")

    show = actions.add_parser("show", help="everything recorded about one run")
    show.add_argument("run", metavar="N", help="run id, runs/N or runs/last")
    show.add_argument("--json", action="store_true", help="print the record as JSON")
    add_workspace_option(show, nested=True)
    show.set_defaults(handler=show_run)

    rm = actions.add_parser("rm", help="remove a run's folder and record")
    rm.add_argument("run", metavar="N", help="run id, runs/N or runs/last")
    rm.add_argument(
        "--force",
        action="store_true",
        help="remove even if later runs used it; a running run is stopped first",
    )
    add_workspace_option(rm, nested=True)
    rm.set_defaults(handler=remove)

    verify = actions.add_parser(
        "verify", help="check that runs' outputs are still the files recorded when they ended"
    )
    verify.add_argument("run", metavar="N", nargs="?", help="one run (default: every run)")
    add_workspace_option(verify, nested=True)
    verify.set_defaults(handler=verify_runs)

    reindex = actions.add_parser(
        "reindex", help="rebuild runs/index.db from the runs' own records (meta.json)"
    )
    add_workspace_option(reindex, nested=True)
    reindex.set_defaults(handler=reindex_runs)

    sync = actions.add_parser("sync", help="copy a remote run's outputs back (so far)")
    sync.add_argument("run", metavar="N", help="run id, runs/N or runs/last")
    add_workspace_option(sync, nested=True)
    sync.set_defaults(handler=sync_run)

    stop = actions.add_parser("stop", help="stop a running run, here or on its cluster")
    stop.add_argument("run", metavar="N", help="run id, runs/N or runs/last")
    add_workspace_option(stop, nested=True)
    stop.set_defaults(handler=stop_run)

    logs = subparsers.add_parser("logs", help="print a run's log")
    logs.add_argument("run", metavar="N", help="run id, runs/N or runs/last")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing until the run ends"
    )
    add_workspace_option(logs)
    logs.set_defaults(handler=show_logs)


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
    run_id = pick_run(workspace, args.run)
    if args.json:
        print(json.dumps(workspace.describe(run_id), indent=2, default=str))
    else:
        print(describe_text(workspace, run_id))
    return 0


def remove(args: argparse.Namespace) -> int:
    workspace = open_workspace(args.workspace)
    run_id = pick_run(workspace, args.run)
    remove_run(workspace, run_id, force=args.force)
    print(f"removed run {run_id}")
    return 0


def verify_runs(args: argparse.Namespace) -> int:
    """One line per run (`ok`, or each change); exit code 1 when any run changed."""
    workspace = open_workspace(args.workspace)
    ids = [pick_run(workspace, args.run)] if args.run else [r.id for r in workspace.list_runs()]
    changed = 0
    for run_id in ids:
        intact, text = verify_line(workspace, run_id)
        changed += not intact
        print(text)
    if changed:
        print(f"tunesmith: error: {changed} of {len(ids)} runs changed", file=sys.stderr)
    return 1 if changed else 0


def reindex_runs(args: argparse.Namespace) -> int:
    workspace = open_workspace(args.workspace)
    count = workspace.reindex()
    print(f"rebuilt {workspace.db_path} from the records of {count} runs")
    return 0


def show_logs(args: argparse.Namespace) -> int:
    workspace = open_workspace(args.workspace)
    run_id = pick_run(workspace, args.run)
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
    run_id = pick_run(workspace, args.run)
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
    run_id = pick_run(workspace, args.run)
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
