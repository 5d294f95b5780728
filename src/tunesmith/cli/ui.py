"""`tunesmith ui`: the web dashboard over the workspace (not itself recorded as a run)."""

from __future__ import annotations

import argparse

from tunesmith.cli.config_args import add_config_arguments, given_options
from tunesmith.errors import TunesmithError


def register(subparsers) -> None:
    from tunesmith.ui.config import UIConfig

    p = subparsers.add_parser(
        "ui",
        help="a web dashboard: runs, charts, logs, compare, playground",
        description=(
            "Serve a dashboard of the workspace's runs at the printed URL: live statuses, logs "
            "and charts, comparisons, a playground. Binds 127.0.0.1 unless told otherwise."
        ),
    )
    add_config_arguments(p, UIConfig)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from tunesmith.ui.config import UIConfig

    config = UIConfig(**given_options(args, UIConfig))
    try:
        from tunesmith.ui.server import serve_ui
    except ModuleNotFoundError as e:
        if e.name not in ("fastapi", "uvicorn", "starlette"):
            raise
        raise TunesmithError(
            f"tunesmith ui needs {e.name}, which is not installed: pip install 'tunesmith[ui]'"
        ) from e
    try:
        serve_ui(config)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a dashboard is stopped
    return 0
