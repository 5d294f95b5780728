"""`tunesmith sweep [ranges] [options] -- finetune ARGS`: a hyperparameter search as one run
whose trials are finetune runs (a thin layer over tunesmith.sweep)."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from tunesmith.cli._common import add_name_option, add_workspace_option
from tunesmith.cli.config_args import add_config_arguments, given_options, unwrap_optional
from tunesmith.errors import UsageError
from tunesmith.options import option_metadata

# Finetune options a sweep does not vary: its own flags, and what it sets for each trial.
NOT_SWEPT = ("resume", "num_threads", "progress")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="tune hyperparameters: finetune trials over ranges, poor ones stopped early",
        usage="tunesmith sweep --FLAG VALUES ... [options] -- finetune ARGS ...",
        description="Run a finetune trial for each point of a grid (--lr 1e-4,3e-4) or N random "
        "draws (--random N, --lr 1e-5:1e-3:log), stopping trials ASHA finds poor at each "
        "evaluation. Each trial is a run of its own; runs/N of the sweep names the best "
        "trial's model. Any finetune option can be a range.",
        flags=_flags,
    )
    p.set_defaults(handler=run_sweep)


def _flags(p: argparse.ArgumentParser) -> None:
    from tunesmith.sweep import SweepConfig

    add_config_arguments(p, SweepConfig)
    ranges = p.add_argument_group("ranges (any finetune option: a,b,c or a:b[:log])")
    for option in _sweepable().values():
        ranges.add_argument(
            option.flag,
            dest=f"range_{option.name}",
            metavar="VALUES",
            default=argparse.SUPPRESS,
            help=option.help.replace("%", "%%"),
        )
    add_workspace_option(p)
    add_name_option(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND", help="-- finetune ARGS")


def _sweepable() -> dict:
    """The finetune options, with the type and choices their fields declare."""
    from tunesmith.sweep import Option
    from tunesmith.train.config import FinetuneConfig

    hints = typing.get_type_hints(FinetuneConfig)
    options = {}
    for f in dataclasses.fields(FinetuneConfig):
        meta = option_metadata(f)
        if meta is None or not meta["cli"] or f.name in NOT_SWEPT:
            continue
        base = unwrap_optional(hints[f.name])
        options[f.name] = Option(f.name, base, meta["choices"], meta["help"])
    return options


def run_sweep(args: argparse.Namespace) -> int:
    from tunesmith.cluster.connect import require_ray
    from tunesmith.runs import recorded_run, resolve_reference
    from tunesmith.sweep import (
        SearchSpace,
        SweepConfig,
        check_cluster,
        check_command,
        state_reference,
        sweep,
    )
    from tunesmith.sweep.trials import Trial

    config = SweepConfig(**given_options(args, SweepConfig))
    ranges = {k.removeprefix("range_"): v for k, v in vars(args).items() if k.startswith("range_")}
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    space = None
    if config.resume is not None and (ranges or command):
        raise UsageError(
            f"--resume {config.resume} continues with that sweep's ranges and command; "
            "leave them out"
        )
    if config.resume is not None and config.address is not None:
        require_ray()
    if config.resume is not None:  # a sweep to resume, before a new run is made
        resolve_reference(state_reference(config.resume), args.workspace, allow_unfinished=True)
    else:
        space = SearchSpace.parse(ranges, _sweepable())
        trials = space.trials(config.random)  # a grid of ranges fails here, before a run
        command = check_command(command, space)
        if config.address is not None:  # Ray, and ASHA's first rung, before a run exists
            check_cluster(config, command, [Trial(i, p) for i, p in enumerate(trials)])
    with recorded_run(
        "sweep",
        {"ranges": ranges, **dataclasses.asdict(config)},
        workspace=args.workspace,
        argv=args.command_line,
        name=args.run_name,
    ) as run:
        result = sweep(config, space, command, run)
        print(result.table, flush=True)
        if result.best is None:
            run.exit_code, run.error = 1, "no trial succeeded"
            return 1
        print(f"best: {result.best.name} (runs/{result.best.run}); its model is runs/{run.id}")
    return 0
