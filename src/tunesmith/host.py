"""Facts about the machine we run on, read where Linux keeps them, and where we cache what we
learn about it (the user's cache folder)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpuinfo(field: str) -> str | None:
    """The first `field` line of /proc/cpuinfo (Linux), or None where it can't be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return cpuinfo("model name") or platform.processor() or platform.machine()


def cache_dir() -> Path:
    """tunesmith's folder in the user's cache ($XDG_CACHE_HOME, else ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tunesmith"
