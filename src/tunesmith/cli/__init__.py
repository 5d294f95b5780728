"""The `tunesmith` command: one small module per subcommand, each a thin layer over the API.

Each subcommand module exposes `register(subparsers)`, which adds its parser and sets
`handler=` to a function taking the parsed args and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tunesmith import __version__
from tunesmith.cli.remote import sync_named_runs
from tunesmith.errors import TunesmithError

SUBCOMMAND_MODULES = ["generate", "data", "finetune", "run", "runs", "serve"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunesmith",
        description="Fine-tune GPT-2-family models on your text and generate from them.",
    )
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"tunesmith.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"tunesmith.cli.{name}":
                continue  # subcommand not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
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
