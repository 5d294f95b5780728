"""The `tunesmith` command: one small module per subcommand, each a thin layer over the API.

Each subcommand module exposes `register(subparsers)`, which adds its parser and sets
`handler=` to a function taking the parsed args and returning an exit code. Flags come from the
config dataclasses (tunesmith.options, cli.config_args), so each default is written once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from tunesmith import __version__
from tunesmith.cli.remote import sync_named_runs
from tunesmith.errors import TunesmithError

SUBCOMMAND_MODULES = ["generate", "data", "finetune", "sweep", "run", "runs", "serve", "ui"]


class Parser(argparse.ArgumentParser):
    """An argument parser whose flags may be added when it is first used (`flags=`): most come
    from config classes whose modules import torch, which `tunesmith runs` need not wait for."""

    def __init__(self, *args: Any, flags: Callable[[Parser], None] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.pending_flags = flags

    def with_flags(self) -> Parser:
        if self.pending_flags is not None:
            add, self.pending_flags = self.pending_flags, None
            add(self)
        return self

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        return super(Parser, self.with_flags()).parse_known_args(args, namespace)

    def format_help(self) -> str:
        return super(Parser, self.with_flags()).format_help()

    def error(self, message: str) -> NoReturn:
        # One line, as for every other bad input (argparse would print the whole usage first).
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(command: str | None = None) -> Parser:
    """The CLI's parser; given the subcommand about to run, only that one's module is imported
    (another's imports, e.g. `data`'s readers, would only slow its start)."""
    parser = Parser(
        prog="tunesmith",
        description="Fine-tune GPT-2-family models on your text and generate from them.",
    )
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in [command] if command in SUBCOMMAND_MODULES else SUBCOMMAND_MODULES:
        importlib.import_module(f"tunesmith.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    args.command_line = ["tunesmith", *argv]  # recorded with the run
    try:
        sync_named_runs(args)  # a remote run named here comes back first (tunesmith.cluster)
        return int(args.handler(args) or 0)
    except TunesmithError as e:
        print(f"tunesmith: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print("tunesmith: interrupted", file=sys.stderr)
        return getattr(e, "exit_code", 130)  # 143 when it was a SIGTERM
    except BrokenPipeError:
        return 0
