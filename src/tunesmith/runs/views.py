"""What `tunesmith runs`, `runs show` and `logs` print."""

from __future__ import annotations

import codecs
import json
import shlex
import time
from collections.abc import Callable, Iterator
from typing import Any

from tunesmith.errors import RunError
from tunesmith.runs.display import format_duration, format_size, format_time, table
from tunesmith.runs.schema import Run
from tunesmith.runs.seal import find_changes
from tunesmith.runs.workspace import Workspace


def status(workspace: Workspace, run: Run) -> str:
    """The recorded status, or `missing` when the run's folder was deleted by hand."""
    return run.status if workspace.run_dir(run.id).is_dir() else "missing"


def summary(workspace: Workspace, run: Run) -> str:
    """The run's own summary, else why it did not succeed, else the size of its outputs."""
    if status(workspace, run) == "missing":
        return f"its folder was removed; `tunesmith runs rm {run.id}` forgets it"
    if run.summary:
        return run.summary
    cluster = run.info.get("cluster", {})
    if run.status == "running" and cluster.get("job"):  # a remote run (tunesmith.cluster)
        return f"on cluster {cluster['address']} ({cluster.get('node')}, {cluster.get('device')})"
    if run.status in ("failed", "interrupted") and run.error:
        return run.error
    outputs = workspace.outputs(run.id)
    if not outputs:
        return "" if run.status == "running" else "no outputs"
    n = len(outputs)
    return f"{n} file{'s' if n != 1 else ''}, {format_size(sum(o.size for o in outputs))}"


def _duration(run: Run) -> str:
    if run.status == "running":
        return format_duration(time.time() - run.started) + "…"
    return format_duration(run.duration)


def runs_table(workspace: Workspace, runs: list[Run]) -> str:
    """The runs, one a line; a NAME column only once some run has a name."""
    named = any(r.name for r in runs)
    rows = [
        [
            str(r.id),
            *([r.name or "-"] if named else []),
            r.kind,
            status(workspace, r),
            format_time(r.started),
            _duration(r),
            summary(workspace, r),
        ]
        for r in runs
    ]
    headers = ["ID", *(["NAME"] if named else []), "KIND", "STATUS", "STARTED", "DURATION"]
    return table([*headers, "SUMMARY"], rows)


def verify_line(workspace: Workspace, run_id: int) -> tuple[bool, str]:
    """Whether run N is intact, and `run N: ok, …` or what changed in its folder since it
    ended, a line each (`tunesmith runs verify`)."""
    run = workspace.get(run_id)
    assert run is not None
    if status(workspace, run) == "missing":
        return False, f"run {run_id}: its folder is missing"
    if run.status == "running":
        return True, f"run {run_id}: running, not sealed yet"
    changes = find_changes(workspace, run)
    if changes:
        return False, "\n".join(f"run {run_id}: {change}" for change in changes)
    n = len(workspace.outputs(run_id))
    return True, f"run {run_id}: ok, {n} file{'s' if n != 1 else ''} as recorded"


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def describe_text(workspace: Workspace, run_id: int) -> str:
    meta = workspace.describe(run_id)
    run = workspace.get(run_id)
    assert run is not None
    versions = meta.get("versions") or {}
    lines = [
        f"run {run.id}  {run.kind}  {status(workspace, run)}",
        f"command:   {shlex.join(run.argv)}",
        f"folder:    {meta['folder']}",
        f"started:   {format_time(run.started)}   duration: {_duration(run)}"
        f"   exit code: {'-' if run.exit_code is None else run.exit_code}",
        f"host:      {run.host}   device: {meta.get('device') or '-'}",
        "versions:  " + "  ".join(f"{k} {v}" for k, v in versions.items() if v),
    ]
    if meta.get("git_commit"):
        lines.append(f"git:       {meta['git_commit']}")
    if run.name:
        lines.append(f"name:      {run.name} (runs/{run.name})")
    if run.info.get("parent"):
        lines.append(f"parent:    runs/{run.info['parent']} (e.g. the sweep it is a trial of)")
    if run.error:
        lines.append(f"error:     {run.error}")
    if run.summary:
        lines.append(f"summary:   {run.summary}")
    if run.main_output not in ("", "."):
        lines.append(f"main output: runs/{run.id} → {run.main_output}")

    lines.append("params:" if run.params else "params:    none")
    lines += [f"  {k}: {_format_value(v)}" for k, v in run.params.items()]
    used = [ref for _, ref in workspace.used(run_id)]
    lines.append("used:      " + (", ".join(used) or "none"))
    used_by = [f"runs/{i}" for i in meta["used_by"]]
    lines.append("used by:   " + (", ".join(used_by) or "none"))
    lines.append("metrics:" if run.metrics else "metrics:   none")
    lines += [f"  {k}: {_format_value(v)}" for k, v in run.metrics.items()]
    outputs = workspace.outputs(run_id)
    total = format_size(sum(o.size for o in outputs))
    lines.append(f"outputs:   {len(outputs)} file{'s' if len(outputs) != 1 else ''}, {total}")
    width = max((len(o.path) for o in outputs), default=0)
    lines += [
        f"  {o.path.ljust(width)}  {format_size(o.size):>9}  sha256:{o.sha256[:16]}"
        for o in outputs
    ]
    return "\n".join(lines)


def follow_log(
    workspace: Workspace,
    run_id: int,
    follow: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 0.2,
) -> Iterator[str]:
    """The run's log; with `follow`, then whatever it adds until the run is no longer running."""
    path = workspace.records_dir(run_id) / "log.txt"
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # keeps split characters
    offset = 0

    def read_more(final: bool = False) -> str:
        nonlocal offset
        data = b""
        if path.exists():
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        offset += len(data)
        return decoder.decode(data, final=final)

    if not path.exists() and not follow:
        raise RunError(f"run {run_id} has no log")
    while True:
        text = read_more(final=not follow)
        if text:
            yield text
        if not follow:
            return
        workspace.reap_stale()
        run = workspace.get(run_id)
        if run is None or run.status != "running":
            rest = read_more(final=True)
            if rest:
                yield rest
            return
        sleep(interval)
