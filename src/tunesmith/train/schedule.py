"""Learning-rate schedules as pure functions of the step: nothing to save, trivially resumable."""

from __future__ import annotations

import math


def lr_at(step: int, base_lr: float, warmup: int, total: int, schedule: str) -> float:
    """The learning rate of optimizer step `step` (0-based) of `total`."""
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return base_lr * (1.0 - progress)
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")
