"""Healing the run index: `runs/index.db` rebuilt from the runs' own `meta.json` files.

The index is a cache of what every run folder already says about itself, so a missing, empty
or damaged index loses nothing: `index_problem` finds what is wrong with it and `rebuild_index`
writes a new one beside it and swaps it in. A damaged file is kept, renamed, for inspection.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tunesmith.runs.migrations import migrate
from tunesmith.runs.outputs import RECORDS_DIR
from tunesmith.runs.schema import to_json

# meta.json keys that are columns or tables of the index; every other key is part of `info`.
_NOT_INFO = {
    "id", "name", "kind", "status", "command", "params", "started", "ended", "duration_s",
    "exit_code", "error", "pid", "host", "used", "main_output", "summary", "metrics",
    "outputs", "folder", "used_by", "device", "versions", "git_commit",
}  # fmt: skip
NO_RECORD = "its record (.tunesmith/meta.json) was missing when the index was rebuilt"


def run_folders(runs_dir: Path) -> list[Path]:
    """The numbered run folders, in order."""
    try:
        entries = list(runs_dir.iterdir())
    except OSError:
        return []
    folders = [p for p in entries if p.name.isascii() and p.name.isdigit() and p.is_dir()]
    return sorted(folders, key=lambda p: int(p.name))


@contextmanager
def index_lock(runs_dir: Path) -> Iterator[None]:
    """One process at a time checks and heals the index (`runs/index.lock`)."""
    with open(runs_dir / "index.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def index_problem(db_path: Path, runs_dir: Path, read_only: bool = False) -> str | None:
    """Why the index cannot be trusted (`missing`, `empty`, `damaged (…)`), or None when it is
    sound or there are no runs to lose. `read_only`: the folder cannot be written."""
    if not run_folders(runs_dir):
        return None
    if not db_path.exists():
        return "missing"
    if db_path.stat().st_size == 0:
        return "empty"
    try:
        conn = connect_read_only(db_path) if read_only else _connect_ro(db_path)
        try:
            check = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if check != "ok":
                return f"damaged ({check})"
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if (
                "runs" not in tables
                or conn.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is None
            ):
                return "empty"
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return None  # busy or unreadable: not evidence of damage; the caller will say
    except sqlite3.DatabaseError as e:
        return f"damaged ({e})"
    return None


def _connect_ro(db_path: Path, immutable: bool = False) -> sqlite3.Connection:
    mode = "immutable=1" if immutable else "mode=ro"
    uri = f"file:{quote(str(db_path))}?{mode}"
    return sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)


def connect_read_only(db_path: Path) -> sqlite3.Connection:
    """The index in a folder that cannot be written: read-only, with its WAL where SQLite can
    use it, else as immutable (a WAL left by a killed process is then not seen)."""
    conn = _connect_ro(db_path)
    try:
        conn.execute("SELECT name FROM sqlite_master").fetchall()
        return conn
    except sqlite3.OperationalError:  # SQLite cannot set up the WAL index without writing
        conn.close()
        return _connect_ro(db_path, immutable=True)


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def _row(meta: dict[str, Any], run_id: int) -> dict[str, Any]:
    """The index row a run's meta.json describes."""
    info = {k: v for k, v in meta.items() if k not in _NOT_INFO}
    info.update({k: meta[k] for k in ("device", "versions", "git_commit") if k in meta})
    return {
        "id": run_id,
        "name": meta.get("name"),
        "kind": str(meta.get("kind") or "unknown"),
        "status": str(meta.get("status") or "failed"),
        "argv": to_json(meta.get("command") or []),
        "params": to_json(meta.get("params") or {}),
        "started": _epoch(meta.get("started")) or 0.0,
        "ended": _epoch(meta.get("ended")),
        "duration": meta.get("duration_s"),
        "exit_code": meta.get("exit_code"),
        "error": meta.get("error"),
        "pid": meta.get("pid"),
        "host": meta.get("host"),
        "summary": meta.get("summary"),
        "main_output": meta.get("main_output") or ".",
        "metrics": to_json(meta.get("metrics") or {}),
        "info": to_json(info),
    }


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / RECORDS_DIR / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _insert_run(tx: sqlite3.Connection, folder: Path) -> None:
    run_id = int(folder.name)
    meta = _read_meta(folder)
    if meta is None:  # keep the folder visible rather than lose it
        meta = {"kind": "unknown", "status": "failed", "error": NO_RECORD}
        meta["started"] = datetime.fromtimestamp(folder.stat().st_mtime).astimezone().isoformat()
    row = _row(meta, run_id)
    marks = ", ".join("?" for _ in row)
    tx.execute(f"INSERT INTO runs ({', '.join(row)}) VALUES ({marks})", list(row.values()))
    for use in meta.get("used") or []:
        tx.execute(
            "INSERT OR IGNORE INTO uses (run_id, used_id, ref) VALUES (?, ?, ?)",
            (run_id, int(use["run"]), str(use["ref"])),
        )
    for out in meta.get("outputs") or []:
        tx.execute(
            "INSERT OR REPLACE INTO outputs (run_id, path, size, sha256) VALUES (?, ?, ?, ?)",
            (run_id, str(out["path"]), int(out["size"]), str(out["sha256"])),
        )


def _set_aside(db_path: Path, problem: str) -> Path | None:
    """Move a damaged index (with its WAL files) out of the way; remove a missing/empty one's
    leftovers, whose WAL must never be replayed into the new index."""
    kept = None
    if problem.startswith("damaged") and db_path.exists():
        kept = db_path.with_name(f"{db_path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(db_path, kept)
    for suffix in ("", "-wal", "-shm", "-journal"):
        leftover = Path(f"{db_path}{suffix}")
        if leftover.exists():
            leftover.unlink()
    return kept


def fill_index(conn: sqlite3.Connection, runs_dir: Path) -> int:
    """Create the tables in an empty database and insert every run folder's record; returns
    how many runs it holds."""
    folders = run_folders(runs_dir)
    conn.execute("BEGIN IMMEDIATE")
    migrate(conn)
    for folder in folders:
        _insert_run(conn, folder)
    conn.execute("COMMIT")
    return len(folders)


def memory_index(runs_dir: Path) -> sqlite3.Connection:
    """An index in memory, for reading a workspace whose index cannot be rebuilt on disk."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    fill_index(conn, runs_dir)
    return conn


def upgraded_in_memory(conn: sqlite3.Connection) -> sqlite3.Connection:
    """A copy in memory of an index written by an earlier tunesmith, upgraded there, for reading
    a workspace that cannot be written (so cannot be upgraded in place). Closes `conn`."""
    memory = sqlite3.connect(":memory:", isolation_level=None)
    conn.backup(memory)
    conn.close()
    memory.execute("BEGIN IMMEDIATE")
    migrate(memory)
    memory.execute("COMMIT")
    return memory


def rebuild_index(db_path: Path, runs_dir: Path, problem: str) -> tuple[int, Path | None]:
    """Write a new index from the run folders' meta.json and swap it in for the old one.
    Returns how many runs it holds and where a damaged old index was kept (else None).
    The caller holds the workspace's index lock."""
    tmp = db_path.with_name(f"{db_path.name}.rebuild-{os.getpid()}")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        count = fill_index(conn, runs_dir)
    finally:
        conn.close()  # the last connection checkpoints and removes the WAL file
    kept = _set_aside(db_path, problem)
    os.replace(tmp, db_path)
    return count, kept
