"""The one place that chooses where and in what number format a model runs, and on how many
threads: the device, the inference dtype, bf16 autocast for training, the CPU thread count."""

from __future__ import annotations

import os
from pathlib import Path

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
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The number format for inference. auto: bfloat16 on GPUs that support it and on CPUs
    with native bfloat16 instructions (decoding one token reads every weight, so half the bytes
    is nearly twice the speed); float32 elsewhere, where bfloat16 would be emulated and slow.
    float32 is exact against `transformers`."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {name!r}; use auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def use_bf16_autocast(precision: str, device: torch.device) -> bool:
    """Training precision (auto, bf16 or fp32): whether to run under bf16 autocast (weights and
    optimizer stay fp32). auto: bf16 on GPUs that support it and on CPUs that compute bf16
    natively (AVX512-BF16, AMX), where it trains about 1.5x faster and reaches the same loss;
    fp32 elsewhere, where bf16 matmuls would be emulated and slower than fp32."""
    if precision == "fp32":
        return False
    if precision == "auto":
        if device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        return cpu_has_bf16()
    if device.type == "cpu" and not cpu_has_bf16():
        raise UsageError(
            "--precision bf16 on this CPU would be slow: it has no native bf16 "
            "(avx512_bf16 / amx_bf16); use --precision fp32 (or auto)"
        )
    return True


def precision_name(autocast: bool) -> str:
    """What a run records of its training precision."""
    return "bf16 autocast" if autocast else "fp32"


def cpu_has_bf16() -> bool:
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
    """Inference: intra-op threads = the CPUs this process may use (torch may default to fewer);
    decoding is bound by memory bandwidth, which hyper-threads add to."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, cpus or 1))


def set_training_threads(num_threads: int | None, processes: int = 1) -> None:
    """Training: num_threads, or the physical cores shared among `processes` (matmul-bound
    training gains nothing from a core's second hyper-thread, and processes must not contend)."""
    torch.set_num_threads(num_threads or max(1, physical_cores() // processes))


def physical_cores() -> int:
    """Cores we may run on, counting hyper-threads of one core once."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores = set()
    for cpu in cpus:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores) or (os.cpu_count() or 1))
