"""Choosing the device and number format a model runs in."""

from __future__ import annotations

import os

import torch

from tunesmith.errors import UsageError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """auto picks CUDA when there is a GPU, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda was asked for but no CUDA GPU is available; use --device cpu (or auto)"
        )
    if not (name == "cpu" or name.startswith("cuda")):
        raise UsageError(f"unknown device {name!r}; use auto, cpu or cuda")
    if name == "cpu":
        use_all_cores()
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The number format for inference. auto: bfloat16 on GPUs that support it and on CPUs
    with native bfloat16 instructions (decoding one token reads every weight, so half the bytes
    is nearly twice the speed); float32 elsewhere, where bfloat16 would be emulated and slow.
    float32 is exact against `transformers`."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {name!r}; use auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX, read from /proc/cpuinfo (Linux); False where it can't be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def use_all_cores() -> None:
    """Intra-op threads = the cores this process may use (torch may default to fewer)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, cores or 1))
