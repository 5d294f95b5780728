"""The cluster options of `run`, `finetune`, `generate` and `data`, and what they do: when a
cluster is named, the command goes there as a remote run (tunesmith.cluster) instead of here."""

from __future__ import annotations

import argparse

from tunesmith.cli.config_args import add_config_arguments, given_options
from tunesmith.cluster.config import ClusterConfig
from tunesmith.errors import RunError, UsageError
from tunesmith.runs.references import parse_reference
from tunesmith.runs.workspace import open_workspace


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "cluster", "run on a Ray cluster, recorded here like a local run (see README)"
    )
    add_config_arguments(group, ClusterConfig)


def cluster_config(args: argparse.Namespace) -> ClusterConfig | None:
    """The cluster this command should run on, or None to run here."""
    given = given_options(args, ClusterConfig)
    config = ClusterConfig(**given)
    if config.address is None:
        asked = sorted(k for k in given if k != "cluster")
        if asked and config.cluster is None:
            flags = ", ".join("--" + k for k in asked)
            raise UsageError(f"{flags} only apply to a remote run: add --cluster ADDRESS")
        return None
    if getattr(args, "no_run", False):
        raise UsageError("--no-run cannot be used with --cluster: a remote run is always recorded")
    return config


def run_remote(args: argparse.Namespace, kind: str, config: ClusterConfig, extra=()) -> int:
    """Send this command (as typed, plus `extra` arguments) to the cluster."""
    from tunesmith.cluster.client import submit

    if config.nodes > 1 and kind != "finetune":
        raise UsageError("--nodes spreads a fine-tune over several nodes; use it with finetune")
    argv = list(args.command_line[1:])
    cut = argv.index("--") if "--" in argv else len(argv)
    argv[cut:cut] = list(extra)  # before a passed-through command
    kill_after = getattr(args, "kill_after", 10.0)
    return submit(kind, argv, config, getattr(args, "workspace", None), kill_after)


def sync_named_runs(args: argparse.Namespace) -> None:
    """Bring remote runs that this command names (runs/N) up to date first."""
    ids = set()
    for token in getattr(args, "command_line", [])[1:]:
        for text in (token, token.split("=", 1)[-1], token.rsplit(":", 1)[0]):
            try:
                ref = parse_reference(text)
            except RunError:
                ref = None
            if ref is not None and ref.run is not None:
                ids.add(ref.run)
    if not ids:
        return
    ws = open_workspace(getattr(args, "workspace", None))
    remote = [i for i in sorted(ids) if _running_remote(ws, i)]
    if remote:
        from tunesmith.cluster.client import sync

        for run_id in remote:
            sync(ws, run_id)


def _running_remote(ws, run_id: int) -> bool:
    run = ws.get(run_id)
    return bool(run and run.status == "running" and run.info.get("cluster", {}).get("job"))
