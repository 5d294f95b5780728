"""The workspace: a folder whose `runs/` holds one folder per run beside an SQLite index.

The index (`runs/index.db`, WAL mode) is the source of truth for ids and status; every write is
one short `BEGIN IMMEDIATE` transaction, so many tunesmith processes can start runs at once.
Each run folder also describes itself in `runs/N/.tunesmith/meta.json`.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunesmith.errors import RunError
from tunesmith.runs import environment
from tunesmith.runs.display import iso_time
from tunesmith.runs.outputs import RECORDS_DIR, Output, scan_outputs
from tunesmith.runs.schema import JSON_COLUMNS, SCHEMA, SCHEMA_VERSION, STALE_NOTE, Run, to_json


class Workspace:
    """A folder holding `runs/`. Nothing is created on disk until a run is recorded."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.runs_dir = self.root / "runs"
        self.db_path = self.runs_dir / "index.db"
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # -- connection -----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 60000")
            self._conn = conn
            self._init_schema(conn)
        return self._conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        for attempt in range(50):  # switching to WAL needs a moment alone with the file
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                time.sleep(0.05 * (attempt + 1))
        with self._transaction() as tx:
            if tx.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return
            for statement in SCHEMA:
                tx.execute(statement)
            # An index rebuilt next to existing run folders must not hand out their ids again.
            existing = [int(p.name) for p in self.runs_dir.iterdir() if p.name.isdigit()]
            if existing:
                tx.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('runs', ?)", (max(existing),)
                )
            tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
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
        return self._conn is not None or self.db_path.exists()

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
        self, kind: str, argv: list[str], params: dict[str, Any], info: dict[str, Any]
    ) -> Run:
        """Allocate the next id, record the run as `running` by this process, make its folder."""
        pid = os.getpid()
        values = {
            "kind": kind,
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

    def latest(self, before: int | None = None) -> Run | None:
        """The newest run (started before run `before`, when given)."""
        if not self._has_index():
            return None
        limit = before if before is not None else 2**62
        row = (
            self._connect()
            .execute("SELECT * FROM runs WHERE id < ? ORDER BY id DESC LIMIT 1", (limit,))
            .fetchone()
        )
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
        if not self._has_index():
            return []
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

    def remove(self, run_id: int, force: bool = False) -> None:
        """Delete a run's folder and records. Refused while later runs depend on it or while it
        is still running, unless `force`."""
        run = self.get(run_id)
        if run is None:
            raise RunError(f"there is no run {run_id} in {self.root} (see `tunesmith runs`)")
        if not force:
            if run.status == "running":
                raise RunError(
                    f"run {run_id} is still running; stop it first, or pass --force to remove it"
                )
            dependents = self.used_by(run_id)
            if dependents:
                names = ", ".join(f"runs/{i}" for i in dependents)
                raise RunError(
                    f"run {run_id} is used by {names}; remove those first, "
                    "or pass --force to remove it anyway"
                )
        with self._transaction() as tx:
            tx.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            tx.execute("DELETE FROM outputs WHERE run_id = ?", (run_id,))
            tx.execute("DELETE FROM uses WHERE run_id = ?", (run_id,))
        remove_tree(self.run_dir(run_id))

    def resolve(self, ref: str, allow_unfinished: bool = False) -> Path:
        """The path a run reference (`runs/N`, `runs/N/path`, `runs/last`) names."""
        from tunesmith.runs.references import resolve_in

        return resolve_in(self, ref, allow_unfinished=allow_unfinished).path


def remove_tree(path: Path) -> None:
    """rmtree that also removes read-only files and folders (mounted inputs are made read-only)."""

    def make_writable_and_retry(func, failed_path, _exc_info):
        parent = os.path.dirname(failed_path)
        for p in (parent, failed_path):
            try:
                os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR | stat.S_IXUSR)
            except OSError:
                pass
        func(failed_path)

    if path.exists():
        shutil.rmtree(path, onerror=make_writable_and_retry)


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


def _update_run(tx: sqlite3.Connection, run_id: int, fields: dict[str, Any]) -> None:
    """Set columns of one run (JSON columns encoded) inside the caller's transaction."""
    values = {k: to_json(v) if k in JSON_COLUMNS else v for k, v in fields.items()}
    assignments = ", ".join(f"{key} = ?" for key in values)
    tx.execute(f"UPDATE runs SET {assignments} WHERE id = ?", [*values.values(), run_id])
