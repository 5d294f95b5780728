"""A model's weights in 2 MB pages (Linux transparent huge pages), for a long-lived server.

Decoding on the CPU reads every weight each step. With 4 KB pages, walking GPT-2 124M's 500 MB
of float32 weights misses the TLB page after page, and the hardware prefetcher stops at every
page boundary. In 2 MB pages a decode step of GPT-2 124M took 7% less time for one sequence
and 11-15% less for 8 to 16 (2-core Xeon VM, `benchmarks/README.md`). The move is a copy into
memory the kernel is asked to back with huge pages: 0.5-1.2 s for 124M (most of it the kernel
clearing and gathering 2 MB pages), paid once by `serve`, not by every short `generate`. Where
the kernel has no transparent huge pages, nothing moves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path

import torch
from torch import nn

HUGE_PAGE = 2 << 20
MADV_HUGEPAGE = 14  # linux/mman.h
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
MOVED = "_tunesmith_in_huge_pages"  # set on a model whose weights moved


def available() -> bool:
    """Whether the kernel backs memory with huge pages when asked (`always` or `madvise`)."""
    try:
        setting = THP_SETTING.read_text()
    except OSError:
        return False
    return "[always]" in setting or "[madvise]" in setting


def move_weights(model: nn.Module) -> int:
    """Copy the model's CPU parameters and buffers of at least a huge page into one allocation
    advised to live in huge pages, and point the model at the copies (weights tied together
    stay tied). Returns the bytes moved: 0 where huge pages are unavailable, or the weights
    were moved already."""
    tensors = _movable(model)
    if not tensors or not available() or getattr(model, MOVED, False):
        return 0
    offsets, total = {}, 0
    for t in tensors.values():
        offsets[t.data_ptr()] = total
        total += -(-t.nbytes // 64) * 64  # each tensor 64-byte aligned, as PyTorch's own
    # Untouched memory (a fresh mapping): advised before the copy first touches it, the
    # kernel backs it with huge pages as it faults in.
    buffer = torch.empty(total + HUGE_PAGE, dtype=torch.uint8)
    start = -buffer.data_ptr() % HUGE_PAGE
    if not _advise(buffer.data_ptr() + start, total):
        return 0
    moved = {}
    for ptr, t in tensors.items():
        at = start + offsets[ptr]
        copy = buffer[at : at + t.nbytes].view(t.dtype).view(t.shape)
        copy.copy_(t)
        moved[ptr] = copy
    with torch.no_grad():
        for module in model.modules():
            for p in module.parameters(recurse=False):
                if p.data_ptr() in moved:
                    p.data = moved[p.data_ptr()]
            for name, b in module.named_buffers(recurse=False):
                if b is not None and b.data_ptr() in moved:
                    module._buffers[name] = moved[b.data_ptr()]
    setattr(model, MOVED, True)
    return total


def _movable(model: nn.Module) -> dict[int, torch.Tensor]:
    """The model's CPU tensors worth a huge page, by data pointer (tied ones once)."""
    found: dict[int, torch.Tensor] = {}
    for t in list(model.parameters()) + [b for b in model.buffers() if b is not None]:
        if t.device.type == "cpu" and t.is_contiguous() and t.nbytes >= HUGE_PAGE:
            found.setdefault(t.data_ptr(), t.detach())
    return found


def _advise(address: int, length: int) -> bool:
    libc = _libc()
    if libc is None:
        return False
    start = address - address % HUGE_PAGE
    return libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), MADV_HUGEPAGE) == 0


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc
