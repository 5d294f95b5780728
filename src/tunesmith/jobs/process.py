"""Running a child command for a run: its own process group, output streamed live into the
run's log, and Ctrl-C/SIGTERM stopping the whole group."""

from __future__ import annotations

import codecs
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from tunesmith.errors import RunError

PR_SET_PDEATHSIG = 1


class CommandNotFoundError(RunError):
    """The program to run does not exist; exit code 127, as in the shell."""

    exit_code = 127


def _die_with_parent():
    """A preexec_fn giving the child SIGTERM if tunesmith itself dies (kill -9), so no command
    outlives the run that records it. prctl is looked up here, before the fork: the child
    only calls it. Linux only; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


def _pump(pipe, stream: TextIO) -> None:
    """Copy a child's output to `stream` as it arrives (no waiting for newlines)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    fd = pipe.fileno()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        text = decoder.decode(chunk, final=not chunk)
        if text:
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):
                pass  # the terminal went away; keep draining so the child never blocks
        if not chunk:
            break
    pipe.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(proc: subprocess.Popen, kill_after: float) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is left after `kill_after` seconds
    (at once on a second Ctrl-C)."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=kill_after)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        pass
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def stream_process(
    argv: list[str],
    cwd: str | Path,
    env: Mapping[str, str] | None = None,
    kill_after: float = 10.0,
    stdout_to_stderr: bool = False,
) -> int:
    """Run `argv` in a new process group with stdout/stderr streamed to sys.stdout/sys.stderr
    (the run's log while inside a run). Returns the exit code (128 + N when killed by signal
    N). On KeyboardInterrupt (Ctrl-C, or SIGTERM inside a run) the group is stopped and the
    interrupt re-raised. Setup steps (pip, git) pass `stdout_to_stderr` so that only the
    user's command writes to stdout."""
    err = sys.stderr
    out = err if stdout_to_stderr else sys.stdout
    out.flush()
    err.flush()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
    except FileNotFoundError as e:
        raise CommandNotFoundError(f"command not found: {argv[0]}") from e
    except PermissionError as e:
        raise RunError(f"cannot execute {argv[0]}: permission denied") from e
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, err), daemon=True),
    ]
    for t in pumps:
        t.start()
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        _stop(proc, kill_after)
        raise
    finally:
        # Anything the command left running in its group ends with it: it would otherwise
        # keep writing into a finished run (and hold our pipes open).
        _signal_group(proc.pid, signal.SIGTERM)
        for t in pumps:
            t.join(timeout=5)
        if any(t.is_alive() for t in pumps):
            _signal_group(proc.pid, signal.SIGKILL)
            for t in pumps:
                t.join(timeout=5)
    return code if code >= 0 else 128 - code
