"""`tunesmith ui`: the web dashboard over the workspace (not itself recorded as a run)."""

from __future__ import annotations

import argparse

from tunesmith.cli.config_args import add_config_arguments, given_options


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
    from tunesmith.ui import UIConfig, serve_ui

    try:
        serve_ui(UIConfig(**given_options(args, UIConfig)))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a dashboard is stopped
    return 0
