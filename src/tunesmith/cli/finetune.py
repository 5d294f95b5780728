"""`tunesmith finetune`: fine-tune a GPT-2 on your data (a thin layer over tunesmith.train)."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path

from tunesmith.cli._common import RefusedFlag, add_run_options, run_for
from tunesmith.cli.config_args import add_config_arguments, add_config_groups, given_options
from tunesmith.cli.remote import add_cluster_arguments, cluster_config, run_remote

GROUPS = {
    "optimization": "lr weight_decay warmup schedule batch_size grad_accum max_grad_norm epochs "
    "max_steps seed dropout attn_dropout",
    "LoRA": "lora lora_rank lora_alpha lora_dropout lora_targets",
    "evaluation, samples and checkpoints": "eval_every early_stop sample_every samples "
    "sample_tokens report_samples save_every keep_checkpoints resume report_to",
    "devices": "device precision compile gradient_checkpointing num_threads progress",
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a GPT-2 on your data (full or LoRA), as a resumable run",
        description="Fine-tune a GPT-2-family model on your data. The model is saved to "
        "runs/N/model (a Hugging Face folder); checkpoints let --resume continue a killed run.",
        flags=_flags,
    )
    p.set_defaults(handler=run_finetune)


def _flags(p: argparse.ArgumentParser) -> None:
    from tunesmith.train.config import FinetuneConfig, LaunchConfig

    add_config_groups(p, FinetuneConfig, GROUPS)
    add_config_arguments(p.add_argument_group("several processes (torchrun)"), LaunchConfig)
    add_run_options(p, output_dir=True)
    add_cluster_arguments(p)
    # -m is --mount in `tunesmith run` (as in Spell); here a user may mean --model.
    message = "finetune has no -m: use --model (-m is --mount in `tunesmith run`)"
    p.add_argument("-m", action=RefusedFlag, message=message)


def run_finetune(args: argparse.Namespace) -> int:
    from tunesmith.train import FinetuneConfig, finetune
    from tunesmith.train.config import LaunchConfig
    from tunesmith.train.distributed import in_launched_process, launch
    from tunesmith.train.resume import resume_config

    given = given_options(args, FinetuneConfig)
    if (cluster := cluster_config(args)) is not None:
        if not given.get("resume"):
            FinetuneConfig(**given)  # bad values fail before a run is created
        # --gpus N on one node: the DDP launcher there, one process per GPU
        gpus = int(cluster.gpus)
        one_node = gpus > 1 and cluster.nodes == 1 and not hasattr(args, "nproc")
        extra = ["--nproc", str(gpus)] if one_node else []
        return run_remote(args, "finetune", cluster, extra)
    processes = LaunchConfig(**given_options(args, LaunchConfig))
    if processes.distributed and not in_launched_process():
        return launch(args.command_line[1:], **asdict(processes))
    # Bad values fail before a run is created; a resumed run's are checked once merged.
    config = None if given.get("resume") else FinetuneConfig(**given)
    if int(os.environ.get("RANK", "0")) != 0:  # only rank 0 records the run and writes files
        finetune(config or resume_config(given), None, output_dir=Path(os.devnull).parent)
        return 0
    with run_for(args, "finetune", given, output_dir=args.output_dir) as run:
        result = finetune(config or resume_config(given, run.use), run)
        print(result.report, flush=True)
    return 0
