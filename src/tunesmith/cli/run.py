"""`tunesmith run [options] -- COMMAND ...`: any command as a recorded run."""

from __future__ import annotations

import argparse
import sys

from tunesmith.cli._common import add_name_option, add_workspace_option
from tunesmith.cli.remote import add_cluster_arguments, cluster_config, run_remote
from tunesmith.jobs import JobSpec, parse_env, run_job
from tunesmith.runs import Terminated


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="run any command as a recorded run",
        usage="tunesmith run [options] -- COMMAND ...",
        description=(
            "Run COMMAND in a new run's folder (runs/N/): its output streams live and into the "
            "run's log, what it leaves in the folder is the run's output, its exit code the run's. "
            "A single argument is run by the shell."
        ),
    )
    p.add_argument(
        "-m",
        "--mount",
        action="append",
        default=[],
        metavar="runs/N[/PATH][:DEST]",
        help="place an earlier run's output, read-only, in the working directory (repeatable)",
    )
    p.add_argument(
        "--pip",
        action="append",
        default=[],
        metavar="PKG",
        help="install PKG in an isolated environment for the command (repeatable)",
    )
    p.add_argument("--requirements", metavar="FILE", help="install a requirements file likewise")
    p.add_argument(
        "--git",
        "--github-url",
        dest="git",
        metavar="URL[@REF]",
        help="clone the repository at REF into the working directory first",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set an environment variable for the command (repeatable)",
    )
    p.add_argument(
        "--kill-after",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="when stopped, wait this long after SIGTERM before SIGKILL (default: 10)",
    )
    add_workspace_option(p)
    add_name_option(p)
    add_cluster_arguments(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND", help="what to run, after --")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    config = JobSpec(
        command=command,
        mounts=args.mount,
        pip=args.pip,
        requirements=args.requirements,
        git=args.git,
        env=parse_env(args.env),
        kill_after=args.kill_after,
    )
    if (cluster := cluster_config(args)) is not None:
        return run_remote(args, "run", cluster)
    try:
        return run_job(config, workspace=args.workspace, argv=args.command_line, name=args.run_name)
    except Terminated:
        print("tunesmith: terminated", file=sys.stderr)
        return 143
