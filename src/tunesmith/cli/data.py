"""`tunesmith data SOURCE ...`: turn files or URLs into a clean training set, with a report."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from tunesmith.cli._common import add_run_options, run_for
from tunesmith.cli.config_args import add_config_arguments
from tunesmith.data import DataConfig, format_report, prepare_data
from tunesmith.data.config import ERROR_MODES, FORMATS, SPLITS


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
    read = p.add_argument_group("reading")
    read.add_argument("--format", choices=FORMATS, default="auto", help="default: detect")
    read.add_argument("--column", metavar="NAME", help="CSV/TSV column holding the text")
    read.add_argument("--field", metavar="NAME", help="JSON/JSONL field holding the text (a.b)")
    read.add_argument(
        "--split",
        choices=SPLITS,
        default="lines",
        help="plain text: one example per line (default), paragraph or file",
    )
    read.add_argument("--encoding", default="utf-8", help="text encoding (default: utf-8)")
    read.add_argument(
        "--errors", choices=ERROR_MODES, default="strict", help="what to do with undecodable bytes"
    )
    read.add_argument(
        "--max-download-mb",
        type=float,
        default=200.0,
        metavar="MB",
        help="refuse larger downloads (default: 200)",
    )
    add_config_arguments(read, DataConfig, only=["max_input_mb"])
    read.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="seconds per download try"
    )
    read.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="download retries on connection errors and 5xx (default: 3)",
    )
    clean = p.add_argument_group("cleaning and splitting")
    clean.add_argument(
        "--min-chars", type=int, default=1, metavar="N", help="drop shorter examples (default: 1)"
    )
    clean.add_argument("--max-chars", type=int, metavar="N", help="drop longer examples")
    clean.add_argument(
        "--val-fraction",
        type=float,
        default=0.05,
        metavar="F",
        help="share held out for validation (default: 0.05)",
    )
    clean.add_argument(
        "--seed", type=int, default=0, help="seed of the validation split (default: 0)"
    )
    stats = p.add_argument_group("token statistics")
    stats.add_argument(
        "--tokenizer",
        default="gpt2",
        metavar="MODEL",
        help="model whose tokenizer counts tokens: hub id, folder or runs/N ('none' to skip)",
    )
    stats.add_argument(
        "--context", type=int, metavar="N", help="context length (default: the model's, or 1024)"
    )
    p.add_argument("--output-dir", metavar="DIR", help="where to write with --no-run (default: .)")
    add_run_options(p)
    p.set_defaults(handler=run_data)


def run_data(args: argparse.Namespace) -> int:
    config = DataConfig(
        format=args.format,
        column=args.column,
        field=args.field,
        split=args.split,
        min_chars=args.min_chars,
        max_chars=args.max_chars,
        val_fraction=args.val_fraction,
        seed=args.seed,
        encoding=args.encoding,
        errors=args.errors,
        tokenizer=None if args.tokenizer.lower() == "none" else args.tokenizer,
        context=args.context,
        max_download_mb=args.max_download_mb,
        # A flag made from its DataConfig field: absent from args unless given.
        max_input_mb=getattr(args, "max_input_mb", DataConfig.max_input_mb),
        timeout=args.timeout,
        retries=args.retries,
    )
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
