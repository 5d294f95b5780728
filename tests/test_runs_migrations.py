"""The run index evolves: an index written by an earlier tunesmith is upgraded in place."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest

from tunesmith.errors import RunError
from tunesmith.runs import open_workspace, recorded_run
from tunesmith.runs.migrations import MIGRATIONS

HELLO_SHA256 = hashlib.sha256(b"hello\n").hexdigest()

# The index exactly as tunesmith wrote it at schema version 1 (before the migrations table).
VERSION_1 = [
    """CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
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


def _version_1_index(root) -> None:
    """A workspace with two finished runs, the second using the first, in a version-1 index."""
    runs = root / "runs"
    for run_id in (1, 2):
        (runs / str(run_id) / ".tunesmith").mkdir(parents=True)
    (runs / "1" / "data.txt").write_text("hello\n")
    conn = sqlite3.connect(runs / "index.db")
    for statement in VERSION_1:
        conn.execute(statement)
    row = (
        "INSERT INTO runs (kind, status, argv, params, started, ended, duration, exit_code, "
        "host, summary, main_output, metrics, info) "
        "VALUES (?, 'succeeded', ?, ?, ?, ?, 1.5, 0, 'old-host', ?, ?, ?, '{}')"
    )
    conn.execute(
        row,
        (
            "data",
            '["tunesmith", "data"]',
            '{"seed": 3}',
            100.0,
            101.5,
            "1 file",
            ".",
            '{"examples": 7}',
        ),
    )
    conn.execute(
        row, ("run", '["tunesmith", "run"]', "{}", 200.0, 201.5, None, "out", '{"loss": 0.25}')
    )
    conn.execute("INSERT INTO uses VALUES (2, 1, 'runs/1')")
    conn.execute("INSERT INTO outputs VALUES (1, 'data.txt', 6, ?)", (HELLO_SHA256,))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def _index_state(root) -> tuple[int, list[str], list[str]]:
    conn = sqlite3.connect(root / "runs" / "index.db")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        names = [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY rowid")]
        indexes = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")]
    finally:
        conn.close()
    return version, names, indexes


def test_a_version_1_index_is_upgraded_with_its_runs_intact(workspace, capsys):
    _version_1_index(workspace)
    ws = open_workspace()

    version, names, indexes = _index_state(workspace)
    assert version == len(MIGRATIONS) == 3
    assert names == ["m001_initial", "m002_running_runs_index", "m003_run_names"]
    assert "runs_by_status" in indexes and "runs_by_name" in indexes
    first, second = ws.list_runs()
    assert (first.id, first.kind, first.status, first.params) == (
        1,
        "data",
        "succeeded",
        {"seed": 3},
    )
    assert (first.summary, first.metrics, first.host) == ("1 file", {"examples": 7}, "old-host")
    assert (second.main_output, second.metrics, second.argv) == (
        "out",
        {"loss": 0.25},
        ["tunesmith", "run"],
    )
    assert ws.used(2) == [(1, "runs/1")] and ws.used_by(1) == [2]
    assert [(o.path, o.size, o.sha256) for o in ws.outputs(1)] == [("data.txt", 6, HELLO_SHA256)]

    with recorded_run(kind="generate", argv=["tunesmith", "generate"]) as run:
        assert run.use("runs/1") == str(workspace / "runs" / "1")
    assert run.id == 3  # new runs continue after the old ones
    assert open_workspace().used(3) == [(1, "runs/1")]
    meta = json.loads((workspace / "runs" / "3" / ".tunesmith" / "meta.json").read_text())
    assert meta["status"] == "succeeded"


def test_opening_an_upgraded_index_again_changes_nothing(workspace, capsys):
    _version_1_index(workspace)
    open_workspace().close()
    before = _index_state(workspace)
    open_workspace().list_runs()
    assert _index_state(workspace) == before


def test_a_new_index_has_every_migration(workspace, capsys):
    with recorded_run(kind="run", argv=["x"]):
        pass
    version, names, _ = _index_state(workspace)
    assert version == len(MIGRATIONS)
    assert names == [fn.__name__ for fn in MIGRATIONS]


def test_an_index_from_a_newer_tunesmith_is_refused(workspace, capsys):
    _version_1_index(workspace)
    conn = sqlite3.connect(workspace / "runs" / "index.db")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(RunError, match="newer than this tunesmith knows.*upgrade tunesmith"):
        open_workspace()
