"""`recorded_run`: the context every tunesmith command executes inside.

It creates the run, keeps a copy of everything printed in the run's log while it still prints
live, and on the way out records status, timing, metrics and outputs, whatever happened.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from tunesmith.errors import RunError
from tunesmith.runs import environment
from tunesmith.runs.display import format_duration
from tunesmith.runs.outputs import scan_outputs
from tunesmith.runs.references import (
    Resolved,
    check_run_name,
    is_run_reference,
    parse_reference,
    resolve_in,
)
from tunesmith.runs.schema import to_json
from tunesmith.runs.workspace import Workspace, open_workspace

# Set by a run that starts other runs as its parts (a sweep's trials): each records it as
# its parent. An environment variable, since the parts are separate `tunesmith` processes.
PARENT_ENV = "TUNESMITH_PARENT_RUN"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it ends a run like Ctrl-C does."""

    exit_code = 143


class RunHandle:
    """What a command sees of its run. With recording disabled every method still works;
    the ones that only record do nothing."""

    def __init__(
        self,
        run_id: int | None,
        folder: Path,
        records: Path,
        workspace: Workspace | None,
        workspace_arg: str | Path | None = None,
    ):
        self.id = run_id
        self.dir = folder
        self.records_dir = records
        self.metrics_path = records / "metrics.jsonl"
        self.log_path = records / "log.txt"
        self.final_metrics: dict[str, Any] = {}
        self.summary: str | None = None
        self.main_output = "."
        self.exit_code: int | None = None  # a non-zero value set by the caller fails the run
        self.error: str | None = None
        self.info: dict[str, Any] = {}  # extra metadata stored with the run (mounts, git, pip…)
        self.excluded: set[str] = set()
        self._workspace = workspace
        self._workspace_arg = workspace_arg
        self._latest_metrics: dict[str, Any] = {}

    @property
    def enabled(self) -> bool:
        return self.id is not None

    @property
    def workspace(self) -> Workspace:
        if self._workspace is None:
            self._workspace = open_workspace(self._workspace_arg)
        return self._workspace

    def use(self, ref: str, allow_unfinished: bool = False) -> str:
        """Resolve a run reference to an absolute path and record that this run used it.
        Anything else (a hub id, a local path, a URL) comes back unchanged."""
        if not is_run_reference(ref):
            return ref
        return str(self.resolve_use(ref, allow_unfinished).path)

    def resolve_use(self, ref: str, allow_unfinished: bool = False) -> Resolved:
        """Like `use` for a run reference, returning which run and path it resolved to."""
        resolved = resolve_in(self.workspace, ref, allow_unfinished, before=self.id)
        if self.enabled:
            if resolved.run_id == self.id:
                raise RunError(f"{ref}: a run cannot use its own outputs")
            self.workspace.add_use(self.id, resolved.run_id, str(resolved.reference))
        return resolved

    def set_main_output(self, relpath: str) -> None:
        """What `runs/N` names: a path inside the run folder (default: the folder itself), or
        another run's output given as a reference with its number (`runs/7/model`: a sweep
        names its best trial's model), which `runs/N` then resolves to."""
        ref = parse_reference(relpath) if relpath.startswith("runs/") else None
        if ref is not None and (ref.run is None or ref.run == self.id):
            raise RunError(f"main output {relpath!r} must name another run by its number")
        if ref is None and (Path(relpath).is_absolute() or ".." in Path(relpath).parts):
            raise RunError(f"main output {relpath!r} must be a path inside the run folder")
        self.main_output = Path(relpath).as_posix()
        if self.enabled:
            self.workspace.update(self.id, main_output=self.main_output)

    def log_metrics(self, values: dict[str, Any], step: int | None = None) -> None:
        """Append one JSON line (`step`, the values, `time`) to the metrics file."""
        record = ({} if step is None else {"step": step}) | dict(values) | {"time": time.time()}
        line = to_json(record)
        self._latest_metrics.update(json.loads(line))
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def set_summary(self, text: str) -> None:
        """The one line `tunesmith runs` shows for this run."""
        self.summary = " ".join(str(text).split())

    def exclude_from_outputs(self, relpath: str) -> None:
        """Leave a path in the run folder out of its outputs (e.g. a mounted input)."""
        self.excluded.add(Path(relpath).as_posix().strip("/"))
        if self.enabled:
            self.info["excluded"] = sorted(self.excluded)
            self.workspace.update(self.id, info=self.info)

    def metrics_to_store(self) -> dict[str, Any]:
        if self.final_metrics:
            return dict(self.final_metrics)
        return {k: v for k, v in self._latest_metrics.items() if k not in ("step", "time")}


class _Tee:
    """A text stream that writes to the terminal stream and to the run's log."""

    def __init__(self, stream: TextIO, log: TextIO, lock: threading.Lock):
        self._stream = stream
        self._log = log
        self._lock = lock

    def write(self, text: str) -> int:
        with self._lock:
            if not self._log.closed:
                self._log.write(text)
                self._log.flush()
        return self._stream.write(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, encoding, fileno, buffer…
        return getattr(self._stream, name)


class _LogHandler(logging.Handler):
    """Writes `tunesmith.*` log records to the run's log, and not to the terminal."""

    def __init__(self, log: TextIO, lock: threading.Lock):
        super().__init__()
        self._log, self._lock = log, lock

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            if not self._log.closed:
                self._log.write(f"{record.name}: {record.getMessage()}\n")
                self._log.flush()


@contextmanager
def _tee_output(log_path: Path) -> Iterator[TextIO]:
    log = open(log_path, "a", encoding="utf-8", errors="replace", newline="")
    lock = threading.Lock()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(sys.stdout, log, lock), _Tee(sys.stderr, log, lock)
    # Library messages (e.g. huggingface_hub's retries, through `tunesmith.hub`): log only.
    messages = _LogHandler(log, lock)
    logging.getLogger("tunesmith").addHandler(messages)
    try:
        yield log
    finally:
        logging.getLogger("tunesmith").removeHandler(messages)
        sys.stdout, sys.stderr = saved
        with lock:
            log.close()


@contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """SIGTERM raises Terminated in the main thread, so a run ends as on Ctrl-C (recorded).
    Yields the signals received meanwhile: code that reports a signal as a plain
    KeyboardInterrupt (Ray's `get`) loses which one it was."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def raise_terminated(signum, frame):
        received.append(signum)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C/SIGTERM while the end of a run is recorded, then deliver them: a run is
    never left half-recorded by an impatient second Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in sigs}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if caught:
            raise Terminated() if caught[0] == signal.SIGTERM else KeyboardInterrupt()


@contextmanager
def recorded_run(
    kind: str,
    params: dict[str, Any] | None = None,
    workspace: str | Path | None = None,
    enabled: bool = True,
    argv: list[str] | None = None,
    output_dir: str | Path | None = None,
    name: str | None = None,
) -> Iterator[RunHandle]:
    """Execute a command as run N of the workspace (see the module docstring), also
    `runs/NAME` given a `name` (the newest run of a name wins).

    With `enabled=False` nothing is recorded: `run.dir` is `output_dir` (or the current
    directory) and `run.id` is None.
    """
    check_run_name(name)
    if not enabled:
        folder = Path(output_dir) if output_dir else Path.cwd()
        folder.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="tunesmith-norun-"))
        try:
            yield RunHandle(None, folder, scratch, None, workspace)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return

    ws = open_workspace(workspace)
    info = environment.collect()
    argv = list(argv if argv is not None else sys.argv)
    parent = os.environ.get(PARENT_ENV, "")
    if parent.isdigit():
        info["parent"] = int(parent)
    run = ws.create_run(kind, argv, dict(params or {}), info, name=name)
    handle = RunHandle(run.id, ws.run_dir(run.id), ws.records_dir(run.id), ws)
    handle.info = {k: v for k, v in info.items() if k != "host"}
    ws.write_meta(run.id)
    started = time.monotonic()
    status, exit_code, error = "failed", 1, None
    with _tee_output(handle.log_path) as log, sigterm_as_interrupt():
        print(f"run {run.id}", file=sys.stderr, flush=True)
        try:
            yield handle
            if handle.exit_code:
                status, exit_code = "failed", handle.exit_code
                error = handle.error or f"exit code {handle.exit_code}"
            else:
                status, exit_code = "succeeded", 0
        except KeyboardInterrupt as e:
            status, exit_code = "interrupted", getattr(e, "exit_code", 130)
            error = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted (Ctrl-C)"
            raise
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            status, exit_code = ("succeeded", 0) if code == 0 else ("failed", code)
            error = None if code == 0 else str(e.code)
            raise
        except BaseException as e:
            status, exit_code = "failed", getattr(e, "exit_code", 1)
            error = str(e) or type(e).__name__
            raise
        finally:
            with _signals_deferred():
                _finish(ws, handle, status, exit_code, error, time.monotonic() - started, log)


def _finish(
    ws: Workspace,
    handle: RunHandle,
    status: str,
    exit_code: int,
    error: str | None,
    duration: float,
    log: TextIO,
) -> None:
    if error and status == "failed":
        log.write(f"error: {error}\n")
    try:
        outputs = scan_outputs(handle.dir, handle.excluded)
    except OSError as e:  # the status must be recorded even when outputs cannot be read
        outputs = []
        error = (f"{error}; " if error else "") + f"outputs could not be recorded: {e}"
    if "torch" in sys.modules:  # the device is known precisely once torch was used
        handle.info["device"] = environment.device()
    if handle.excluded:
        handle.info["excluded"] = sorted(handle.excluded)
    ws.finish(
        handle.id,
        outputs,
        status=status,
        ended=time.time(),
        duration=duration,
        exit_code=exit_code,
        error=error,
        summary=handle.summary,
        main_output=handle.main_output,
        metrics=handle.metrics_to_store(),
        info=handle.info,
    )
    ws.write_meta(handle.id)
    took = format_duration(duration)
    message = {
        "succeeded": f"run {handle.id} succeeded in {took}",
        "failed": f"run {handle.id} failed (exit code {exit_code}) after {took}",
        "interrupted": f"run {handle.id} interrupted after {took}",
    }[status]
    print(message, file=sys.stderr, flush=True)
