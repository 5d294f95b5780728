"""`FinetuneConfig`: every option of a fine-tuning run; validated on construction, saved with it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tunesmith.errors import UsageError
from tunesmith.options import require_finite

PACKINGS = ("examples", "blocks")
SCHEDULES = ("linear", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
LORA_TARGETS = ("c_attn", "attn.c_proj", "c_fc", "mlp.c_proj")
CONFIG_FILE = "finetune_config.json"
# Options that may change when a run is resumed: they do not alter the weights it ends with.
RESUMABLE_CHANGES = frozenset(
    {"device", "num_threads", "keep_checkpoints", "progress", "compile", "resume"}
)


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune `model` on `data`; validated on construction, saved with the run."""

    model: str = "gpt2"
    data: str = ""
    packing: str = "examples"
    block_size: int | None = None  # None: the model's context (n_positions)
    lr: float | None = None  # None: 1e-4 for a full fine-tune, 1e-3 with LoRA
    weight_decay: float = 0.0
    warmup: int = 0  # steps of linear warm-up
    schedule: str = "linear"
    batch_size: int | None = None  # per device and micro-batch; None: 32 examples or 4 blocks
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0  # None or 0: no clipping
    epochs: int = 3
    max_steps: int | None = None  # set: train exactly this many optimizer steps
    seed: int = 0
    dropout: float | None = None  # None: the model's own dropout (embeddings, residuals)
    # Dropout on attention probabilities. 0 by default: with it PyTorch's fused attention kernel
    # cannot run and a step on 1,024-token blocks takes about twice as long on CPU. None: as
    # --dropout (or the model's).
    attn_dropout: float | None = 0.0
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0  # as PEFT; each dropout costs a Bernoulli draw per activation
    lora_targets: tuple[str, ...] = ("c_attn", "attn.c_proj")
    eval_every: int | None = None  # None: evaluate before, at each epoch end and at the end
    early_stop: int | None = None  # patience in evaluations
    sample_every: int | None = None
    samples: int = 3  # samples written at each --sample-every
    sample_tokens: int = 40
    report_samples: int = 10  # samples in the final quality report
    save_every: int | None = None  # checkpoints also at each epoch end
    keep_checkpoints: int = 2
    resume: str | None = None
    device: str = "auto"
    precision: str = "auto"  # auto: fp32 on CPU, bf16 autocast on CUDA
    compile: bool = False
    gradient_checkpointing: bool = False
    num_threads: int | None = None  # None: the number of physical cores
    progress: bool = True

    def __post_init__(self) -> None:
        require_finite(self)
        if not self.data and not self.resume:
            raise UsageError("--data is required: a data run (runs/N) or a file tunesmith reads")
        _choice("--packing", self.packing, PACKINGS)
        _choice("--schedule", self.schedule, SCHEDULES)
        _choice("--device", self.device, DEVICES)
        _choice("--precision", self.precision, PRECISIONS)
        for flag, value in (
            ("--grad-accum", self.grad_accum),
            ("--epochs", self.epochs),
            ("--lora-rank", self.lora_rank),
            ("--keep-checkpoints", self.keep_checkpoints),
        ):
            if value < 1:
                raise UsageError(f"{flag} must be at least 1, not {value}")
        for flag, value in (
            ("--batch-size", self.batch_size),
            ("--block-size", self.block_size),
            ("--max-steps", self.max_steps),
            ("--eval-every", self.eval_every),
            ("--early-stop", self.early_stop),
            ("--sample-every", self.sample_every),
            ("--save-every", self.save_every),
            ("--num-threads", self.num_threads),
        ):
            if value is not None and value < 1:
                raise UsageError(f"{flag} must be at least 1, not {value}")
        if self.block_size is not None and self.block_size < 2:
            raise UsageError(f"--block-size must be at least 2 tokens, not {self.block_size}")
        if self.lr is not None and not self.lr > 0:
            raise UsageError(f"--lr must be positive, not {self.lr}")
        if self.weight_decay < 0:
            raise UsageError(f"--weight-decay must be 0 or more, not {self.weight_decay}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be 0 or more steps, not {self.warmup}")
        if self.max_grad_norm is not None and self.max_grad_norm < 0:
            raise UsageError(f"--max-grad-norm must be 0 or more, not {self.max_grad_norm}")
        for flag, p in (
            ("--dropout", self.dropout),
            ("--attn-dropout", self.attn_dropout),
            ("--lora-dropout", self.lora_dropout),
        ):
            if p is not None and not 0.0 <= p < 1.0:
                raise UsageError(f"{flag} must be at least 0 and below 1, not {p}")
        if self.lora_alpha <= 0:
            raise UsageError(f"--lora-alpha must be positive, not {self.lora_alpha}")
        if not self.lora_targets:
            raise UsageError(f"--lora-targets needs at least one of {', '.join(LORA_TARGETS)}")
        for target in self.lora_targets:
            _choice("--lora-targets", target, LORA_TARGETS)
        for flag, value in (
            ("--samples", self.samples),
            ("--sample-tokens", self.sample_tokens),
            ("--report-samples", self.report_samples),
        ):
            if value < 0:
                raise UsageError(f"{flag} must be 0 or more, not {value}")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-3 if self.lora else 1e-4

    @property
    def batch(self) -> int:
        """Sequences per micro-batch. Short examples need many per batch to keep the CPU busy:
        per-step costs (weight gradients, the optimizer) scale with the model, not the batch."""
        if self.batch_size is not None:
            return self.batch_size
        return 32 if self.packing == "examples" else 4

    @property
    def clip_norm(self) -> float | None:
        return self.max_grad_norm or None

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["lora_targets"] = list(self.lora_targets)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        if "lora_targets" in values:
            values["lora_targets"] = tuple(values["lora_targets"])
        return cls(**values)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> FinetuneConfig:
        return cls.from_dict(json.loads((Path(folder) / CONFIG_FILE).read_text()))

    def differences(self, other: FinetuneConfig) -> list[str]:
        """The settings that differ from `other` and would change the trained weights."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"--{k.replace('_', '-')} {theirs[k]!r} (now {mine[k]!r})"
            for k in mine
            if k not in RESUMABLE_CHANGES and mine[k] != theirs[k]
        ]


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{flag} must be one of {', '.join(choices)}, not {value!r}")
