"""The one place that chooses where and in what number format a model runs, and on how many
threads: the device, the inference dtype, bf16 autocast for training, the CPU thread count."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from tunesmith.errors import UsageError
from tunesmith.files import write_text_atomically
from tunesmith.host import cache_dir, cpu_model, cpuinfo

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
    optimizer stay fp32). auto: bf16 on GPUs that support it, and on CPUs that compute bf16
    natively (AVX512-BF16, AMX) where it also trains faster (measured once per machine: see
    `cpu_trains_faster_in_bf16`); fp32 elsewhere. bf16 reaches the same loss (within 1%)."""
    if precision == "fp32":
        return False
    if precision == "auto":
        if device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        return cpu_has_bf16() and cpu_trains_faster_in_bf16()
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
    flags = set((cpuinfo("flags") or "").split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


BF16_PROBE_FILE = "cpu-precision.json"
BF16_MIN_SPEEDUP = 1.2  # below this, fp32's exact numbers are worth more than the speed
_bf16_probe: dict[str, bool] = {}


def cpu_trains_faster_in_bf16() -> bool:
    """Whether a training step's matrix products run faster under bf16 autocast than in fp32
    on this CPU. Native bf16 instructions are not enough: on an AMD Zen 4 (AVX512-BF16) bf16
    trained the 124M shape 1.7x faster than fp32, on an Intel Xeon with AVX512-BF16 but no
    AMX 0.6x as fast. So it is measured, once per CPU model and torch version (a fraction of a
    second), and remembered in the user's cache folder."""
    key = f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"
    if key in _bf16_probe:
        return _bf16_probe[key]
    path = cache_dir() / BF16_PROBE_FILE
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict) or not isinstance(known.get(key), bool):
        known = known if isinstance(known, dict) else {}
        known[key] = _bf16_speedup() >= BF16_MIN_SPEEDUP
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(path, json.dumps(known, indent=1) + "\n")
        except OSError:
            pass  # unwritable cache: measured again next time
    _bf16_probe[key] = known[key]
    return known[key]


def _bf16_speedup(rounds: int = 4) -> float:
    """fp32 time over bf16-autocast time of a GPT-2 MLP layer's forward and backward on 256
    tokens; each the fastest of `rounds`, the two interleaved (load hits both alike)."""
    x = torch.randn(256, 768)
    w = torch.randn(3072, 768, requires_grad=True)
    best = {False: float("inf"), True: float("inf")}
    for round_ in range(rounds + 1):
        for bf16 in (False, True):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = torch.nn.functional.linear(x, w)
            y.float().square().mean().backward()
            if round_:  # the first round warms up both
                best[bf16] = min(best[bf16], time.perf_counter() - start)
    return best[False] / best[True]


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
