"""`tunesmith data SOURCE ...`: turn files or URLs into a clean training set, with a report."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from tunesmith.cli._common import add_run_options, run_for
from tunesmith.cli.config_args import add_config_groups, given_options
from tunesmith.cli.remote import add_cluster_arguments, cluster_config, run_remote
from tunesmith.data import DataConfig, format_report, prepare_data

GROUPS = {
    "reading": "format column field split encoding errors max_download_mb max_input_mb timeout "
    "retries",
    "cleaning and splitting": "min_chars max_chars val_fraction seed",
    "token statistics": "tokenizer context",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data",
        help="turn files or URLs into a clean training set, with a report",
        description=(
            "Read CSV/TSV, JSON/JSONL or plain text (optionally gzip-compressed) from files, "
            "folders, globs or http(s) URLs; trim, drop empty and duplicate examples, split off "
            "a validation set, and write data.txt, train.jsonl, val.jsonl, stats.json and "
            "lengths.png."
        ),
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="file, folder, glob, URL or runs/N")
    add_config_groups(p, DataConfig, GROUPS)
    add_run_options(p, output_dir=True)
    add_cluster_arguments(p)
    p.set_defaults(handler=run_data)


def run_data(args: argparse.Namespace) -> int:
    if (cluster := cluster_config(args)) is not None:
        return run_remote(args, "data", cluster)
    given = given_options(args, DataConfig)
    if given.get("tokenizer", "").lower() == "none":
        given["tokenizer"] = None
    config = DataConfig(**given)
    params = {"sources": args.sources, **config.to_dict()}
    with run_for(args, "data", params, output_dir=args.output_dir) as run:
        sources = [run.use(s) for s in args.sources]
        if config.tokenizer is not None:
            config = replace(config, tokenizer=run.use(config.tokenizer))
        result = prepare_data(sources, config, run.dir)
        for warning in result.warnings:
            print(f"tunesmith: warning: {warning}", file=sys.stderr)
        print(format_report(result))
        run.final_metrics.update(result.metrics())
        run.set_summary(result.summary())
    return 0
