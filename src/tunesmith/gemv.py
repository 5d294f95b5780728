"""Products of a few activation rows with a weight matrix on the CPU, from gemv.c: float32 for
1 to 24 rows (decoding a batch of sequences, or a short prompt), bfloat16 for 1 to 32, int8
weights for 1 to 64.

Decoding reads every weight once per step, so a step is as fast as the weights stream from
memory. On a 2-core AVX-512 Xeon PyTorch's bfloat16 and int8 kernels stream GPT-2 124M's
weights at 15 and 11 GB/s, where float32 reaches 28 GB/s: they are bound by converting, not by
memory. gemv.c converts in registers, keeps many sums in flight and prefetches ahead: 25-28
GB/s for one row. For more rows PyTorch's float32 kernel reads the weights as slowly as for
two (12 GB/s at 16 rows), where gemv.c reads them once for all rows, in register tiles:
float32 1.1-2x PyTorch's speed from 2 to 24 rows, bfloat16 1.1-1.8x to 24, int8 1.7-1.9x
(bfloat16) to 48 (`benchmarks/README.md`). A row's sums run in the same order however many
rows share a call, so a sequence's numbers do not depend on its batch.

The library is built by tunesmith.native (compiled once per machine into the user's cache). Each
kernel is used only where its vector loops compiled in (AVX-512; AVX512-BF16 for bfloat16);
without a compiler, on other CPUs, or with TUNESMITH_CPU_KERNELS=0, PyTorch's kernels run. Its
OpenMP threads are PyTorch's own, as many as torch.get_num_threads().
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from tunesmith import native

SOURCE = Path(__file__).with_name("gemv.c")
DISABLE_ENV = native.DISABLE_ENV


# Row counts where the kernels beat PyTorch's (2-core Xeon, GPT-2 124M's weights streamed from
# memory): float32 from 1 row (1.0-1.2x: MKL streams one row at memory speed too, and one
# kernel for every batch size keeps a sequence's numbers the same in any batch) to 24 (1.1x);
# bfloat16 from 1 (1.6x) to 32 (1.0x); int8 from 1 to 64 (1.7-1.9x against PyTorch's bfloat16
# int8 kernel, far more against the float32 fallback). Beyond, PyTorch's blocked products
# overtake the dot products these kernels are made of.
F32_ROWS = range(1, 25)
BF16_ROWS = range(1, 33)
INT8_ROWS = range(1, 65)
INT8_ACTIVATIONS = (torch.float32, torch.bfloat16)


def enabled() -> bool:
    """Whether the library is built and in use (TUNESMITH_CPU_KERNELS is read once)."""
    return _library() is not None


def int8_rows_apply(x: torch.Tensor, rows: int) -> bool:
    """Whether gemm_int8 takes x: float32 or bfloat16 CPU rows, as many as INT8_ROWS, and the
    library."""
    return (
        rows in INT8_ROWS
        and x.dtype in INT8_ACTIVATIONS
        and x.device.type == "cpu"
        and _library() is not None
    )


def rows_apply(x: torch.Tensor, rows: int) -> bool:
    """Whether gemm takes x: bfloat16 or float32 CPU rows, as many as that dtype's range."""
    if x.dtype is torch.bfloat16:
        return rows in BF16_ROWS and x.device.type == "cpu" and _bf16_kernel()
    if x.dtype is torch.float32:
        return rows in F32_ROWS and x.device.type == "cpu" and _library() is not None
    return False


def gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (..., K) times weight (N, K)ᵀ plus bias, all in x's dtype (bfloat16 or float32)."""
    N, K = weight.shape
    assert weight.dtype == x.dtype and weight.is_contiguous() and x.shape[-1] == K
    x, bias, y = _operands(x, bias, N)
    lib = _library()
    kernel = lib.tunesmith_gemm_bf16 if x.dtype is torch.bfloat16 else lib.tunesmith_gemm_f32
    kernel(
        x.data_ptr(), weight.data_ptr(), _ptr(bias), y.data_ptr(), x.numel() // K, N, K,
        torch.get_num_threads(),
    )  # fmt: skip
    return y


def gemm_int8(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """x (..., K) times weight (N, K)ᵀ in int8 with a scale per weight row, plus bias."""
    N, K = weight.shape
    assert x.shape[-1] == K and weight.dtype == torch.int8 and weight.is_contiguous()
    x, bias, y = _operands(x, bias, N)
    scale = scale.to(x.dtype).contiguous()
    failed = _library().tunesmith_gemm_int8(
        x.data_ptr(), weight.data_ptr(), scale.data_ptr(), _ptr(bias), y.data_ptr(),
        x.numel() // K, N, K, torch.get_num_threads(), x.dtype == torch.bfloat16,
    )  # fmt: skip
    if failed:
        raise MemoryError(f"no memory for {x.numel()} activations in float32")
    return y


def _operands(x: torch.Tensor, bias: torch.Tensor | None, N: int):
    """x and bias contiguous in x's dtype, and y to fill."""
    y = torch.empty(*x.shape[:-1], N, dtype=x.dtype)
    if bias is not None and (bias.dtype != x.dtype or not bias.is_contiguous()):
        bias = bias.to(x.dtype).contiguous()
    return x.contiguous(), bias, y


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The compiled library (built on first use), or None where it can't be or shouldn't be."""
    lib = native.load(SOURCE)
    if lib is None or not lib.tunesmith_avx512():
        return None  # the portable loops compiled, but PyTorch's kernels beat them
    ptr, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.tunesmith_gemm_bf16.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, c_int]
    lib.tunesmith_gemm_f32.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, c_int]
    lib.tunesmith_gemm_int8.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, i64, c_int, c_int]
    return lib


@functools.cache
def _bf16_kernel() -> bool:
    lib = _library()
    return lib is not None and bool(lib.tunesmith_avx512_bf16())
