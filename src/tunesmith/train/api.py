"""`finetune(config)`: load the model and data, train, save a plain GPT-2 folder, report."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.checkpoint import load_checkpoint, save_checkpoint
from tunesmith.errors import CheckpointError, DataError, RunError, UsageError
from tunesmith.model_sizes import random_model
from tunesmith.train import checkpoints as ckpt
from tunesmith.train import distributed, lora
from tunesmith.train.batching import (
    COMPILE_PAD_MULTIPLE,
    BatchPlan,
    pack_blocks,
    tokenize_examples,
)
from tunesmith.train.config import CONFIG_FILE, FinetuneConfig
from tunesmith.train.loop import Trainer, TrainState, train
from tunesmith.train.loss import LMLoss
from tunesmith.train.memory import check_memory, physical_cores
from tunesmith.train.report import (
    perplexity,
    plot_losses,
    quality_report,
    sample_ids,
)

MODEL_DIR = "model"
ADAPTER_DIR = "adapter"


@dataclass
class FinetuneResult:
    model_dir: Path | None  # None on processes other than rank 0
    steps: int
    val_loss_before: float | None
    val_loss_after: float | None
    report: str
    metrics: dict[str, Any]


class _FolderRun:
    """The little of a run handle that finetune needs, for library use without the run store."""

    def __init__(self, folder: str | Path):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.final_metrics: dict[str, Any] = {}
        self.summary = None

    def use(self, ref: str, allow_unfinished: bool = False) -> str:
        return ref

    def set_main_output(self, relpath: str) -> None:
        pass

    def log_metrics(self, values: dict, step: int | None = None) -> None:
        record = ({} if step is None else {"step": step}) | dict(values)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def set_summary(self, text: str) -> None:
        self.summary = text


def finetune(
    config: FinetuneConfig,
    run=None,
    *,
    output_dir: str | Path | None = None,
    train_texts: list[str] | None = None,
    val_texts: list[str] | None = None,
) -> FinetuneResult:
    """Fine-tune `config.model` on `config.data` (or the given texts) and save it.

    `run` is a run handle from `tunesmith.runs.recorded_run` (outputs go to run.dir);
    without one, outputs go to `output_dir` (default: the current directory).
    """
    device = _device(config.device)
    info = distributed.init(device.type)
    if run is None and info.is_main:
        run = _FolderRun(output_dir or Path.cwd())
    try:
        return _finetune(config, run, info, device, train_texts, val_texts)
    finally:
        distributed.shutdown()


def _finetune(config, run, info, device, train_texts, val_texts) -> FinetuneResult:
    use = run.use if info.is_main else _resolve_quietly
    resume_dir = None
    if config.resume:
        resume_dir = _run_folder(use(config.resume, allow_unfinished=True), config.resume)
        config = _resumed_config(config, resume_dir)
    model_source = None if config.from_scratch else use(config.model)
    if device.type == "cpu":
        torch.set_num_threads(config.num_threads or max(1, physical_cores() // info.world))
    torch.manual_seed(config.seed)

    if config.from_scratch:  # GPT-2's own random init, seeded above; the shipped tokenizer
        model, tokenizer = random_model(config.from_scratch)
    else:
        model, tokenizer, _ = load_checkpoint(model_source, device="cpu")
    n_ctx = model.config.n_positions
    block_size = config.block_size or n_ctx
    if block_size > n_ctx:
        raise UsageError(
            f"--block-size {block_size} is larger than the model's context of {n_ctx} tokens; "
            f"use --block-size {n_ctx} or less"
        )
    _set_dropout(model, config.dropout, config.attn_dropout)

    if train_texts is None:
        from tunesmith.data import load_training_examples

        train_texts, val_texts = load_training_examples(use(config.data))
    val_texts = val_texts or []
    if not train_texts or not any(t.strip() for t in train_texts):
        raise DataError(
            f"no training examples in {config.data}; check the file and its column, "
            "e.g. `tunesmith data FILE --column NAME`"
        )
    eos = tokenizer.eos_id
    train_seqs, cut = tokenize_examples(tokenizer, train_texts, eos, block_size)
    val_seqs, _ = tokenize_examples(tokenizer, val_texts, eos, block_size)
    if config.packing == "blocks":
        train_seqs = pack_blocks(train_seqs, block_size)
        val_seqs = pack_blocks(val_seqs, block_size)
    global_batch = config.batch * config.grad_accum * info.world
    bucket = config.packing == "examples"
    pad = COMPILE_PAD_MULTIPLE if config.compile else 1
    plan = BatchPlan(train_seqs, global_batch, config.seed, bucket, eos, pad)
    val_plan = BatchPlan(val_seqs, config.batch, 0, bucket, eos, pad) if val_seqs else None
    steps_per_epoch = len(plan)
    total_steps = config.max_steps or config.epochs * steps_per_epoch

    if config.lora:
        lora.apply_lora(
            model, config.lora_rank, config.lora_alpha, config.lora_dropout, config.lora_targets
        )
    model.gradient_checkpointing = config.gradient_checkpointing
    longest = max(len(s) for s in train_seqs) - 1
    check_memory(model, config, device, min(longest, block_size))
    model.to(device)
    optimizer = _optimizer(model, config, device)

    state, best = TrainState(), None
    if resume_dir is not None:
        state = TrainState.from_dict(
            ckpt.load_training_checkpoint(ckpt.latest_checkpoint(resume_dir), model, optimizer)
        )
        best = _load_best(resume_dir, model) if config.early_stop else None

    if info.is_main:
        config.save(run.dir)
        _announce(config, model, plan, steps_per_epoch, total_steps, cut, resume_dir, state)
        for record in state.history:  # the resumed run's metrics cover the whole training
            run.log_metrics({k: v for k, v in record.items() if k != "step"}, record["step"])

    loss_fn = LMLoss(model, select=not config.compile)
    wrapped = distributed.wrap(loss_fn, info, device)
    if config.compile:
        wrapped = torch.compile(wrapped)
    trainer = Trainer(
        config=config,
        model=model,
        loss_fn=wrapped,
        eval_loss_fn=loss_fn,
        optimizer=optimizer,
        plan=plan,
        val_plan=val_plan,
        tokenizer=tokenizer,
        device=device,
        total_steps=total_steps,
        run=run,
        rank=info.rank,
        world=info.world,
        autocast=_use_bf16(config.precision, device),
    )
    state = train(trainer, state, best)
    val_after = next(
        (r["val_loss"] for r in reversed(state.history) if r.get("val_loss") is not None), None
    )
    if state.best_val is not None and config.early_stop:
        val_after = state.best_val
    if not info.is_main:
        return FinetuneResult(None, state.step, state.val_before, val_after, "", {})
    return _finish(run, config, model, tokenizer, train_texts, state, val_after)


def _finish(run, config, model, tokenizer, train_texts, state, val_after) -> FinetuneResult:
    model.eval()
    lens = [len(ids) for ids in tokenizer.encode_batch(train_texts)]
    with torch.random.fork_rng(devices=[]):
        ids = sample_ids(
            model, tokenizer.eos_id, config.report_samples, config.sample_tokens, config.seed
        )
    texts = [tokenizer.decode(x).strip() for x in ids]
    report, values = quality_report(
        texts,
        [len(x) for x in ids],
        train_texts,
        sum(lens) / len(lens),
        perplexity(state.val_before),
        perplexity(val_after),
    )
    model_dir = save_model(run.dir, model, tokenizer, config)
    plot_losses(state.history, Path(run.dir) / "loss.png")
    (Path(run.dir) / "report.txt").write_text(report + "\n", encoding="utf-8")
    print(report, flush=True)
    metrics = {
        "steps": state.step,
        "epochs": next((r["epoch"] for r in reversed(state.history) if "epoch" in r), 0),
        "tokens": state.tokens,
        "val_loss_before": state.val_before,
        "val_loss_after": val_after,
        "stopped_early": state.stopped_early,
        **values,
    }
    train_losses = [r["train_loss"] for r in state.history if "train_loss" in r]
    if train_losses:
        metrics["train_loss_final"] = train_losses[-1]
    run.final_metrics.update({k: v for k, v in metrics.items() if v is not None})
    ppl = ""
    if values["val_ppl_before"] is not None and values["val_ppl_after"] is not None:
        ppl = f", val ppl {values['val_ppl_before']:.1f} -> {values['val_ppl_after']:.1f}"
    kind = "LoRA" if config.lora else "full"
    run.set_summary(f"{kind} fine-tune of {config.model_name}: {state.step} steps{ppl}")
    run.set_main_output(MODEL_DIR)
    return FinetuneResult(
        model_dir, state.step, state.val_before, val_after, report, run.final_metrics
    )


def save_model(run_dir: Path, model, tokenizer, config: FinetuneConfig) -> Path:
    """runs/N/model: a plain GPT-2 folder (LoRA merged in, adapter saved beside it), written
    to a temporary folder first and renamed, so it is complete or absent."""
    run_dir = Path(run_dir)
    final = run_dir / MODEL_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=run_dir))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; the model folder is for sharing
    try:
        if config.lora:
            adapter = {
                "rank": config.lora_rank,
                "alpha": config.lora_alpha,
                "dropout": config.lora_dropout,
                "targets": list(config.lora_targets),
                "base_model": config.model,
            }
            lora.save_adapter(model, tmp / ADAPTER_DIR, adapter)
            lora.unwrap_lora(model)
        generation = {"do_sample": True, "top_p": 0.95}
        save_checkpoint(model.to("cpu"), tokenizer, tmp, generation_config=generation)
        config.save(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"cannot write the fine-tuned model to {final}: {e.strerror or e}; the training "
            f"checkpoints in {run_dir / ckpt.CHECKPOINTS} are intact, resume with --resume"
        ) from None
    return final


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but no CUDA device is available; use --device cpu")
    return torch.device(name)


def _use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast (weights and optimizer stay fp32): the default on CUDA; on CPU only when
    asked for and the CPU computes bf16 natively (without it bf16 matmuls are slower)."""
    if precision == "fp32" or (precision == "auto" and device.type == "cpu"):
        return False
    if device.type == "cpu" and not cpu_has_bf16():
        raise UsageError(
            "--precision bf16 on this CPU would be slow: it has no native bf16 "
            "(avx512_bf16 / amx_bf16); use --precision fp32"
        )
    return True


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _optimizer(model, config: FinetuneConfig, device: torch.device) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    try:
        # One fused kernel per step; on CPU (torch >= 2.4) about 10x faster than foreach here.
        return torch.optim.AdamW(groups, lr=config.learning_rate, fused=True)
    except (RuntimeError, TypeError):  # older torch on CPU
        return torch.optim.AdamW(groups, lr=config.learning_rate, foreach=True)


def _set_dropout(model, p: float | None, attn_p: float | None = None) -> None:
    """Set the residual/embedding dropout (None: keep the model's) and the attention dropout
    (None: the same as the other)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and p is not None:
            module.p = p
    for module in model.modules():
        if hasattr(module, "attn_dropout"):
            if attn_p is not None:
                module.attn_dropout = attn_p
            elif p is not None:
                module.attn_dropout = p


def _resolve_quietly(ref: str, allow_unfinished: bool = False) -> str:
    from tunesmith.runs import is_run_reference, resolve_reference

    if is_run_reference(ref):
        return str(resolve_reference(ref, allow_unfinished=allow_unfinished))
    return ref


def _run_folder(path: str, ref: str) -> Path:
    folder = Path(path)
    if folder.name == MODEL_DIR and (folder.parent / CONFIG_FILE).is_file():
        folder = folder.parent
    if not (folder / CONFIG_FILE).is_file():
        raise RunError(
            f"--resume {ref}: {folder} is not a fine-tuning run (no {CONFIG_FILE}); "
            "pass the runs/N of an interrupted `tunesmith finetune`"
        )
    return folder


def _resumed_config(config: FinetuneConfig, folder: Path) -> FinetuneConfig:
    """A resumed run must keep the settings it was started with (bar the harmless ones)."""
    old = FinetuneConfig.load(folder)
    changed = config.differences(old)
    if changed:
        raise UsageError(
            f"--resume {config.resume}: that run was started with other settings: "
            + "; ".join(changed)
            + ". Resume with the same settings (or none), or start a new run"
        )
    return config


def _load_best(folder: Path, model) -> dict | None:
    best = folder / ckpt.CHECKPOINTS / ckpt.BEST
    if not (best / "model.safetensors").is_file():
        return None
    from safetensors.torch import load_file

    return load_file(best / "model.safetensors")


def _announce(config, model, plan, steps_per_epoch, total_steps, cut, resume_dir, state) -> None:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    kind = f"LoRA rank {config.lora_rank}" if config.lora else "full fine-tune"
    print(
        f"finetune {config.model_name}: {kind}, {trainable:,} of {total:,} parameters train; "
        f"{len(plan.sequences):,} {config.packing} ({plan.num_targets():,} tokens), "
        f"{steps_per_epoch} steps/epoch, {total_steps} steps",
        flush=True,
    )
    if cut:
        print(f"note: {cut} examples were longer than the block size and were cut", flush=True)
    if resume_dir is not None:
        print(f"resuming {resume_dir} at step {state.step} (epoch {state.epoch})", flush=True)
