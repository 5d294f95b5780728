"""The language-modelling loss, computed only where there is a target.

GPT2.forward projects every position onto the 50k vocabulary; training needs that projection (the
biggest single matmul of a small GPT-2) only at positions with a label, so `LMLoss` runs the
transformer body itself and applies the head to the selected rows. It is an nn.Module so that
DistributedDataParallel and torch.compile can wrap it whole.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tunesmith.model import GPT2
from tunesmith.train.batching import IGNORE


class LMLoss(nn.Module):
    """forward(inputs, labels) -> summed cross-entropy over the labelled positions."""

    def __init__(self, model: GPT2, select: bool = True):
        super().__init__()
        self.model = model
        # Selecting rows gives data-dependent shapes, which torch.compile cannot trace whole;
        # compiled, the head runs on every position and ignore_index drops the padding.
        self.select = select

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model = self.model
        tr = model.transformer
        B, T = inputs.shape
        pos = torch.arange(T, device=inputs.device)
        x = tr.drop(tr.wte(inputs) + tr.wpe(pos))
        for block in tr.h:
            if model.gradient_checkpointing and model.training:
                x = torch.utils.checkpoint.checkpoint(block, x, None, None, 0, use_reentrant=False)
            else:
                # Right padding under a causal mask: real tokens never see the padding.
                x = block(x, None, None, 0)
        h = tr.ln_f(x).reshape(B * T, -1)
        targets = labels.reshape(-1)
        if self.select:
            keep = targets != IGNORE
            h, targets = h[keep], targets[keep]  # (N, C): only positions with a target
        logits = model.lm_head(h).float()
        return F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum")
