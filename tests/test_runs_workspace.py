"""The workspace index: concurrent runs, stale runs, removal."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunesmith.errors import RunError
from tunesmith.runs import open_workspace, recorded_run, resolve_reference
from tunesmith.runs.removal import remove_run
from tunesmith.runs.schema import STALE_NOTE

START_RUN = """
import sys, time, pathlib
from tunesmith.runs import recorded_run
go = pathlib.Path(sys.argv[1])
while not go.exists():
    time.sleep(0.005)
with recorded_run(kind="run", params={"i": int(sys.argv[2])}, argv=["worker", sys.argv[2]]) as run:
    (run.dir / "i.txt").write_text(sys.argv[2])
    print(run.id)
"""


def test_twenty_processes_starting_runs_at_once_get_distinct_ids(workspace):
    go = workspace.parent / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", START_RUN, str(go), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(20)
    ]
    time.sleep(0.3)
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 20, [err for _, err in results]
    ids = sorted(int(out) for out, _ in results)
    assert ids == list(range(1, 21))

    ws = open_workspace()
    runs = ws.list_runs()
    assert [r.id for r in runs] == ids
    assert all(r.status == "succeeded" for r in runs)
    for r in runs:  # each run's folder holds what its own process wrote
        assert (ws.run_dir(r.id) / "i.txt").read_text() == str(r.params["i"])
        assert [o.path for o in ws.outputs(r.id)] == ["i.txt"]
    assert sorted(r.params["i"] for r in runs) == list(range(20))
    with sqlite3.connect(ws.db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


HANG_IN_RUN = """
import time
from tunesmith.runs import recorded_run
with recorded_run(kind="finetune", params={}) as run:
    (run.dir / "checkpoint.txt").write_text("step 10")
    print("ready", flush=True)
    time.sleep(120)
"""


def test_a_killed_run_is_found_and_marked_failed(workspace):
    proc = subprocess.Popen([sys.executable, "-c", HANG_IN_RUN], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    assert open_workspace().get(1).status == "running"  # alive: left alone
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    ws = open_workspace()
    run = ws.get(1)
    assert run.status == "failed" and run.error == STALE_NOTE
    assert run.duration is not None and run.ended is not None
    assert [o.path for o in ws.outputs(1)] == ["checkpoint.txt"]  # what it saved stays usable
    meta = json.loads((ws.records_dir(1) / "meta.json").read_text())
    assert meta["status"] == "failed"
    assert resolve_reference("runs/1/checkpoint.txt", ws, allow_unfinished=True).is_file()


def test_a_reused_pid_does_not_keep_a_dead_run_running(workspace):
    with recorded_run(kind="data", params={}):
        pass
    ws = open_workspace()
    # Our own pid, alive, but with another start time: a different process than the run's.
    ws.update(1, status="running", pid=os.getpid(), proc_start="1")
    assert ws.reap_stale() == [1]
    assert ws.get(1).status == "failed"


def test_runs_of_other_hosts_are_left_alone(workspace):
    with recorded_run(kind="data", params={}):
        pass
    ws = open_workspace()
    ws.update(1, status="running", host="another-machine", pid=1)
    assert ws.reap_stale() == []
    assert ws.get(1).status == "running"


def test_remove_refuses_while_a_later_run_depends_on_it(workspace):
    with recorded_run(kind="data", params={}) as run:
        (run.dir / "d.txt").write_text("x")
    with recorded_run(kind="finetune", params={}) as run:
        run.use("runs/1/d.txt")
    ws = open_workspace()
    with pytest.raises(RunError, match="run 1 is used by runs/2.*--force"):
        remove_run(ws, 1)
    assert ws.run_dir(1).exists()
    remove_run(ws, 1, force=True)
    assert ws.get(1) is None and not ws.run_dir(1).exists()
    assert ws.used(2) == [(1, "runs/1/d.txt")]  # lineage keeps naming what it used


def test_remove_refuses_a_running_run(workspace):
    with recorded_run(kind="data", params={}):
        with pytest.raises(RunError, match="still running"):
            remove_run(open_workspace(), 1)


def test_removed_ids_are_never_reused(workspace):
    for _ in range(2):
        with recorded_run(kind="data", params={}):
            pass
    remove_run(open_workspace(), 2)
    with recorded_run(kind="data", params={}) as run:
        assert run.id == 3


def test_a_rebuilt_index_does_not_reuse_existing_folders(workspace):
    with recorded_run(kind="data", params={}):
        pass
    for name in ("index.db", "index.db-wal", "index.db-shm"):
        Path(workspace, "runs", name).unlink(missing_ok=True)
    with recorded_run(kind="data", params={}) as run:
        assert run.id == 2


def test_looking_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNESMITH_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    ws = open_workspace()
    assert ws.root == tmp_path and ws.list_runs() == [] and ws.get(1) is None
    assert not (tmp_path / "runs").exists()
