"""Where and with what a run executes: host, device, versions, git commit, process identity."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from tunesmith.version import __version__


def hostname() -> str:
    return socket.gethostname()


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None where unknown.

    Together with the pid it identifies a process even after the pid has been reused.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of the whole line


def process_alive(pid: int | None, start_time: str | None) -> bool:
    """Whether the process that started a run is still the one running under `pid`."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if start_time is None:
        return True
    current = process_start_time(pid)
    if current is None:
        return not Path("/proc").is_dir()  # without /proc, trust kill(0)
    return current == start_time


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    torch = sys.modules.get("torch")
    return {
        "tunesmith": __version__,
        "torch": getattr(torch, "__version__", None) or _package_version("torch"),
        "python": platform.python_version(),
    }


def device() -> str:
    """The accelerator a run could use: precise when torch is already imported (a model run),
    otherwise a cheap probe, so plain `tunesmith run` commands do not pay for importing torch."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return f"cuda ({torch.cuda.get_device_name(0)})"
            if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
                return "mps"
        except Exception:  # a broken driver must not fail the run's record
            pass
        return "cpu"
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
            if out.returncode == 0 and names:
                return f"cuda ({names[0]})"
        except (OSError, subprocess.SubprocessError):
            pass
    return "cpu"


def git_commit(path: str | Path) -> str | None:
    """The commit checked out at `path` (None outside a git repository)."""
    path = Path(path).resolve()
    if not any((p / ".git").exists() for p in (path, *path.parents)):
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def tunesmith_commit() -> str | None:
    """The git commit of the tunesmith source that is running, when it runs from a checkout."""
    return git_commit(Path(__file__).resolve().parent.parent)  # the tunesmith package


def collect() -> dict:
    """Everything about the environment that a run records when it starts."""
    commit = tunesmith_commit()
    return {
        "host": hostname(),
        "device": device(),
        "versions": versions(),
        "git_commit": commit,
        "tunesmith_commit": commit,
        "platform": platform.platform(),
        "python_executable": sys.executable,
        "cwd": os.getcwd(),
    }
