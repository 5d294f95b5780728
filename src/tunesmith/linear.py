"""The model's linear layer: nn.Linear, with two kernel choices for decoding on the CPU.

Decoding multiplies a few rows (one per sequence) by each weight, outside autograd:
- tunesmith.gemv takes float32 products of 1 to 24 rows and bfloat16 ones of 1 to 32, where it
  is built: it reads the weights once for all the rows, 1.1-2x as fast as PyTorch's kernels.
- Other float32 products of 8 to 256 rows are taken as (W·xᵀ)ᵀ, which PyTorch's CPU path runs
  up to 2x faster than x·Wᵀ at those sizes (2 cores, torch 2.13, GPT-2 124M shapes).
Anything else (training's thousands of rows, the GPU) is F.linear. Every path computes the
same product, up to float rounding.
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
        if _few_rows(x, self.weight, rows):
            return gemv.gemm(x, self.weight, self.bias)
        if not _transposed_product_pays(x, rows):
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(rows, x.shape[-1]).t()  # (in, rows)
        if self.bias is None:
            y = torch.mm(self.weight, flat)
        else:
            y = torch.addmm(self.bias[:, None], self.weight, flat)
        return y.t().reshape(*x.shape[:-1], self.out_features)  # (out, rows) -> (..., out)


def _few_rows(x: torch.Tensor, weight: torch.Tensor, rows: int) -> bool:
    # Called for every product of every step: the cheapest tests first.
    return (
        weight.dtype is x.dtype
        and not torch.is_grad_enabled()
        and gemv.rows_apply(x, rows)
        and weight.is_contiguous()
    )


def _transposed_product_pays(x: torch.Tensor, rows: int) -> bool:
    return (
        rows in TRANSPOSED_PRODUCT_ROWS
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()  # training keeps autograd's usual path
    )
