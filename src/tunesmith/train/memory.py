"""Will it fit? A rough up-front estimate of training memory, checked before the first step."""

from __future__ import annotations

from pathlib import Path

import torch

from tunesmith.errors import UsageError

GIB = 1024**3


def estimate_bytes(model, config, seq_len: int) -> int:
    """Weights + gradients + AdamW state of the trainable part + activations of one micro-batch.

    Activations follow Korthikanti et al. (2022): 34·C + 5·H·T bytes per token and layer in
    16-bit, twice that in fp32; checkpointing keeps about one layer's worth.
    """
    c = model.config
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    states = 4 * total + (4 + 8) * trainable
    per_layer = config.batch * seq_len * (34 * c.n_embd + 5 * c.n_head * seq_len) * 2
    layers = 1 if config.gradient_checkpointing else c.n_layer
    logits = 3 * config.batch * seq_len * c.vocab_size * 4
    return states + layers * per_layer + logits


def available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(model, config, device: torch.device, seq_len: int) -> None:
    """Refuse a run that clearly cannot fit, saying what would make it fit."""
    available = available_bytes(device)
    if available is None:
        return
    need = estimate_bytes(model, config, seq_len)
    if need <= available:
        return
    hints = []
    if not config.lora:
        hints.append("--lora (trains only small adapters)")
    if config.batch > 1:
        hints.append(f"a smaller --batch-size with --grad-accum (now {config.batch})")
    if not config.gradient_checkpointing:
        hints.append("--gradient-checkpointing")
    if config.block_size is None or config.block_size > 256:
        hints.append("a smaller --block-size")
    raise UsageError(
        f"training needs about {need / GIB:.1f} GiB but only {available / GIB:.1f} GiB is free "
        f"on {device.type}; try " + ", ".join(hints or ["a smaller model"])
    )
