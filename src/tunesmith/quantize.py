"""Weight-only int8 for decoding: every linear layer and the LM head hold int8 weights with one
scale per output channel; activations stay in the model's float dtype.

Decoding a token reads every weight once, so at batch 1 it is bound by memory bandwidth: int8
reads a quarter of float32's bytes and half of bfloat16's. On the CPU the matmul runs in
tunesmith.gemv's kernel for up to 64 rows (decoding, short prompts) and PyTorch's
`_weight_int8pack_mm` beyond (prefill), both converting the int8 weights in registers;
elsewhere (or for shapes those kernels do not handle) the weights are dequantized on the fly.

The tied embedding shares the LM head's int8 rows and scales (a row of the head is a token's
embedding), so the model holds one int8 copy of its largest matrix. Quantizing releases each
float weight as its int8 replacement is made, and the float temporaries are a few rows at a
time: from a model whose weights are views of its memory-mapped file (`load_checkpoint` with
dtype None) loading int8 never holds a float copy of the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tunesmith import gemv
from tunesmith.errors import UsageError

QUANTIZATIONS = ("none", "int8")
# The CPU kernel's vector loops assume the inner dimension is a multiple of its block: with
# bfloat16 activations, K = 8, 24 or 56 crash or give NaN (torch 2.13), 16 and 32 are right.
PACKED_K_MULTIPLE = 32
# Rows quantized at a time: the float temporaries of GPT-2's 50,257-row head stay a few MB.
ROWS_PER_BLOCK = 2048


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row (output channel): weight ≈ q * scale[:, None]."""
    w = weight.detach()
    # Contiguous: the CPU kernel reads rows of q as they lie in memory.
    q = torch.empty(w.shape, dtype=torch.int8, device=w.device)
    scale = torch.empty(w.shape[0], dtype=torch.float32, device=w.device)  # (out,)
    for start in range(0, w.shape[0], ROWS_PER_BLOCK):
        rows = w[start : start + ROWS_PER_BLOCK].float()
        block_scale = rows.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        scale[start : start + len(rows)] = block_scale
        q[start : start + len(rows)] = (
            torch.round(rows / block_scale[:, None]).clamp(-127, 127).to(torch.int8)
        )
    return q, scale


class Int8Linear(nn.Module):
    """nn.Linear with an int8 weight (out, in) and a float scale per output channel."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = qweight.shape[1], qweight.shape[0]
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype) -> Int8Linear:
        q, scale = quantize_rows(linear.weight)
        bias = None if linear.bias is None else linear.bias.detach().to(dtype)
        return cls(q.to(linear.weight.device), scale.to(linear.weight.device, dtype), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if gemv.int8_rows_apply(x, rows):  # up to 64 rows: 1.7-1.9x PyTorch's int8 kernel
            return gemv.gemm_int8(x, self.qweight, self.scale, self.bias)
        if self._packed(x):
            shape = x.shape
            # (..., in) -> (M, in) -> (M, out) -> (..., out)
            y = torch.ops.aten._weight_int8pack_mm(
                x.reshape(-1, shape[-1]).contiguous(), self.qweight, self.scale
            ).reshape(*shape[:-1], self.out_features)
        else:
            y = F.linear(x, self.qweight.to(x.dtype)) * self.scale
        return y if self.bias is None else y + self.bias

    def _packed(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dtype == self.scale.dtype
            and self.in_features % PACKED_K_MULTIPLE == 0
            and hasattr(torch.ops.aten, "_weight_int8pack_mm")
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int8Embedding(nn.Module):
    """An embedding that looks rows up in an int8 table (shared with the LM head)."""

    def __init__(self, head: Int8Linear):
        super().__init__()
        self.head = [head]  # a list, so the head's buffers are not registered twice

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        head = self.head[0]
        rows = F.embedding(idx, head.qweight)  # (..., C) int8
        return rows.to(head.scale.dtype) * head.scale[idx][..., None]


def check_quantization(quantize: str) -> None:
    if quantize not in QUANTIZATIONS:
        raise UsageError(
            f"unknown quantization {quantize!r}; use --quantize {' or '.join(QUANTIZATIONS)}"
        )


def quantize_model(model: nn.Module, quantize: str = "int8") -> nn.Module:
    """Replace the model's nn.Linear layers (and its tied embedding) by int8 ones, in place,
    for inference; quantize "none" leaves the model as it is.

    Each float weight is released as soon as its int8 replacement is made (nothing here keeps
    a reference to the old layer), and the float tensors left (norms, position embeddings,
    biases) are copied, so that none stays a view of the checkpoint's mapped file."""
    check_quantization(quantize)
    if quantize == "none":
        return model
    dtype = model.transformer.ln_f.weight.dtype  # the activations' dtype
    if model.lm_head.weight is model.transformer.wte.weight:
        # The largest matrix first; replacing both of its users releases its float copy.
        model.lm_head = Int8Linear.from_linear(model.lm_head, dtype)
        model.transformer.wte = Int8Embedding(model.lm_head)
    # (parent, name), never the layers themselves: a list of them would keep every float
    # weight alive until the end.
    slots = [
        (parent, name)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
    ]
    for parent, name in slots:
        setattr(parent, name, Int8Linear.from_linear(getattr(parent, name), dtype))
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()  # memory of its own (a file view keeps the whole file)
    return model.eval()
