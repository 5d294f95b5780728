"""The training loop: a plain function, evaluation before/during/after, samples, checkpoints.

One optimizer step trains one global batch of the BatchPlan (batch size x grad accumulation x
processes examples). The loss is the mean over every target token of that global batch, however
it is split across micro-batches and processes, so any split gives the same update.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from tunesmith.progress import progress_bar
from tunesmith.runs.context import RunContext
from tunesmith.train import resume_state
from tunesmith.train.batching import IGNORE, Batch, BatchPlan
from tunesmith.train.config import FinetuneConfig
from tunesmith.train.quality import perplexity, sample_texts
from tunesmith.train.schedule import lr_at


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint as trainer_state.json."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # global batches of `epoch` already trained
    tokens: int = 0  # target tokens trained on
    val_before: float | None = None
    best_val: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainState:
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


@dataclass
class Trainer:
    """Everything the loop works with, built by `tunesmith.train.api.finetune`."""

    config: FinetuneConfig
    model: torch.nn.Module  # the GPT2 (LoRA-wrapped or not) whose weights train
    train_model: torch.nn.Module  # the model, possibly DDP- or compile-wrapped, to train with
    optimizer: torch.optim.Optimizer
    plan: BatchPlan
    val_plan: BatchPlan | None
    tokenizer: Any
    device: torch.device
    total_steps: int
    run: RunContext | None  # where outputs and metrics go; None on ranks other than 0
    rank: int = 0
    world: int = 1
    autocast: bool = False  # bf16 autocast (CUDA)
    progress: Callable[[str], None] = tqdm.write  # where the lines the user watches go

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def log(self, text: str) -> None:
        if self.is_main:
            self.progress(text)

    def amp(self):
        if self.autocast:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def train(t: Trainer, state: TrainState, best_weights: dict | None = None) -> TrainState:
    """Run (or continue) training until the last step or an early stop."""
    params = [p for p in t.model.parameters() if p.requires_grad]
    if state.step == 0 and not state.history:
        best_weights = _evaluate_before_training(t, state) or best_weights
    bar = progress_bar(
        total=t.total_steps,
        unit="step",
        enabled=t.is_main and t.config.progress,
        initial=state.step,
        dynamic_ncols=True,
    )
    t.model.train()
    speed = _Throughput()
    try:
        while state.step < t.total_steps and not state.stopped_early:
            batches = t.plan.epoch(state.epoch)
            while state.batch_in_epoch < len(batches) and state.step < t.total_steps:
                _train_step(t, state, batches[state.batch_in_epoch], params, bar, speed)
                epoch_end = state.batch_in_epoch == len(batches)
                if epoch_end:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                best_weights = _after_step(t, state, epoch_end, best_weights)
                if state.stopped_early or epoch_end:
                    break  # at an epoch end, the outer loop takes the next epoch's order
    finally:
        bar.close()
    if t.config.early_stop and best_weights is not None and state.best_step != state.step:
        with torch.no_grad():
            for name, p in t.model.named_parameters():
                if name in best_weights:
                    p.copy_(best_weights[name])
        t.log(f"kept the weights of step {state.best_step} (best validation loss)")
    return state


class _Throughput:
    """Target tokens per second over roughly the last 10 s of step time."""

    def __init__(self) -> None:
        self.tokens, self.seconds = 0, 0.0

    def add(self, tokens: int, seconds: float) -> float:
        self.tokens, self.seconds = self.tokens + tokens, self.seconds + seconds
        rate = self.tokens / max(self.seconds, 1e-9)
        if self.seconds > 10:
            self.tokens, self.seconds = self.tokens // 2, self.seconds / 2
        return rate


def _evaluate_before_training(t: Trainer, state: TrainState) -> dict | None:
    """The validation loss of the untrained model: the baseline of the report and of
    early stopping. Returns the weights to keep as the best so far (with --early-stop)."""
    val = evaluate(t)
    state.val_before = val
    if val is not None:
        _record(t, state, {"val_loss": val, "val_ppl": perplexity(val)}, note="before training")
    state.best_val, state.best_step = val, 0
    if t.config.early_stop and val is not None:
        return _keep_best(t, state)
    return None


def _train_step(
    t: Trainer, state: TrainState, indices: list[int], params: list, bar, speed: _Throughput
) -> None:
    """One optimizer step on the global batch `indices`, recorded and shown on the bar."""
    started = time.perf_counter()
    loss, n_targets, grad_norm, lr = _step(t, indices, params, state.step)
    tokens_per_s = speed.add(n_targets, time.perf_counter() - started)
    state.step += 1
    state.batch_in_epoch += 1
    state.tokens += n_targets
    epoch_float = state.epoch + state.batch_in_epoch / len(t.plan)
    values = {
        "epoch": round(epoch_float, 4),
        "train_loss": loss,
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens": state.tokens,
        "tokens_per_s": round(tokens_per_s, 1),
    }
    _record(t, state, values)
    bar.set_postfix(epoch=f"{epoch_float:.2f}", loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
    bar.update(1)


def _after_step(t: Trainer, state: TrainState, epoch_end: bool, best_weights: dict | None):
    """Evaluate, sample and save when their turn (or the last step, or an epoch end) comes."""
    cfg = t.config
    last = state.step == t.total_steps
    evaluates = cfg.eval_every and state.step % cfg.eval_every == 0
    if evaluates or last or (epoch_end and not cfg.eval_every):
        best_weights = _evaluate_and_track(t, state, best_weights)
    if cfg.sample_every and (state.step % cfg.sample_every == 0 or last):
        _write_samples(t, state)
    saves = cfg.save_every and state.step % cfg.save_every == 0
    if saves or epoch_end or last or state.stopped_early:
        save(t, state)
    return best_weights


def _step(t: Trainer, indices: list[int], params: list[torch.nn.Parameter], step: int):
    cfg = t.config
    parts = t.world * cfg.grad_accum
    mine = t.plan.micro_batches(indices, parts)[t.rank :: t.world]
    batches = [t.plan.collate(mb) or _empty_batch() for mb in mine]
    local = sum(b.num_targets for b in batches)
    n_targets = int(_all_sum(t, float(local)))
    lr = lr_at(
        step, cfg.learning_rate, cfg.warmup_steps(t.total_steps), t.total_steps, cfg.schedule
    )
    for group in t.optimizer.param_groups:
        group["lr"] = lr
    # DDP averages gradients over processes; scaling by world / n_targets makes it the mean
    # over every target token of the global batch.
    scale = t.world / max(n_targets, 1)
    loss_sum = 0.0
    for k, batch in enumerate(batches):
        batch = batch.to(t.device)
        sync = k == len(batches) - 1 or t.world == 1
        no_sync = getattr(t.train_model, "no_sync", None)
        with contextlib.nullcontext() if sync or no_sync is None else no_sync():
            with t.amp():
                loss = t.train_model(batch.inputs, targets=batch.labels)
            (loss * scale).backward()
        loss_sum += loss.item()
    max_norm = cfg.clip_norm or float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    t.optimizer.step()
    t.optimizer.zero_grad(set_to_none=True)
    loss = _all_sum(t, loss_sum) / max(n_targets, 1)
    return loss, n_targets, grad_norm, lr


def _empty_batch() -> Batch:
    """A rank whose share of a small last batch is empty still joins the gradient all-reduce."""
    return Batch(torch.zeros((1, 1), dtype=torch.long), torch.full((1, 1), IGNORE))


def _all_sum(t: Trainer, value: float) -> float:
    if t.world == 1:
        return value
    x = torch.tensor([value], dtype=torch.float64, device=t.device)
    dist.all_reduce(x)
    return float(x.item())


@torch.no_grad()
def evaluate(t: Trainer) -> float | None:
    """Mean validation loss per token (None without validation data)."""
    if t.val_plan is None or not t.val_plan.sequences:
        return None
    was_training = t.model.training
    t.model.eval()
    total, count = 0.0, 0
    batches = t.val_plan.epoch(0)
    for batch_indices in batches[t.rank :: t.world]:
        batch = t.val_plan.collate(batch_indices).to(t.device)
        with t.amp():
            total += float(t.model(batch.inputs, targets=batch.labels))
        count += batch.num_targets
    t.model.train(was_training)
    total, count = _all_sum(t, total), _all_sum(t, float(count))
    return total / max(count, 1)


def _evaluate_and_track(t: Trainer, state: TrainState, best_weights: dict | None):
    cfg = t.config
    val = evaluate(t)
    if val is None:
        return best_weights
    note = ""
    if state.best_val is None or val < state.best_val:
        state.best_val, state.best_step, state.bad_evals = val, state.step, 0
        if cfg.early_stop:
            best_weights = _keep_best(t, state)
    else:
        state.bad_evals += 1
        if cfg.early_stop and state.bad_evals >= cfg.early_stop:
            state.stopped_early = True
            note = f"early stop: no improvement in {state.bad_evals} evaluations"
    _record(t, state, {"val_loss": val, "val_ppl": perplexity(val)}, note=note)
    return best_weights


def _keep_best(t: Trainer, state: TrainState) -> dict[str, torch.Tensor]:
    """A copy of the best weights so far, in memory and (for --resume) on disk."""
    if t.is_main:
        resume_state.save_best(t.run.dir, t.model, {"step": state.step, "val_loss": state.best_val})
    return {n: p.detach().clone() for n, p in t.model.named_parameters() if p.requires_grad}


def _record(t: Trainer, state: TrainState, values: dict, note: str = "") -> None:
    record = {"step": state.step, **values}
    state.history.append(record)
    if not t.is_main:
        return
    t.run.log_metrics(values, step=state.step)
    if "val_loss" in values and values["val_loss"] is not None:
        t.log(
            f"step {state.step}: val loss {values['val_loss']:.4f}, "
            f"perplexity {values['val_ppl']:.2f}" + (f" ({note})" if note else "")
        )
    elif note:
        t.log(f"step {state.step}: {note}")


def _write_samples(t: Trainer, state: TrainState) -> None:
    cfg = t.config
    if not t.is_main or cfg.samples == 0:
        return
    with torch.random.fork_rng(devices=[]):
        texts = sample_texts(
            t.model, t.tokenizer, cfg.samples, cfg.sample_tokens, seed=cfg.seed + state.step
        )
    t.log(f"step {state.step} samples:\n" + "\n".join(f"  > {s!r}" for s in texts))
    with open(Path(t.run.dir) / "samples.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": state.step, "samples": texts}) + "\n")


def save(t: Trainer, state: TrainState) -> None:
    if t.is_main:
        # The last checkpoint lets a run killed before its model is saved finish on --resume
        # without training again; no step follows it, so it needs no optimizer state.
        finished = state.step >= t.total_steps or state.stopped_early
        # A full model that is kept as it ends (not --early-stop's best) is written in the
        # model folder's bytes, which that folder then shares instead of writing them again.
        shared = finished and not t.config.lora and not t.config.early_stop
        resume_state.save_training_checkpoint(
            t.run.dir,
            t.model,
            None if finished else t.optimizer,
            state.to_dict(),
            t.config.keep_checkpoints,
            resume_state.TRANSFORMERS if shared else resume_state.OURS,
        )
    if t.world > 1:
        dist.barrier()
