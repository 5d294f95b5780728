"""The index's row type and its JSON encoding, shared by the workspace and its readers.
The tables themselves are built and upgraded by `migrations.py`."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("running", "succeeded", "failed", "interrupted")
STALE_NOTE = "process died without finishing"
JSON_COLUMNS = ("argv", "params", "metrics", "info")


@dataclass
class Run:
    """One row of the index."""

    id: int
    kind: str
    status: str
    argv: list[str]
    params: dict[str, Any]
    started: float
    ended: float | None = None
    duration: float | None = None
    exit_code: int | None = None
    error: str | None = None
    pid: int | None = None
    host: str | None = None
    proc_start: str | None = None
    summary: str | None = None
    main_output: str = "."
    metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    name: str | None = None  # given with --name

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Run:
        values = dict(row)
        for key in JSON_COLUMNS:
            values[key] = json.loads(values[key]) if values[key] else {}
        return cls(**values)


def to_json(value: Any) -> str:
    """JSON for the index and meta files; paths, numpy/torch scalars and the like become
    numbers or strings rather than failing a run at the end."""

    def fallback(o: Any) -> Any:
        if hasattr(o, "item"):
            try:
                return o.item()
            except (TypeError, ValueError):
                pass
        return str(o)

    return json.dumps(value, default=fallback)
