"""One-pass CPU kernels from fused.c: training's cross-entropy, GELU and dropout; decoding's
attention and sampling draw.

Between the matrix products, a CPU training step of GPT-2 124M spent about 16% of its time
in PyTorch's memory-bound kernels (2-core Xeon, LoRA, 32 jokes per batch): log_softmax and
its backward over the (tokens, 50,257) logits, the zeroed gradient the loss's backward
writes there, dropout's Bernoulli draws (a third of that by themselves) and GELU. fused.c does
each in one pass:
- cross-entropy: the forward pass turns each row of logits, while it is in cache, into the
  gradient softmax - onehot(target) and its loss; backward only multiplies that by the weight.
- dropout: the mask comes from a counter-based hash of a seed drawn from PyTorch's generator
  (so `torch.manual_seed` still decides it), and backward draws it again instead of storing it.
- GELU (tanh form): tanh from one exponential, forward and backward.
Decoding spent its time between the products in many small ops; in one call each:
- attention of one new query per sequence over its cached keys (float32 or bfloat16);
- a row's Gumbel-max draw and its top-p check, the noise from the same hash, seeded by the
  row's own generator (so a seed still decides the text).
The training kernels need float32, all of them the CPU and the library (AVX-512, a C compiler;
see tunesmith.native); otherwise, and under torch.compile, PyTorch's own ops run. The numbers
are PyTorch's up to float rounding; the dropout masks and sampling noise are different draws
of the same distributions.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tunesmith import native

SOURCE = Path(__file__).with_name("fused.c")
SEED_BOUND = 2**62  # seeds are drawn below this from PyTorch's generator
MAX_HEAD_DIM = 256  # as fused.c's
DECODE_DTYPES = (torch.float32, torch.bfloat16)
# Below this many elements (decoding's few rows) a call's overhead outweighs the pass it saves.
FUSED_MIN_ELEMENTS = 32768


def enabled() -> bool:
    return _library() is not None


def takes_head(h: torch.Tensor, head: nn.Module) -> bool:
    """Whether head_cross_entropy takes the states h through this LM head: a plain float32
    nn.Linear without bias (not a LoRA or int8 one), outside autocast."""
    return (
        isinstance(head, nn.Linear)
        and head.bias is None
        and head.weight.dtype is torch.float32
        and not torch.is_autocast_enabled("cpu")
        and _takes(h)
    )


def head_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Summed cross-entropy of the logits h (N, C) · weight (V, C)ᵀ against targets (N,),
    every one a token id (where takes_head says so)."""
    return _HeadCrossEntropy.apply(h, weight, targets)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation (GPT-2's `gelu_new`), F.gelu(x, approximate="tanh")."""
    if x.numel() >= FUSED_MIN_ELEMENTS and _takes(x):
        return _GeluTanh.apply(x)
    return F.gelu(x, approximate="tanh")


def takes_decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether decode_attention takes one query per sequence, q (B, H, 1, D), over cached k and
    v (B, H, S, D): float32 or bfloat16 on the CPU, outside autograd (decoding)."""
    return (
        q.shape[2] == 1
        and q.dtype in DECODE_DTYPES
        and k.dtype is q.dtype
        and v.dtype is q.dtype
        and q.shape[-1] <= MAX_HEAD_DIM
        and not torch.is_grad_enabled()
        and k.stride(-1) == v.stride(-1) == 1
        and _takes_any_dtype(q)
    )


def decode_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """softmax(q kᵀ · scale) v for one query per sequence, as (B, 1, H * D); keys (B, S) bool,
    False for cached positions the query must not see (padding), or None for all."""
    B, H, _, D = q.shape
    S = k.shape[2]
    if q.stride(-1) != 1:  # a transposed product's rows (linear.py): a few numbers to gather
        q = q.contiguous()
    out = torch.empty(B, 1, H * D, dtype=q.dtype)  # (B, H, D) by its strides
    if keys is not None:
        assert keys.dtype is torch.bool and keys.shape == (B, S) and keys.stride(-1) == 1
    strides = (ctypes.c_int64 * 11)(
        *q.stride()[:2], *k.stride()[:3], *v.stride()[:3], H * D, D,
        0 if keys is None else keys.stride(0),
    )  # fmt: skip
    failed = _library().tunesmith_decode_attention(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
        None if keys is None else keys.data_ptr(), B, H, S, D, strides, scale,
        q.dtype is torch.bfloat16, torch.get_num_threads(),
    )  # fmt: skip
    if failed:
        raise MemoryError(f"no memory for {B * H * S} attention scores")
    return out


def gumbel_pick(logits: torch.Tensor, generator: torch.Generator, top_p: float = 1.0) -> int | None:
    """One draw from softmax(logits) for a row of float32 CPU logits (V,): the argmax of the
    logits plus Gumbel noise, the noise keyed by a seed drawn from `generator` and by token id.
    With top_p < 1, None when the draw falls outside the nucleus (draw again, or find it)."""
    return gumbel_picks(logits[None], [generator], top_p)[0]


def gumbel_picks(
    logits: torch.Tensor, generators: list[torch.Generator], top_p: float = 1.0
) -> list[int | None]:
    """gumbel_pick for every row of float32 CPU logits (B, V), row b seeded from
    generators[b], in one call: the rows are shared among the threads."""
    B, V = logits.shape
    assert logits.dtype is torch.float32 and logits.stride(-1) == 1 and len(generators) == B
    seeds = (ctypes.c_uint64 * B)(
        *(int(torch.randint(SEED_BOUND, (), generator=g)) for g in generators)
    )
    picks = (ctypes.c_int64 * B)()
    _library().tunesmith_gumbel_picks(
        logits.data_ptr(), B, V, logits.stride(0), seeds, top_p, picks, torch.get_num_threads()
    )
    return [None if pick < 0 else pick for pick in picks]


class Dropout(nn.Dropout):
    """nn.Dropout (the same module to PyTorch: `p`, train/eval), drawn by fused.c where it can."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and 0 < self.p < 1 and not self.inplace and _takes(x):
            return _Dropout.apply(x, self.p)
        return super().forward(x)


def takes_sample(logits: torch.Tensor) -> bool:
    """Whether gumbel_picks takes these logits: float32 on the CPU, the library built."""
    return _takes(logits)


def _takes(x: torch.Tensor) -> bool:
    return x.dtype is torch.float32 and _takes_any_dtype(x)


def _takes_any_dtype(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and not torch.compiler.is_compiling() and _library() is not None


class _HeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets):
        logits = torch.mm(h, weight.t())  # (N, V), about to hold the loss's gradient
        targets = targets.contiguous()
        losses = torch.empty(len(targets))
        failed = _library().tunesmith_cross_entropy(
            logits.data_ptr(), targets.data_ptr(), losses.data_ptr(), *logits.shape,
            torch.get_num_threads(),
        )  # fmt: skip
        if failed:
            raise IndexError(f"a target is outside the vocabulary's 0..{weight.shape[0] - 1}")
        ctx.save_for_backward(logits, h, weight)
        return losses.sum()

    @staticmethod
    def backward(ctx, grad):
        dlogits, h, weight = ctx.saved_tensors  # the sum's gradient: softmax - onehot
        dh = torch.mm(dlogits, weight) * grad if ctx.needs_input_grad[0] else None
        dweight = torch.mm(dlogits.t(), h) * grad if ctx.needs_input_grad[1] else None
        return dh, dweight, None


class _GeluTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x = x.contiguous()
        ctx.save_for_backward(x)
        y = torch.empty_like(x)
        _library().tunesmith_gelu(x.data_ptr(), y.data_ptr(), x.numel(), torch.get_num_threads())
        return y

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        grad = grad.contiguous()
        dx = torch.empty_like(x)
        _library().tunesmith_gelu_backward(
            x.data_ptr(), grad.data_ptr(), dx.data_ptr(), x.numel(), torch.get_num_threads()
        )
        return dx


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        ctx.seed = int(torch.randint(SEED_BOUND, ()))
        ctx.keep_threshold = min(round((1 - p) * 2**32), 2**32 - 1)
        ctx.scale = 1 / (1 - p)
        return _masked(x, ctx)

    @staticmethod
    def backward(ctx, grad):
        return _masked(grad, ctx), None


def _masked(x: torch.Tensor, ctx) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    _library().tunesmith_dropout(
        x.data_ptr(), y.data_ptr(), x.numel(), ctx.seed, ctx.keep_threshold, ctx.scale,
        torch.get_num_threads(),
    )  # fmt: skip
    return y


@functools.cache
def _library() -> ctypes.CDLL | None:
    lib = native.load(SOURCE)
    if lib is None or not lib.tunesmith_fused_avx512():
        return None
    ptr, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.tunesmith_cross_entropy.argtypes = [ptr, ptr, ptr, i64, i64, c_int]
    lib.tunesmith_gelu.argtypes = [ptr, ptr, i64, c_int]
    lib.tunesmith_gelu_backward.argtypes = [ptr, ptr, ptr, i64, c_int]
    lib.tunesmith_decode_attention.argtypes = [
        ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, ptr, ctypes.c_float, c_int, c_int,
    ]  # fmt: skip
    lib.tunesmith_gumbel_picks.argtypes = [
        ptr, i64, i64, i64, ctypes.POINTER(ctypes.c_uint64), ctypes.c_float,
        ctypes.POINTER(ctypes.c_int64), c_int,
    ]  # fmt: skip
    lib.tunesmith_dropout.argtypes = [
        ptr, ptr, i64, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_float, c_int,
    ]  # fmt: skip
    return lib
