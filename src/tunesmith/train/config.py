"""`FinetuneConfig`: every option of a fine-tuning run; validated on construction, saved with it.
`LaunchConfig`: how many processes it runs in. Each field carries its flag (tunesmith.options)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tunesmith.errors import UsageError
from tunesmith.model_sizes import FROM_SCRATCH_HELP, SIZES, scratch_warmup
from tunesmith.options import option, require_finite

PACKINGS = ("examples", "blocks")
SCHEDULES = ("linear", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
LORA_TARGETS = ("c_attn", "attn.c_proj", "c_fc", "mlp.c_proj")
TRACKERS = ("tensorboard", "wandb", "mlflow")  # --report-to (tunesmith.train.trackers)
CONFIG_FILE = "finetune_config.json"
MODEL_DIR = "model"  # runs/N/model: the fine-tuned model
# Options that may change when a run is resumed: they do not alter the weights it ends with.
# (Samples and the final report decode under torch.random.fork_rng, so they leave the training
# RNG alone; checkpoints only read the state.)
RESUMABLE_CHANGES = frozenset(
    {
        "resume",
        "device",
        "num_threads",
        "compile",
        "progress",
        "sample_every",
        "samples",
        "sample_tokens",
        "report_samples",
        "save_every",
        "keep_checkpoints",
        "report_to",
    }
)


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune `model` on `data`; validated on construction, saved with the run."""

    model: str = option("gpt2", "model to start from: hub id, folder or runs/N")
    data: str = option(
        "", "a data run (runs/N) or any source `tunesmith data` reads", flags=("-d", "--data")
    )
    packing: str = option(
        "examples",
        "examples: one example per sequence, length-bucketed; "
        "blocks: concatenate and cut --block-size chunks",
        choices=PACKINGS,
    )
    block_size: int | None = option(
        None, "max tokens per sequence", default_help="the model's context"
    )
    lr: float | None = option(
        None, "peak learning rate", default_help="1e-4 full, 1e-3 LoRA, per size from scratch"
    )
    weight_decay: float = option(0.0, "AdamW weight decay (on matrices only)")
    warmup: int | None = option(
        None, "steps of linear warm-up", default_help="0; from scratch 5% of steps, at most 100"
    )
    schedule: str = option("linear", "learning-rate schedule after warm-up", choices=SCHEDULES)
    batch_size: int | None = option(
        None, "sequences per device and micro-batch", default_help="32 examples, 4 blocks"
    )
    grad_accum: int = option(1, "micro-batches per optimizer step")
    max_grad_norm: float | None = option(1.0, "gradient clipping norm, 0 = off")
    epochs: int = option(3, "passes over the data")
    max_steps: int | None = option(None, "train exactly this many steps (overrides --epochs)")
    seed: int = option(0, "random seed")
    dropout: float | None = option(
        None, "embedding/residual dropout", default_help="the model's own"
    )
    # 0 by default: with attention dropout PyTorch's fused attention kernel cannot run and a step
    # on 1,024-token blocks takes about twice as long on CPU.
    attn_dropout: float | None = option(
        0.0, "attention dropout; 0 lets attention use the fused kernel"
    )
    lora: bool = option(False, "train low-rank adapters only")
    lora_rank: int = option(8, "rank of the adapters")
    lora_alpha: float = option(16.0, "adapter scale (alpha / rank)")
    # 0 as PEFT: each dropout costs a Bernoulli draw per activation.
    lora_dropout: float = option(0.0, "dropout on the adapters' input")
    lora_targets: tuple[str, ...] = option(
        ("c_attn", "attn.c_proj"),
        f"layers to adapt, among {' '.join(LORA_TARGETS)}",
        metavar="LAYER",
    )
    eval_every: int | None = option(
        None, "steps between evaluations", default_help="each epoch end, and the end"
    )
    early_stop: int | None = option(
        None,
        "stop after this many evaluations without improvement; keep the best",
        metavar="PATIENCE",
    )
    sample_every: int | None = option(None, "steps between samples written to the log")
    samples: int = option(3, "samples at each --sample-every")
    sample_tokens: int = option(40, "max tokens per sample")
    report_samples: int = option(10, "samples in the final quality report")
    save_every: int | None = option(
        None, "steps between checkpoints", default_help="each epoch end, and the end"
    )
    keep_checkpoints: int = option(2, "checkpoints kept")
    resume: str | None = option(None, "continue an interrupted run (runs/N)", metavar="RUN")
    device: str = option("auto", "where to train", choices=DEVICES)
    precision: str = option(
        "auto",
        "auto: bf16 autocast (fp32 weights) on CUDA and on CPUs with native bf16, else fp32",
        choices=PRECISIONS,
    )
    compile: bool = option(False, "torch.compile the model")
    gradient_checkpointing: bool = option(
        False, "recompute activations in backward: less memory, ~30% slower"
    )
    num_threads: int | None = option(None, "CPU threads", default_help="the physical cores")
    progress: bool = option(True, "no progress bar")
    report_to: tuple[str, ...] = option(
        (),
        "also send metrics, parameters, samples and the final model to this tracker "
        "(repeat the flag for several)",
        choices=TRACKERS,
        repeat=True,
    )
    from_scratch: str | None = option(
        None,
        FROM_SCRATCH_HELP,
        choices=tuple(SIZES),
        metavar="SIZE",
    )

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
        if self.warmup is not None and self.warmup < 0:
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
        for tracker in self.report_to:
            _choice("--report-to", tracker, TRACKERS)
        if self.from_scratch is not None:
            _choice("--from-scratch", self.from_scratch, tuple(SIZES))
            if self.lora or self.model != "gpt2":
                raise UsageError(
                    "--from-scratch trains every weight of a new model; "
                    "leave out --lora and --model"
                )
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
        if self.from_scratch is not None:
            return SIZES[self.from_scratch].lr
        return 1e-3 if self.lora else 1e-4

    @property
    def model_name(self) -> str:
        """What training starts from, for messages: --model, or the random model's size."""
        return f"a random {self.from_scratch} GPT-2" if self.from_scratch else self.model

    def warmup_steps(self, total_steps: int) -> int:
        """Steps of warm-up: --warmup, else none for a fine-tune (the weights are trained
        already) and a few for a random model (its first gradients are large and noisy)."""
        if self.warmup is not None:
            return self.warmup
        return scratch_warmup(total_steps) if self.from_scratch is not None else 0

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
        values["report_to"] = list(self.report_to)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        for name in ("lora_targets", "report_to"):
            if name in values:
                values[name] = tuple(values[name])
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


@dataclass(frozen=True)
class LaunchConfig:
    """How many processes `tunesmith finetune` runs in (torchrun, DistributedDataParallel)."""

    nproc: int = option(1, "processes per node")
    nnodes: int = option(1, "nodes")
    node_rank: int = option(0, "rank of this node")
    master_addr: str | None = option(None, "address of node 0", metavar="HOST")
    master_port: int | None = option(None, "port on node 0")

    def __post_init__(self) -> None:
        for flag, value in (("--nproc", self.nproc), ("--nnodes", self.nnodes)):
            if value < 1:
                raise UsageError(f"{flag} must be at least 1, not {value}")
        if not 0 <= self.node_rank < self.nnodes:
            raise UsageError(f"--node-rank must be 0 to {self.nnodes - 1}, not {self.node_rank}")

    @property
    def distributed(self) -> bool:
        return self.nproc > 1 or self.nnodes > 1
