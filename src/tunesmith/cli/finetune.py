"""`tunesmith finetune`: fine-tune a GPT-2 on your data (a thin layer over tunesmith.train)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tunesmith.cli._common import add_run_options, run_for
from tunesmith.cli.remote import add_cluster_arguments, cluster_config, run_remote

# Options that map one-to-one onto FinetuneConfig fields (dest = field name).
_UNSET = argparse.SUPPRESS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a GPT-2 on your data (full or LoRA), as a resumable run",
        description="Fine-tune a GPT-2-family model on your data. The model is saved to "
        "runs/N/model (a Hugging Face folder); checkpoints let --resume continue a killed run.",
        argument_default=_UNSET,
    )
    p.add_argument("--model", "-m", help="model to start from: hub id, folder or runs/N (gpt2)")
    p.add_argument("--data", "-d", help="a data run (runs/N) or any source `tunesmith data` reads")
    p.add_argument(
        "--packing",
        choices=("examples", "blocks"),
        help="examples: one example per sequence, length-bucketed (default); "
        "blocks: concatenate and cut --block-size chunks",
    )
    p.add_argument("--block-size", type=int, help="max tokens per sequence (model's context)")
    g = p.add_argument_group("optimization")
    g.add_argument("--lr", type=float, help="peak learning rate (1e-4 full, 1e-3 LoRA)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay (0)")
    g.add_argument("--warmup", type=int, help="linear warm-up steps (0)")
    g.add_argument("--schedule", choices=("linear", "cosine", "constant"), help="(linear)")
    g.add_argument(
        "--batch-size",
        type=int,
        help="sequences per device and micro-batch (32 examples, 4 blocks)",
    )
    g.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (1)")
    g.add_argument("--max-grad-norm", type=float, help="gradient clipping norm, 0 = off (1.0)")
    g.add_argument("--epochs", type=int, help="passes over the data (3)")
    g.add_argument("--max-steps", type=int, help="stop after this many steps (overrides epochs)")
    g.add_argument("--seed", type=int, help="random seed (0)")
    g.add_argument("--dropout", type=float, help="embedding/residual dropout (the model's)")
    g.add_argument(
        "--attn-dropout",
        type=float,
        help="attention dropout (0: lets attention use the fused kernel)",
    )
    g = p.add_argument_group("LoRA")
    g.add_argument("--lora", action="store_true", help="train low-rank adapters only")
    g.add_argument("--lora-rank", type=int, help="(8)")
    g.add_argument("--lora-alpha", type=float, help="(16)")
    g.add_argument("--lora-dropout", type=float, help="(0)")
    g.add_argument(
        "--lora-targets",
        nargs="+",
        metavar="LAYER",
        help="c_attn attn.c_proj c_fc mlp.c_proj (c_attn attn.c_proj)",
    )
    g = p.add_argument_group("evaluation, samples and checkpoints")
    g.add_argument("--eval-every", type=int, help="steps between evaluations (each epoch end)")
    g.add_argument(
        "--early-stop",
        type=int,
        metavar="PATIENCE",
        help="stop after this many evaluations without improvement; keep the best",
    )
    g.add_argument("--sample-every", type=int, help="steps between samples written to the log")
    g.add_argument("--samples", type=int, help="samples each --sample-every (3)")
    g.add_argument("--sample-tokens", type=int, help="max tokens per sample (40)")
    g.add_argument("--report-samples", type=int, help="samples in the final report (10)")
    g.add_argument("--save-every", type=int, help="steps between checkpoints (and each epoch end)")
    g.add_argument("--keep-checkpoints", type=int, help="checkpoints kept (2)")
    g.add_argument("--resume", metavar="RUN", help="continue an interrupted run (runs/N)")
    g = p.add_argument_group("devices")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), help="(auto)")
    g.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        help="auto: fp32 on CPU, bf16 autocast on CUDA; bf16 on CPU needs native bf16",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations in backward: less memory, ~30%% slower",
    )
    g.add_argument("--num-threads", type=int, help="CPU threads (physical cores)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument("--nproc", type=int, help="processes per node (DistributedDataParallel)")
    g.add_argument("--nnodes", type=int, help="nodes (1)")
    g.add_argument("--node-rank", type=int, help="rank of this node (0)")
    g.add_argument("--master-addr", help="address of node 0")
    g.add_argument("--master-port", type=int, help="port on node 0")
    p.add_argument("--output-dir", help="with --no-run: where to write (current directory)")
    add_run_options(p)
    add_cluster_arguments(p)
    p.set_defaults(handler=run_finetune, workspace=None, no_run=False)


LAUNCH = ("nproc", "nnodes", "node_rank", "master_addr", "master_port", "output_dir")
COMMON = ("workspace", "no_run", "handler", "command", "command_line")


def run_finetune(args: argparse.Namespace) -> int:
    from tunesmith.train import FinetuneConfig, finetune
    from tunesmith.train.api import _run_folder
    from tunesmith.train.distributed import in_launched_process, launch

    given = {k: v for k, v in vars(args).items() if k not in LAUNCH + COMMON}
    if "lora_targets" in given:
        given["lora_targets"] = tuple(given["lora_targets"])
    if (cluster := cluster_config(args)) is not None:
        if not given.get("resume"):
            FinetuneConfig.from_dict(given)  # bad values fail before a run is created
        # --gpus N on one node: the DDP launcher there, one process per GPU
        gpus = int(cluster.gpus)
        one_node = gpus > 1 and cluster.nodes == 1 and not hasattr(args, "nproc")
        extra = ["--nproc", str(gpus)] if one_node else []
        return run_remote(args, "finetune", cluster, extra)
    nproc, nnodes = getattr(args, "nproc", 1), getattr(args, "nnodes", 1)
    if (nproc > 1 or nnodes > 1) and not in_launched_process():
        return launch(
            args.command_line[1:],
            nproc,
            nnodes,
            getattr(args, "node_rank", 0),
            getattr(args, "master_addr", None),
            getattr(args, "master_port", None),
        )
    if not given.get("resume"):
        FinetuneConfig.from_dict(given)  # bad values fail before a run is created
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:  # only rank 0 records the run and writes files
        return _finetune_worker(given)
    output_dir = getattr(args, "output_dir", None)
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in given.items()}
    with run_for(args, "finetune", params, output_dir=output_dir) as run:
        if given.get("resume"):
            folder = _run_folder(run.use(given["resume"], allow_unfinished=True), given["resume"])
            old = FinetuneConfig.load(folder).to_dict()
            given = {**old, **given, "resume": str(folder)}
            if "lora_targets" in given:
                given["lora_targets"] = tuple(given["lora_targets"])
        finetune(FinetuneConfig.from_dict(given), run)
    return 0


def _finetune_worker(given: dict) -> int:
    from tunesmith.train import FinetuneConfig, finetune
    from tunesmith.train.api import _resolve_quietly, _run_folder

    if given.get("resume"):
        ref = given["resume"]
        folder = _run_folder(_resolve_quietly(ref, allow_unfinished=True), ref)
        given = {**FinetuneConfig.load(folder).to_dict(), **given, "resume": str(folder)}
    finetune(FinetuneConfig.from_dict(given), None, output_dir=Path(os.devnull).parent)
    return 0
