"""The model's linear layer: nn.Linear, with two kernel choices on the CPU.

bfloat16 products of up to 16 rows (decoding up to 16 sequences) run in tunesmith.gemv, which
streams the weights 1.1-2x as fast as PyTorch's bfloat16 kernel, where it is built.

Decoding a batch multiplies a few rows (one per sequence) by each weight. For 8 to a few
hundred rows PyTorch's float32 CPU path for x·Wᵀ runs up to 2x slower than the same product
taken the other way round, (W·xᵀ)ᵀ, which reads the (out, in) weight as it lies in memory
(2 cores, torch 2.13, GPT-2 124M shapes; `benchmarks/serve.py`). Below 8 rows, and for the
large row counts of training, the two are alike and F.linear stays. The result is the same
product (up to float rounding), in a transposed view that the next operations read as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tunesmith import gemv

TRANSPOSED_PRODUCT_ROWS = range(8, 257)  # float32 CPU row counts where (W·xᵀ)ᵀ is faster


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state dict), faster for decoding on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        if _few_bf16_rows(x, self.weight, rows):
            return gemv.gemm_bf16(x, self.weight, self.bias)
        if not _transposed_product_pays(x, rows):
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(rows, x.shape[-1]).t()  # (in, rows)
        if self.bias is None:
            y = torch.mm(self.weight, flat)
        else:
            y = torch.addmm(self.bias[:, None], self.weight, flat)
        return y.t().reshape(*x.shape[:-1], self.out_features)  # (out, rows) -> (..., out)


def _few_bf16_rows(x: torch.Tensor, weight: torch.Tensor, rows: int) -> bool:
    # Called for every product of every step: the cheapest tests first.
    return (
        weight.dtype is torch.bfloat16
        and not torch.is_grad_enabled()
        and gemv.bf16_applies(x, rows)
        and weight.is_contiguous()
    )


def _transposed_product_pays(x: torch.Tensor, rows: int) -> bool:
    return (
        rows in TRANSPOSED_PRODUCT_ROWS
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()  # training keeps autograd's usual path
    )
