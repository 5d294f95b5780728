"""`finetune(config)`: load the model and data, train, save a plain GPT-2 folder, report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from tunesmith.checkpoint import load_checkpoint, save_checkpoint
from tunesmith.devices import (
    precision_name,
    resolve_device,
    resolve_dtype,
    set_training_threads,
    use_bf16_autocast,
)
from tunesmith.errors import CheckpointError, DataError, UsageError
from tunesmith.files import write_folder_atomically, write_text_atomically
from tunesmith.model_sizes import random_model
from tunesmith.runs.context import FolderRun, RunContext
from tunesmith.train import distributed, lora, resume_state, trackers
from tunesmith.train.batching import (
    COMPILE_PAD_MULTIPLE,
    BatchPlan,
    pack_blocks,
    tokenize_examples,
)
from tunesmith.train.config import MODEL_DIR, FinetuneConfig
from tunesmith.train.loop import Trainer, TrainState, train
from tunesmith.train.memory import check_memory
from tunesmith.train.quality import (
    perplexity,
    plot_losses,
    quality_report,
    sample_ids,
)
from tunesmith.train.resume import check_resumable, resolve_quietly, run_folder

ADAPTER_DIR = "adapter"


@dataclass
class FinetuneResult:
    """What `finetune` returns; the caller decides whether to show the report."""

    model_dir: Path | None  # None on processes other than rank 0
    steps: int
    val_loss_before: float | None
    val_loss_after: float | None
    report: str  # the quality report, as saved in report.txt (empty off rank 0)
    metrics: dict[str, Any]


def finetune(
    config: FinetuneConfig,
    run: RunContext | None = None,
    *,
    output_dir: str | Path | None = None,
    train_texts: list[str] | None = None,
    val_texts: list[str] | None = None,
    log: Callable[[str], None] = tqdm.write,
) -> FinetuneResult:
    """Fine-tune `config.model` on `config.data` (or the given texts) and save it; the result
    holds the quality report (also saved as report.txt) and the final metrics.

    `run` is a run handle from `tunesmith.runs.recorded_run` (outputs go to run.dir);
    without one, outputs go to `output_dir` (default: the current directory). `log` receives
    the progress lines the user watches (what trains, evaluations, samples); the default
    prints them beside the progress bar, `log=lambda line: None` silences them.
    """
    device = resolve_device(config.device)
    info = distributed.init(device.type)
    if run is None and info.is_main:
        run = FolderRun(output_dir or Path.cwd())
    try:
        with trackers.reporting(run, config, enabled=info.is_main) as run:  # --report-to
            return _finetune(config, run, info, device, train_texts, val_texts, log)
    finally:
        distributed.shutdown()


def _finetune(config, run, info, device, train_texts, val_texts, log) -> FinetuneResult:
    use = run.use if info.is_main else resolve_quietly
    resume_dir = None
    if config.resume:
        resume_dir = run_folder(use(config.resume, allow_unfinished=True), config.resume)
        check_resumable(config, FinetuneConfig.load(resume_dir), config.resume)
    model_source = None if config.from_scratch else use(config.model)
    if device.type == "cpu":
        set_training_threads(config.num_threads, info.world)
    torch.manual_seed(config.seed)
    model, tokenizer, block_size = _load_model(model_source, config)
    if train_texts is None:
        from tunesmith.data import load_training_examples

        train_texts, val_texts = load_training_examples(use(config.data))
    plan, val_plan, cut = _batch_plans(
        config, tokenizer, train_texts, val_texts or [], block_size, info.world
    )
    total_steps = config.max_steps or config.epochs * len(plan)
    longest = max(len(s) for s in plan.sequences) - 1  # inputs drop the last token
    _prepare_model(model, config, device, min(longest, block_size))
    optimizer = _optimizer(model, config)
    autocast = use_bf16_autocast(config.precision, device)
    state, best = _restore(resume_dir, model, optimizer, config.early_stop)
    if info.is_main:
        config.save(run.dir)
        precision = run.final_metrics["precision"] = precision_name(autocast)  # auto's choice
        for line in _announce(config, model, plan, total_steps, cut, resume_dir, state, precision):
            log(line)
        for record in state.history:  # the resumed run's metrics cover the whole training
            run.log_metrics({k: v for k, v in record.items() if k != "step"}, record["step"])

    train_model = distributed.wrap(model, info, device)
    if config.compile:
        train_model = torch.compile(train_model)
    trainer = Trainer(
        config=config,
        model=model,
        train_model=train_model,
        optimizer=optimizer,
        plan=plan,
        val_plan=val_plan,
        tokenizer=tokenizer,
        device=device,
        total_steps=total_steps,
        run=run,
        rank=info.rank,
        world=info.world,
        autocast=autocast,
        progress=log,
    )
    state = train(trainer, state, best)
    val_after = _final_val_loss(state, config.early_stop)
    if not info.is_main:
        return FinetuneResult(None, state.step, state.val_before, val_after, "", {})
    return _finish(run, config, model, tokenizer, train_texts, state, val_after)


def _load_model(source: str | None, config: FinetuneConfig):
    """The model (on the CPU, with the run's dropout), its tokenizer and the block size."""
    if config.from_scratch:  # GPT-2's own random init, seeded above; the shipped tokenizer
        model, tokenizer = random_model(config.from_scratch)
    else:
        model, tokenizer, _ = load_checkpoint(source, device="cpu")
    n_ctx = model.config.n_positions
    block_size = config.block_size or n_ctx
    if block_size > n_ctx:
        raise UsageError(
            f"--block-size {block_size} is larger than the model's context of {n_ctx} tokens; "
            f"use --block-size {n_ctx} or less"
        )
    _set_dropout(model, config.dropout, config.attn_dropout)
    return model, tokenizer, block_size


def _batch_plans(config: FinetuneConfig, tokenizer, train_texts, val_texts, block_size, world):
    """The training and validation BatchPlans, and how many examples were cut."""
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
    global_batch = config.batch * config.grad_accum * world
    bucket = config.packing == "examples"
    pad = COMPILE_PAD_MULTIPLE if config.compile else 1
    plan = BatchPlan(train_seqs, global_batch, config.seed, bucket, eos, pad)
    val_plan = BatchPlan(val_seqs, config.batch, 0, bucket, eos, pad) if val_seqs else None
    return plan, val_plan, cut


def _prepare_model(model, config: FinetuneConfig, device: torch.device, seq_len: int) -> None:
    """LoRA adapters and checkpointing as configured, checked to fit, moved to the device."""
    if config.lora:
        lora.apply_lora(
            model, config.lora_rank, config.lora_alpha, config.lora_dropout, config.lora_targets
        )
    model.gradient_checkpointing = config.gradient_checkpointing
    check_memory(model, config, device, seq_len)
    model.to(device)


def _restore(resume_dir: Path | None, model, optimizer, early_stop: int | None):
    """The TrainState (and best weights so far) to start from: fresh, or the run's last
    checkpoint with its weights, optimizer and RNG restored."""
    if resume_dir is None:
        return TrainState(), None
    checkpoint = resume_state.latest_checkpoint(resume_dir)
    state = TrainState.from_dict(
        resume_state.load_training_checkpoint(checkpoint, model, optimizer)
    )
    return state, (_load_best(resume_dir) if early_stop else None)


def _final_val_loss(state: TrainState, early_stop: int | None) -> float | None:
    """The last validation loss, or the best one when early stopping kept the best weights."""
    if state.best_val is not None and early_stop:
        return state.best_val
    return next(
        (r["val_loss"] for r in reversed(state.history) if r.get("val_loss") is not None), None
    )


def _finish(run, config, model, tokenizer, train_texts, state, val_after) -> FinetuneResult:
    model.eval()
    weights = resume_state.final_weights(run.dir, state.step)  # the last checkpoint's file
    model_dir = save_model(run.dir, model, tokenizer, config, weights)
    lens = [len(ids) for ids in tokenizer.encode_batch(train_texts)]
    # The report's samples decode together, as `tunesmith generate` would: in the dtype it
    # picks here (bf16 reads half the bytes on a CPU with native bf16, even where bf16 trains
    # slower than fp32). The weights are saved above, so the model can change its dtype.
    model.to(resolve_dtype("auto", model.device))
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
    plot_losses(state.history, Path(run.dir) / "loss.png")
    write_text_atomically(Path(run.dir) / "report.txt", report + "\n")
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
    precision = run.final_metrics.get("precision", "")
    run.set_summary(
        f"{kind} fine-tune of {config.model_name} ({precision}): {state.step} steps{ppl}"
    )
    run.set_main_output(MODEL_DIR)
    return FinetuneResult(
        model_dir, state.step, state.val_before, val_after, report, run.final_metrics
    )


def save_model(
    run_dir: Path, model, tokenizer, config: FinetuneConfig, weights: Path | None = None
) -> Path:
    """runs/N/model: a plain GPT-2 folder (LoRA merged in, adapter saved beside it), written
    to a temporary folder first and renamed, so it is complete or absent. `weights`: the
    model's current weights, already written by `checkpoint.write_weights` (the last training
    checkpoint's), linked into the folder rather than written again."""
    final = Path(run_dir) / MODEL_DIR

    def write(tmp: Path) -> None:
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
        save_checkpoint(model, tokenizer, tmp, generation, weights_file=weights)
        config.save(tmp)

    try:
        write_folder_atomically(final, write)
    except Exception as e:
        reason = resume_state.write_failure(e)
        if reason is None:
            raise
        raise CheckpointError(
            f"cannot write the fine-tuned model to {final}: {reason}; the training "
            f"checkpoints in {Path(run_dir) / resume_state.CHECKPOINTS} are intact, resume "
            "with --resume"
        ) from None
    return final


def _optimizer(model, config: FinetuneConfig) -> torch.optim.Optimizer:
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


def _load_best(folder: Path) -> dict | None:
    best = folder / resume_state.CHECKPOINTS / resume_state.BEST
    if not (best / "model.safetensors").is_file():
        return None
    from safetensors.torch import load_file

    return load_file(best / "model.safetensors")


def _announce(config, model, plan, total_steps, cut, resume_dir, state, precision) -> list[str]:
    """What is about to train, in a few lines."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    kind = f"LoRA rank {config.lora_rank}" if config.lora else "full fine-tune"
    lines = [
        f"finetune {config.model_name}: {kind}, {trainable:,} of {total:,} parameters train; "
        f"{len(plan.sequences):,} {config.packing} ({plan.num_targets():,} tokens), "
        f"{len(plan)} steps/epoch, {total_steps} steps, {precision}"
    ]
    if cut:
        lines.append(f"note: {cut} examples were longer than the block size and were cut")
    if resume_dir is not None:
        lines.append(f"resuming {resume_dir} at step {state.step} (epoch {state.epoch})")
    return lines
