"""The index heals: a missing, empty or damaged `runs/index.db` is rebuilt from the runs'
meta.json with one warning and nothing lost; a read-only workspace can still be read."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.runs import open_workspace, recorded_run

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture()
def history(workspace, capsys):
    """1: a named data run; 2: a run that used it and failed; 3: a finetune using run 1."""
    with recorded_run(kind="data", params={"seed": 3}, name="jokes") as run:
        (run.dir / "data.txt").write_text("a joke\n")
        run.set_main_output("data.txt")
        run.set_summary("1 example")
    assert main(["run", "-m", "runs/jokes", "--", "sh", "-c", "exit 2"]) == 2
    with recorded_run(kind="finetune", params={"lr": 0.001}) as run:
        run.use("runs/1")
        (run.dir / "model").mkdir()
        (run.dir / "model" / "w.bin").write_bytes(b"\0" * 10)
        run.set_main_output("model")
        run.log_metrics({"val_loss": 2.5})
    open_workspace().close()
    capsys.readouterr()
    return workspace


def _snapshot(ws) -> list[tuple]:
    return [
        (r.id, r.name, r.kind, r.status, r.params, r.main_output, r.summary, r.metrics,
         r.exit_code, r.error, ws.used(r.id), ws.outputs(r.id), r.info.get("versions"))
        for r in ws.list_runs()
    ]  # fmt: skip


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda db: db.unlink(), "missing"),
        (lambda db: db.write_bytes(b""), "empty"),
        (lambda db: db.write_bytes(b"this is not a database" * 100), "damaged"),
    ],
)
def test_a_broken_index_is_rebuilt_from_meta_json(history, capsys, damage, problem):
    ws = open_workspace()
    before = _snapshot(ws)
    # Closed before the damage: a connection closed later (by the garbage collector, at any
    # time) would checkpoint its WAL back into the damaged file.
    ws.close()
    gc.collect()  # and so are the unreferenced ones of earlier commands in this process
    db = history / "runs" / "index.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    damage(db)

    assert main(["runs"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and f"index {db} was {problem}" in warnings[0]
    assert "rebuilt it from the records of 3 run folders" in warnings[0]
    assert len(captured.out.splitlines()) == 4  # header + 3 runs
    ws = open_workspace()
    assert _snapshot(ws) == before  # nothing lost: params, lineage, outputs, names
    assert ws.used_by(1) == [2, 3]
    if problem == "damaged":
        assert len(list((history / "runs").glob("index.db.damaged-*"))) == 1

    assert main(["runs"]) == 0  # healed once: no second warning
    assert "warning" not in capsys.readouterr().err
    with recorded_run(kind="data", params={}) as run:
        assert run.id == 4  # numbering continues after the rebuilt runs
        assert run.use("runs/jokes") == str(history / "runs" / "1" / "data.txt")


def test_runs_reindex_rebuilds_on_request(history, capsys):
    before = _snapshot(open_workspace())
    assert main(["runs", "reindex"]) == 0
    assert capsys.readouterr().out.startswith("rebuilt ")
    assert _snapshot(open_workspace()) == before


def test_a_folder_without_its_record_is_kept_visible(history, capsys):
    (history / "runs" / "2" / ".tunesmith" / "meta.json").unlink()
    (history / "runs" / "index.db").unlink()
    ws = open_workspace()
    run = ws.get(2)
    assert (run.kind, run.status) == ("unknown", "failed") and "meta.json" in run.error
    assert [r.id for r in ws.list_runs()] == [1, 2, 3]


def _read_only_command(workspace: Path, args: list[str]) -> subprocess.CompletedProcess:
    """`tunesmith ARGS` with the workspace mounted read-only: through a private mount
    namespace (root writes through permission bits), else by taking the write bits away."""
    env = {**os.environ, "PYTHONPATH": SRC, "TUNESMITH_HOME": str(workspace)}
    cmd = [sys.executable, "-m", "tunesmith", *args]
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(workspace)], check=True)
        try:
            return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(workspace)], check=True)
    if not shutil.which("unshare"):
        pytest.skip("running as root without unshare: cannot make a read-only workspace")
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    wrapped = ["unshare", "-rm", "sh", "-c", script, str(workspace), *cmd]
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user namespaces are not available here")
    return subprocess.run(wrapped, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("index", ["intact", "missing"])
def test_a_read_only_workspace_can_be_read(history, index):
    if index == "missing":
        (history / "runs" / "index.db").unlink()
    listing = _read_only_command(history, ["runs"])
    assert listing.returncode == 0, listing.stderr
    assert len(listing.stdout.splitlines()) == 4
    assert "jokes" in listing.stdout
    if index == "missing":
        assert listing.stderr.count("warning") == 1 and "read-only" in listing.stderr
    else:
        assert listing.stderr == ""
    show = _read_only_command(history, ["runs", "show", "runs/jokes"])
    assert show.returncode == 0 and show.stdout.startswith("run 1  data  succeeded")
    logs = _read_only_command(history, ["logs", "3"])
    assert logs.returncode == 0 and "run 3 succeeded" in logs.stdout


def test_recording_in_a_read_only_workspace_is_one_line(history):
    result = _read_only_command(history, ["run", "--", "true"])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"tunesmith: error: workspace {history} is read-only: its runs can be listed and "
        "shown, but nothing can be recorded or changed there; use --workspace DIR (a folder "
        "you can write), or --no-run"
    ]


def test_generate_no_run_works_in_a_read_only_workspace(history, offline_hub):
    result = _read_only_command(
        history, ["generate", "--model", "gpt2", "--no-run", "--length", "3", "--seed", "1"]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_an_older_index_in_a_read_only_workspace_is_read_upgraded_in_memory(workspace):
    from test_runs_migrations import _version_1_index

    _version_1_index(workspace)
    listing = _read_only_command(workspace, ["runs"])
    assert listing.returncode == 0 and listing.stderr == ""
    assert [line.split()[:3] for line in listing.stdout.splitlines()[1:]] == [
        ["1", "data", "succeeded"],
        ["2", "run", "succeeded"],
    ]
    named = _read_only_command(workspace, ["runs", "show", "runs/nosuch"])
    assert named.returncode == 1 and "there is no run named 'nosuch'" in named.stderr
    assert "Traceback" not in named.stderr
