"""The run index's schema, as a list of small migrations (as in simonw/llm's migrations.py).

Each migration is a function of an open transaction, applied once, in order. The index keeps
the names of those applied in its `migrations` table and their count in `PRAGMA user_version`,
so an index written by any earlier tunesmith is upgraded in place the first time it is opened,
and one written by a newer tunesmith is refused rather than misread. To change the schema,
append a function: never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from tunesmith.errors import RunError

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_initial(tx: sqlite3.Connection) -> None:
    """The index as tunesmith 0.1.0 first wrote it (user_version 1, no migrations table)."""
    for statement in (
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
    ):
        tx.execute(statement)


@migration
def m002_running_runs_index(tx: sqlite3.Connection) -> None:
    """Every command looks for its host's `running` runs to reap dead ones: index them."""
    tx.execute("CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, host)")


@migration
def m003_run_names(tx: sqlite3.Connection) -> None:
    """`--name NAME`: a run named by the user, found as `runs/NAME` (the newest of that name)."""
    tx.execute("ALTER TABLE runs ADD COLUMN name TEXT")
    tx.execute("CREATE INDEX IF NOT EXISTS runs_by_name ON runs (name)")


def schema_version(conn: sqlite3.Connection) -> int:
    """How many migrations the index has had (0: a new, empty file)."""
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(tx: sqlite3.Connection) -> list[str]:
    """Apply, inside the caller's transaction, the migrations the index has not had yet;
    returns their names."""
    tx.execute(
        "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)"
    )
    version = schema_version(tx)
    if version > len(MIGRATIONS):
        raise RunError(
            f"the run index is version {version}, newer than this tunesmith knows "
            f"({len(MIGRATIONS)}); upgrade tunesmith to use this workspace"
        )
    done = {row[0] for row in tx.execute("SELECT name FROM migrations")}
    applied = []
    for number, fn in enumerate(MIGRATIONS, start=1):
        if fn.__name__ in done:
            continue
        if number > version:  # else the index had it before it kept the migrations table
            fn(tx)
            applied.append(fn.__name__)
        tx.execute(
            "INSERT INTO migrations (name, applied) VALUES (?, ?)", (fn.__name__, time.time())
        )
    tx.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    return applied
