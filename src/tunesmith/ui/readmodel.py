"""Read-only queries over the run store for the dashboard.

The runs table asks for one page at a time (filters and the count run in SQLite, so a page
costs the same with 10 runs or 10,000), and a run page follows its log and metrics from a byte
offset, so each poll reads only what was appended since the last one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.runs import Run, Workspace

MAX_CHUNK = 256 * 1024  # bytes of log or metrics one poll returns at most


@dataclass(frozen=True)
class RunFilter:
    kind: str | None = None
    status: str | None = None
    search: str | None = None  # a substring of the command line

    def where(self) -> tuple[str, list[Any]]:
        clauses, values = [], []
        if self.kind:
            clauses.append("kind = ?")
            values.append(self.kind)
        if self.status:
            clauses.append("status = ?")
            values.append(self.status)
        if self.search:
            escaped = self.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append("argv LIKE ? ESCAPE '\\'")
            values.append(f"%{escaped}%")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", values


@contextmanager
def _index(workspace: Workspace) -> Iterator[sqlite3.Connection | None]:
    """A connection of our own (the dashboard answers from many threads), None before the
    workspace has recorded anything."""
    if not workspace.db_path.exists():
        yield None
        return
    with closing(sqlite3.connect(workspace.db_path, timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        yield conn


def runs_page(workspace: Workspace, flt: RunFilter, limit: int, offset: int) -> dict[str, Any]:
    """Newest first: {total, runs: [row...], kinds} for one page of the runs table."""
    with _index(workspace) as conn:
        if conn is None:
            return {"total": 0, "runs": [], "kinds": []}
        where, values = flt.where()
        total = conn.execute(f"SELECT COUNT(*) FROM runs{where}", values).fetchone()[0]
        rows = conn.execute(
            f"SELECT * FROM runs{where} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*values, limit, offset],
        ).fetchall()
        runs = [Run.from_row(r) for r in rows]
        ids = [r.id for r in runs]
        marks = ",".join("?" * len(ids))
        used: dict[int, list[int]] = {i: [] for i in ids}
        sizes: dict[int, tuple[int, int]] = {}
        if ids:
            for run_id, used_id in conn.execute(
                f"SELECT DISTINCT run_id, used_id FROM uses WHERE run_id IN ({marks}) "
                "ORDER BY used_id",
                ids,
            ):
                used[run_id].append(used_id)
            for run_id, count, size in conn.execute(
                f"SELECT run_id, COUNT(*), SUM(size) FROM outputs WHERE run_id IN ({marks}) "
                "GROUP BY run_id",
                ids,
            ):
                sizes[run_id] = (count, size or 0)
        kinds = [r[0] for r in conn.execute("SELECT DISTINCT kind FROM runs ORDER BY kind")]
    now = time.time()
    return {
        "total": total,
        "kinds": kinds,
        "runs": [_row(r, used[r.id], sizes.get(r.id), now) for r in runs],
    }


def _row(run: Run, used: list[int], outputs: tuple[int, int] | None, now: float) -> dict:
    running = run.status == "running"
    return {
        "id": run.id,
        "kind": run.kind,
        "status": run.status,
        "started": run.started,
        "duration": (now - run.started) if running else run.duration,
        "summary": _summary(run, outputs),
        "command": run.argv,
        "used": used,
    }


def _summary(run: Run, outputs: tuple[int, int] | None) -> str:
    """The run's own summary, else why it did not succeed, else what it left."""
    if run.summary:
        return run.summary
    if run.status in ("failed", "interrupted") and run.error:
        return run.error
    if not outputs:
        return "" if run.status == "running" else "no outputs"
    count, size = outputs
    return f"{count} file{'s' if count != 1 else ''}, {size:,} bytes"


def read_from(path: Path, offset: int, tail: bool = False) -> tuple[bytes, int, int]:
    """(bytes from `offset`, at most MAX_CHUNK, the offset after them, the file's size).
    With `tail` and offset 0, a long file is read from its last MAX_CHUNK bytes."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return b"", 0, 0
    if offset > size:  # the file was replaced: start again
        offset = 0
    if tail and offset == 0 and size > MAX_CHUNK:
        offset = size - MAX_CHUNK
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(MAX_CHUNK)
    return data, offset + len(data), size


def log_chunk(workspace: Workspace, run_id: int, offset: int) -> dict[str, Any]:
    """Log text appended since `offset`, cut at a whole UTF-8 character."""
    data, start_end, size = read_from(workspace.records_dir(run_id) / "log.txt", offset, True)
    start = start_end - len(data)
    cut = len(data)
    # A character may be split across two polls: keep its first bytes for the next one.
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue
        if byte >= 0xC0 and back < _utf8_length(byte):
            cut = len(data) - back
        break
    return {
        "text": data[:cut].decode("utf-8", errors="replace"),
        "offset": start + cut,
        "skipped": start > offset,  # the start of a long log was left out
        "size": size,
    }


def _utf8_length(lead: int) -> int:
    return 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


def metrics_chunk(workspace: Workspace, run_id: int, offset: int) -> dict[str, Any]:
    """Whole metric records appended since `offset` (a line still being written waits)."""
    path = workspace.records_dir(run_id) / "metrics.jsonl"
    records: list[dict[str, Any]] = []
    while True:  # a long history comes in MAX_CHUNK pieces, all in this answer
        data, end, _ = read_from(path, offset)
        complete = data[: data.rfind(b"\n") + 1]
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a damaged line does not hide the rest
            if isinstance(record, dict):
                records.append(record)
        offset = end - len(data) + len(complete)
        if len(data) < MAX_CHUNK or not complete:
            return {"records": records, "offset": offset}
