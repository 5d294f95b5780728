"""The workspace: a folder whose `runs/` holds one folder per run beside an SQLite index.

The index (`runs/index.db`, WAL mode) is the source of truth for ids and status; every write is
one short `BEGIN IMMEDIATE` transaction, so many tunesmith processes can start runs at once.
Each run folder also describes itself in `runs/N/.tunesmith/meta.json`.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunesmith.errors import RunError
from tunesmith.runs import environment
from tunesmith.runs.display import iso_time
from tunesmith.runs.migrations import MIGRATIONS, migrate, schema_version
from tunesmith.runs.outputs import RECORDS_DIR, Output, remove_tree, scan_outputs
from tunesmith.runs.rebuild import (
    connect_read_only,
    index_lock,
    index_problem,
    memory_index,
    rebuild_index,
    run_folders,
    upgraded_in_memory,
)
from tunesmith.runs.schema import JSON_COLUMNS, STALE_NOTE, Run, to_json


class Workspace:
    """A folder holding `runs/`. Nothing is created on disk until a run is recorded."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.runs_dir = self.root / "runs"
        self.db_path = self.runs_dir / "index.db"
        self._conn: sqlite3.Connection | None = None
        self.read_only = False  # set when the index had to be opened read-only

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # -- connection -----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.writable():
                self._conn = self._open_read_only()
                return self._conn
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            with index_lock(self.runs_dir):
                problem = index_problem(self.db_path, self.runs_dir)
                if problem:
                    self._rebuild(problem)
                conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA busy_timeout = 60000")
                self._conn = conn
                self._init_schema(conn)
        return self._conn

    def writable(self) -> bool:
        """Whether runs can be recorded here (a read-only workspace can still be read)."""
        folder = self.runs_dir if self.runs_dir.exists() else self.root
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent  # a workspace to be created: can its parent take it?
        return os.access(folder, os.W_OK) and (
            not self.db_path.exists() or os.access(self.db_path, os.W_OK)
        )

    def _open_read_only(self) -> sqlite3.Connection:
        """The index, read-only; rebuilt in memory from the runs' meta.json when it is missing
        or damaged, since it cannot be rebuilt on disk."""
        self.read_only = True
        problem = index_problem(self.db_path, self.runs_dir, read_only=True)
        if problem:
            _warn(
                f"the run index {self.db_path} is {problem} and the workspace is read-only; "
                "reading the runs' own records instead"
            )
            conn = memory_index(self.runs_dir)
        else:
            conn = connect_read_only(self.db_path)
            if schema_version(conn) < len(MIGRATIONS):
                conn = upgraded_in_memory(conn)  # an older index cannot be upgraded in place
        conn.row_factory = sqlite3.Row
        return conn

    def _rebuild(self, problem: str) -> None:
        count, kept = rebuild_index(self.db_path, self.runs_dir, problem)
        aside = f"; the damaged file is kept as {kept.name}" if kept else ""
        _warn(
            f"the run index {self.db_path} was {problem}; rebuilt it from the records of "
            f"{count} run folder{'s' if count != 1 else ''}{aside}"
        )

    def reindex(self) -> int:
        """Rebuild the index from the runs' meta.json files (`tunesmith runs reindex`);
        returns how many runs it holds."""
        self._check_writable()
        self.close()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        with index_lock(self.runs_dir):
            count, _ = rebuild_index(self.db_path, self.runs_dir, "rebuilt on request")
        return count

    def _check_writable(self) -> None:
        if self.read_only or not self.writable():
            raise RunError(
                f"workspace {self.root} is read-only: its runs can be listed and shown, but "
                "nothing can be recorded or changed there; use --workspace DIR (a folder you "
                "can write), or --no-run"
            )

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        if schema_version(conn) == len(MIGRATIONS):
            return
        for attempt in range(50):  # switching to WAL needs a moment alone with the file
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                time.sleep(0.05 * (attempt + 1))
        with self._transaction() as tx:
            new = schema_version(tx) == 0
            migrate(tx)
            # An index rebuilt next to existing run folders must not hand out their ids again.
            existing = [int(p.name) for p in run_folders(self.runs_dir)]
            if new and existing:
                tx.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('runs', ?)", (max(existing),)
                )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        self._check_writable()
        if conn.in_transaction:  # left open by an interrupt between statements
            conn.rollback()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.execute("COMMIT")

    def _has_index(self) -> bool:
        """Whether there is an index to read, or run folders to rebuild it from."""
        return self._conn is not None or self.db_path.exists() or bool(run_folders(self.runs_dir))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- runs -----------------------------------------------------------------------------

    def run_dir(self, run_id: int) -> Path:
        return self.runs_dir / str(run_id)

    def records_dir(self, run_id: int) -> Path:
        return self.run_dir(run_id) / RECORDS_DIR

    def create_run(
        self,
        kind: str,
        argv: list[str],
        params: dict[str, Any],
        info: dict[str, Any],
        name: str | None = None,
    ) -> Run:
        """Allocate the next id, record the run as `running` by this process, make its folder."""
        pid = os.getpid()
        values = {
            "kind": kind,
            "name": name,
            "status": "running",
            "argv": to_json(list(argv)),
            "params": to_json(params),
            "started": time.time(),
            "pid": pid,
            "host": environment.hostname(),
            "proc_start": environment.process_start_time(pid),
            "info": to_json(info),
        }
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._transaction() as tx:
            sql = f"INSERT INTO runs ({columns}) VALUES ({marks})"
            run_id = tx.execute(sql, list(values.values())).lastrowid
        self.records_dir(run_id).mkdir(parents=True, exist_ok=True)
        run = self.get(run_id)
        assert run is not None
        return run

    def get(self, run_id: int) -> Run | None:
        if not self._has_index():
            return None
        row = self._connect().execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return Run.from_row(row) if row else None

    def latest(
        self, before: int | None = None, kind: str | None = None, name: str | None = None
    ) -> Run | None:
        """The newest run (started before run `before`, of `kind`, named `name`, when given)."""
        if not self._has_index():
            return None
        where, values = ["id < ?"], [before if before is not None else 2**62]
        for column, value in (("kind", kind), ("name", name)):
            if value is not None:
                where.append(f"{column} = ?")
                values.append(value)
        sql = f"SELECT * FROM runs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT 1"
        row = self._connect().execute(sql, values).fetchone()
        return Run.from_row(row) if row else None

    def list_runs(self) -> list[Run]:
        if not self._has_index():
            return []
        rows = self._connect().execute("SELECT * FROM runs ORDER BY id").fetchall()
        return [Run.from_row(r) for r in rows]

    def update(self, run_id: int, **fields: Any) -> None:
        with self._transaction() as tx:
            _update_run(tx, run_id, fields)

    def finish(self, run_id: int, outputs: list[Output], **fields: Any) -> None:
        """Record the end of a run and its outputs in one transaction."""
        with self._transaction() as tx:
            _update_run(tx, run_id, fields)
            tx.execute("DELETE FROM outputs WHERE run_id = ?", (run_id,))
            tx.executemany(
                "INSERT INTO outputs (run_id, path, size, sha256) VALUES (?, ?, ?, ?)",
                [(run_id, o.path, o.size, o.sha256) for o in outputs],
            )

    # -- lineage and outputs --------------------------------------------------------------

    def add_use(self, run_id: int, used_id: int, ref: str) -> None:
        with self._transaction() as tx:
            tx.execute(
                "INSERT OR IGNORE INTO uses (run_id, used_id, ref) VALUES (?, ?, ?)",
                (run_id, used_id, ref),
            )

    def used(self, run_id: int) -> list[tuple[int, str]]:
        """(run id, reference) pairs this run used."""
        if not self._has_index():
            return []
        rows = self._connect().execute(
            "SELECT used_id, ref FROM uses WHERE run_id = ? ORDER BY used_id, ref", (run_id,)
        )
        return [(r[0], r[1]) for r in rows]

    def used_by(self, run_id: int) -> list[int]:
        """Runs (still in the index) that used this one."""
        if not self._has_index():
            return []
        rows = self._connect().execute(
            "SELECT DISTINCT u.run_id FROM uses u JOIN runs r ON r.id = u.run_id "
            "WHERE u.used_id = ? ORDER BY u.run_id",
            (run_id,),
        )
        return [r[0] for r in rows]

    def outputs(self, run_id: int) -> list[Output]:
        if not self._has_index():
            return []
        rows = self._connect().execute(
            "SELECT path, size, sha256 FROM outputs WHERE run_id = ? ORDER BY path", (run_id,)
        )
        return [Output(r[0], r[1], r[2]) for r in rows]

    def describe(self, run_id: int, with_used_by: bool = True) -> dict[str, Any]:
        """Everything recorded about a run, as written to its meta.json."""
        run = self.get(run_id)
        if run is None:
            raise RunError(f"there is no run {run_id} in {self.root} (see `tunesmith runs`)")
        info = dict(run.info)
        meta: dict[str, Any] = {
            "id": run.id,
            "name": run.name,
            "kind": run.kind,
            "status": run.status,
            "command": run.argv,
            "params": run.params,
            "started": iso_time(run.started),
            "ended": iso_time(run.ended),
            "duration_s": run.duration,
            "exit_code": run.exit_code,
            "error": run.error,
            "pid": run.pid,
            "host": run.host,
            "device": info.pop("device", None),
            "versions": info.pop("versions", {}),
            "git_commit": info.pop("git_commit", None),
            "used": [{"run": i, "ref": ref} for i, ref in self.used(run_id)],
            "main_output": run.main_output,
            "summary": run.summary,
            "metrics": run.metrics,
            "outputs": [o.to_dict() for o in self.outputs(run_id)],
            "folder": str(self.run_dir(run_id)),
            **info,
        }
        if with_used_by:
            meta["used_by"] = self.used_by(run_id)
        return meta

    def write_meta(self, run_id: int) -> Path:
        path = self.records_dir(run_id) / "meta.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"meta.json.{os.getpid()}.tmp")
        tmp.write_text(to_json(self.describe(run_id, with_used_by=False)) + "\n")
        os.replace(tmp, path)
        return path

    # -- housekeeping ---------------------------------------------------------------------

    def reap_stale(self) -> list[int]:
        """Mark `running` runs of this host whose process is gone as failed; return their ids."""
        if not self._has_index() or not self.writable():
            return []  # a read-only workspace is shown as it is
        host = environment.hostname()
        rows = self._connect().execute(
            "SELECT id, pid, proc_start FROM runs WHERE status = 'running' AND host = ?", (host,)
        )
        reaped = []
        for run_id, pid, proc_start in rows.fetchall():
            if environment.process_alive(pid, proc_start):
                continue
            run = self.get(run_id)
            if run.info.get("cluster", {}).get("job"):  # its cluster job, not this pid, is the run
                continue
            log = self.records_dir(run_id) / "log.txt"
            ended = log.stat().st_mtime if log.exists() else time.time()  # last sign of life
            run_dir = self.run_dir(run_id)
            excluded = run.info.get("excluded", [])
            outputs = scan_outputs(run_dir, excluded) if run_dir.exists() else []
            with self._transaction() as tx:
                changed = tx.execute(
                    "UPDATE runs SET status = 'failed', error = ?, ended = ?, duration = ? "
                    "WHERE id = ? AND status = 'running'",
                    (STALE_NOTE, ended, max(0.0, ended - run.started), run_id),
                ).rowcount
                if changed:
                    tx.execute("DELETE FROM outputs WHERE run_id = ?", (run_id,))
                    tx.executemany(
                        "INSERT INTO outputs (run_id, path, size, sha256) VALUES (?, ?, ?, ?)",
                        [(run_id, o.path, o.size, o.sha256) for o in outputs],
                    )
            if changed:
                reaped.append(run_id)
                if run_dir.exists():
                    self.write_meta(run_id)
        return reaped

    def delete(self, run_id: int) -> None:
        """Forget a run and delete its folder, unconditionally (`removal.remove_run` decides
        whether it may go)."""
        self._connect()  # before the lock, which opening the index takes too
        # Under the index lock: a process healing the index meanwhile would bring it back.
        with index_lock(self.runs_dir):
            with self._transaction() as tx:
                tx.execute("DELETE FROM runs WHERE id = ?", (run_id,))
                tx.execute("DELETE FROM outputs WHERE run_id = ?", (run_id,))
                tx.execute("DELETE FROM uses WHERE run_id = ?", (run_id,))
            remove_tree(self.run_dir(run_id))


def open_workspace(path: str | Path | None = None) -> Workspace:
    """The workspace at `path`, else $TUNESMITH_HOME, else the current directory.

    Runs of this host left `running` by a process that died are marked failed on the way.
    """
    root = path or os.environ.get("TUNESMITH_HOME") or Path.cwd()
    workspace = Workspace(root)
    if workspace.root.exists() and not workspace.root.is_dir():
        raise RunError(f"workspace {workspace.root} is not a folder")
    workspace.reap_stale()
    return workspace


def _warn(message: str) -> None:
    print(f"tunesmith: warning: {message}", file=sys.stderr, flush=True)


def _update_run(tx: sqlite3.Connection, run_id: int, fields: dict[str, Any]) -> None:
    """Set columns of one run (JSON columns encoded) inside the caller's transaction."""
    values = {k: to_json(v) if k in JSON_COLUMNS else v for k, v in fields.items()}
    assignments = ", ".join(f"{key} = ?" for key in values)
    tx.execute(f"UPDATE runs SET {assignments} WHERE id = ?", [*values.values(), run_id])
