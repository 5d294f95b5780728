"""tunesmith's C kernels: a C source beside this file compiled once per machine and loaded.

Each source is compiled with the system's C compiler (`cc -O3 -march=native -fopenmp`, well
under a second) into the user's cache folder, under a name keyed by the source, the flags, the
compiler and the CPU, and loaded with ctypes. Its OpenMP threads are PyTorch's own (the
process's libgomp). Without a compiler, on other systems, or with TUNESMITH_CPU_KERNELS=0,
nothing is built and the callers run PyTorch's kernels.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

from tunesmith.files import write_atomically
from tunesmith.host import cache_dir, cpuinfo

DISABLE_ENV = "TUNESMITH_CPU_KERNELS"  # "0": PyTorch's kernels only
COMPILE_FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
COMPILE_TIMEOUT_S = 60


def load(source: Path) -> ctypes.CDLL | None:
    """The library compiled from `source` (built on first use), or None where it can't be or
    shouldn't be. Callers cache the answer."""
    if platform.system() != "Linux" or os.environ.get(DISABLE_ENV, "1") == "0":
        return None
    try:
        return ctypes.CDLL(str(_built(source)))
    except (OSError, subprocess.SubprocessError):
        return None


def _built(source: Path) -> Path:
    """The library for this source, compiler and CPU, compiled into the cache if not there."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise OSError("no C compiler")
    key = hashlib.sha256()
    key.update(source.read_bytes())
    key.update(" ".join(COMPILE_FLAGS).encode())
    key.update(compiler.encode())
    key.update((cpuinfo("model name") or "").encode() + (cpuinfo("flags") or "").encode())
    path = cache_dir() / "kernels" / f"{source.stem}-{key.hexdigest()[:16]}.so"
    if not path.exists():
        # Built under a temporary name and renamed: processes building at once each get a
        # whole library, never a half-written one.
        write_atomically(path, lambda tmp: _compile(compiler, source, tmp))
    return path


def _compile(compiler: str, source: Path, out: Path) -> None:
    subprocess.run(
        [compiler, *COMPILE_FLAGS, str(source), "-o", str(out)],
        check=True,
        capture_output=True,
        timeout=COMPILE_TIMEOUT_S,
    )
