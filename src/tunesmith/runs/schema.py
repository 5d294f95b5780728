"""The index's tables and the row type, shared by the workspace and its readers."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("running", "succeeded", "failed", "interrupted")
STALE_NOTE = "process died without finishing"
SCHEMA_VERSION = 1
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a removed id is never reused
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        argv TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}',
        started REAL NOT NULL,
        ended REAL,
        duration REAL,
        exit_code INTEGER,
        error TEXT,
        pid INTEGER,
        host TEXT,
        proc_start TEXT,
        summary TEXT,
        main_output TEXT NOT NULL DEFAULT '.',
        metrics TEXT NOT NULL DEFAULT '{}',
        info TEXT NOT NULL DEFAULT '{}'
    )""",
    """CREATE TABLE IF NOT EXISTS uses (
        run_id INTEGER NOT NULL,
        used_id INTEGER NOT NULL,
        ref TEXT NOT NULL,
        PRIMARY KEY (run_id, used_id, ref)
    )""",
    "CREATE INDEX IF NOT EXISTS uses_by_used ON uses (used_id)",
    """CREATE TABLE IF NOT EXISTS outputs (
        run_id INTEGER NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        PRIMARY KEY (run_id, path)
    )""",
]
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
