"""Options and helpers shared by the subcommands: --workspace, --no-run, recorded runs."""

from __future__ import annotations

import argparse
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any


def add_workspace_option(parser: argparse.ArgumentParser, nested: bool = False) -> None:
    """--workspace DIR. `nested`: a sub-action's parser (`runs show`), which must not reset a
    --workspace given before the action."""
    parser.add_argument(
        "--workspace",
        metavar="DIR",
        default=argparse.SUPPRESS if nested else None,
        help="workspace folder holding runs/ (default: $TUNESMITH_HOME or the current directory)",
    )


def add_run_options(parser: argparse.ArgumentParser, output_dir: bool = False) -> None:
    """--workspace and --no-run (and --output-dir), for subcommands recorded as runs."""
    add_workspace_option(parser)
    parser.add_argument("--no-run", action="store_true", help="do not record this command as a run")
    add_name_option(parser)
    if output_dir:
        parser.add_argument(
            "--output-dir", metavar="DIR", help="where to write with --no-run (default: .)"
        )


class RefusedFlag(argparse.Action):
    """A flag that means something in another subcommand: one line saying what to use here."""

    def __init__(self, option_strings: list[str], dest: str, message: str = "", **kwargs: Any):
        super().__init__(option_strings, argparse.SUPPRESS, nargs="?", help=argparse.SUPPRESS)
        self.message = message

    def __call__(self, parser, *args: Any) -> None:
        parser.error(self.message)


def add_name_option(parser: argparse.ArgumentParser) -> None:
    """--name NAME: the run is also `runs/NAME` (the newest run of that name). `serve` already
    has a --name (the model's name for clients): there it is --run-name."""
    flag = "--run-name" if "--name" in parser._option_string_actions else "--name"
    parser.add_argument(
        flag,
        dest="run_name",
        metavar="NAME",
        help="name the run, so later commands can use it as runs/NAME (the newest run of that "
        "name); a letter, then letters, digits, '.', '_' or '-'",
    )


def run_for(
    args: argparse.Namespace,
    kind: str,
    params: dict[str, Any],
    output_dir: str | Path | None = None,
) -> AbstractContextManager:
    """The recorded run a subcommand executes inside (or a plain folder with --no-run)."""
    from tunesmith.runs import recorded_run

    return recorded_run(
        kind=kind,
        params=params,
        workspace=args.workspace,
        enabled=not args.no_run,
        argv=args.command_line,
        output_dir=output_dir,
        name=getattr(args, "run_name", None),
    )
