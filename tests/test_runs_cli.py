"""`tunesmith runs`, `runs show`, `runs rm` and `logs`: what they print."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time

import pytest

from tunesmith.cli import main
from tunesmith.runs import open_workspace, recorded_run
from tunesmith.runs.display import format_duration, format_size


@pytest.fixture()
def history(workspace, capsys):
    """1: data (succeeded, a summary), 2: run that used 1 (failed), 3: finetune using 1."""
    with recorded_run(kind="data", params={"source": "jokes.csv"}, argv=["tunesmith", "data"]) as r:
        (r.dir / "data.txt").write_text("a joke\n" * 100)
        r.set_main_output("data.txt")
        r.set_summary("100 lines")
    assert main(["run", "-m", "runs/1", "--", "sh", "-c", "echo failing; exit 2"]) == 2
    with recorded_run(kind="finetune", params={"lr": 3e-4, "steps": 10}) as r:
        r.use("runs/1")
        (r.dir / "model").mkdir()
        (r.dir / "model" / "w.bin").write_bytes(b"\1" * 2048)
        r.set_main_output("model")
        r.log_metrics({"val_loss": 2.5}, step=10)
    capsys.readouterr()
    return workspace


def test_runs_lists_a_table(history, capsys):
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "KIND", "STATUS", "STARTED", "DURATION", "SUMMARY"]
    assert len(lines) == 4
    one, two, three = (line.split() for line in lines[1:])
    assert one[:3] == ["1", "data", "succeeded"] and lines[1].endswith("100 lines")
    assert two[:3] == ["2", "run", "failed"] and lines[2].endswith("command exited with code 2")
    assert three[:3] == ["3", "finetune", "succeeded"] and lines[3].endswith("1 file, 2.0 kB")


def test_runs_in_an_empty_workspace(workspace, capsys):
    assert main(["runs"]) == 0
    assert "no runs yet" in capsys.readouterr().err
    assert not (workspace / "runs").exists()


def test_runs_show_prints_params_lineage_metrics_and_outputs(history, capsys):
    assert main(["runs", "show", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("run 1  data  succeeded\n")
    assert "command:   tunesmith data" in out
    assert "source: jokes.csv" in out
    assert "used:      none" in out
    assert "used by:   runs/2, runs/3" in out
    assert "main output: runs/1 → data.txt" in out
    assert "outputs:   1 file, 700 B" in out and "data.txt" in out and "sha256:" in out

    assert main(["runs", "show", "runs/last"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("run 3  finetune  succeeded")
    assert "used:      runs/1" in out and "used by:   none" in out
    assert "lr: 0.0003" in out and "val_loss: 2.5" in out

    assert main(["runs", "show", "2"]) == 0
    assert "error:     command exited with code 2" in capsys.readouterr().out


def test_runs_show_json(history, capsys):
    assert main(["runs", "show", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["id"] == 3 and data["status"] == "succeeded" and data["kind"] == "finetune"
    assert data["params"] == {"lr": 3e-4, "steps": 10}
    assert data["used"] == [{"run": 1, "ref": "runs/1"}] and data["used_by"] == []
    assert data["metrics"] == {"val_loss": 2.5}
    assert data["outputs"][0]["path"] == "model/w.bin" and data["outputs"][0]["size"] == 2048
    for key in ("started", "ended", "duration_s", "host", "device", "versions", "exit_code"):
        assert key in data


def test_unknown_runs_are_one_line_errors(history, capsys):
    for argv in (["runs", "show", "9"], ["logs", "9"], ["runs", "rm", "9"], ["runs", "show", "x"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("tunesmith: error: ") and err.count("\n") == 1


def test_logs_prints_what_the_run_printed(history, capsys):
    assert main(["logs", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "run 2",
        "mounted runs/1 at data.txt (read-only)",
        "failing",
        "error: command exited with code 2",
        out.splitlines()[-1],
    ]
    assert out.splitlines()[-1].startswith("run 2 failed (exit code 2)")


def test_logs_follow_tails_until_the_run_ends(workspace, capsys):
    ready, finish = threading.Event(), threading.Event()

    def a_run():
        with recorded_run(kind="run", params={}):
            print("first line")
            ready.set()
            finish.wait(10)
            print("last line")

    # Follow from another process while this one runs and then finishes.
    thread = threading.Thread(target=a_run)
    thread.start()
    ready.wait(10)
    follower = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", "logs", "1", "--follow"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout.readline() == "run 1\n"
    assert follower.stdout.readline() == "first line\n"
    time.sleep(0.3)
    assert follower.poll() is None  # still following
    finish.set()
    thread.join(10)
    rest, _ = follower.communicate(timeout=20)
    assert follower.returncode == 0
    assert rest.startswith("last line\n") and "run 1 succeeded" in rest
    capsys.readouterr()


def test_runs_rm_refuses_while_used_and_removes_with_force(history, capsys):
    assert main(["runs", "rm", "1"]) == 1
    err = capsys.readouterr().err
    assert "run 1 is used by runs/2, runs/3" in err and "--force" in err
    assert (history / "runs" / "1").is_dir()

    assert main(["runs", "rm", "3"]) == 0
    assert capsys.readouterr().out == "removed run 3\n"
    assert not (history / "runs" / "3").exists()
    assert main(["runs", "rm", "1", "--force"]) == 0
    ws = open_workspace()
    assert [r.id for r in ws.list_runs()] == [2]
    assert not (history / "runs" / "1").exists()


def test_workspace_option_on_runs_commands(history, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TUNESMITH_HOME")
    monkeypatch.chdir(tmp_path)
    assert main(["runs", "--workspace", str(history)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert main(["runs", "show", "1", "--workspace", str(history)]) == 0
    assert main(["runs", "--workspace", str(history), "show", "1"]) == 0
    assert main(["logs", "1", "--workspace", str(history)]) == 0


@pytest.mark.parametrize(
    "seconds, text", [(0.42, "0.4s"), (12.4, "12s"), (83, "1m 23s"), (7325, "2h 02m")]
)
def test_durations_read_like_a_person_would_say_them(seconds, text):
    assert format_duration(seconds) == text


def test_sizes():
    assert [format_size(n) for n in (5, 2048, 3_500_000)] == ["5 B", "2.0 kB", "3.5 MB"]


@pytest.mark.parametrize("text", ["²", "３", "99999999999999999999999", "runs/３"])
def test_runs_rm_takes_only_ascii_run_numbers(history, capsys, text):
    # `３` (full-width) used to remove run 3; `²` and a huge number raised tracebacks.
    assert main(["runs", "rm", text, "--force"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tunesmith: error: ") and err.count("\n") == 1
    assert [r.id for r in open_workspace().list_runs()] == [1, 2, 3]


def test_a_hand_deleted_run_folder_lists_as_missing(history, capsys):
    shutil.rmtree(history / "runs" / "3")
    assert main(["runs"]) == 0
    line = capsys.readouterr().out.splitlines()[3]
    assert line.split()[:3] == ["3", "finetune", "missing"]
    assert line.endswith("its folder was removed; `tunesmith runs rm 3` forgets it")
    assert main(["runs", "show", "3"]) == 0
    assert capsys.readouterr().out.startswith("run 3  finetune  missing")
    assert main(["runs", "verify", "3"]) == 1
    assert capsys.readouterr().out == "run 3: its folder is missing\n"
    assert main(["runs", "rm", "3"]) == 0
    assert [r.id for r in open_workspace().list_runs()] == [1, 2]


def test_runs_rm_force_stops_a_running_run_cleanly_first(workspace, capsys):
    runner = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", "run", "--", "sh", "-c", "echo going; sleep 60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert runner.stdout.readline() == "going\n"
    assert main(["runs", "rm", "1"]) == 1
    assert "still running; stop it first, or pass --force" in capsys.readouterr().err
    assert main(["runs", "rm", "1", "--force"]) == 0
    captured = capsys.readouterr()
    assert f"stopping run 1 (SIGTERM to process {runner.pid})" in captured.err
    assert captured.out == "removed run 1\n"
    _, err = runner.communicate(timeout=30)
    assert runner.returncode == 143
    assert "Traceback" not in err and err.rstrip().endswith("tunesmith: terminated")
    assert open_workspace().list_runs() == [] and not (workspace / "runs" / "1").exists()


def test_names_and_last_kind_reference_runs_without_numbers(workspace, capsys):
    assert main(["run", "--name", "jokes", "--", "sh", "-c", "echo one > d.txt"]) == 0
    assert main(["run", "--", "sh", "-c", "echo other > d.txt"]) == 0
    assert main(["run", "-m", "runs/jokes/d.txt", "--", "cat", "d.txt"]) == 0
    assert capsys.readouterr().out == "one\n"
    # The newest run of a name wins: a retry under the same name replaces what it names.
    assert main(["run", "--name", "jokes", "--", "sh", "-c", "echo two > d.txt"]) == 0
    assert main(["run", "-m", "runs/jokes/d.txt:x.txt", "--", "cat", "x.txt"]) == 0
    assert capsys.readouterr().out == "two\n"
    with recorded_run(kind="data", params={}) as run:
        (run.dir / "d.txt").write_text("data\n")
    assert main(["run", "-m", "runs/last-data/d.txt", "--", "cat", "d.txt"]) == 0
    assert capsys.readouterr().out == "data\n"

    assert main(["runs", "show", "jokes"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("run 4  run  succeeded") and "name:      jokes (runs/jokes)" in out
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "KIND"] and lines[1].split()[:2] == ["1", "jokes"]
    assert main(["run", "-m", "runs/nosuch", "--", "true"]) == 1
    assert "there is no run named 'nosuch'" in capsys.readouterr().err
    assert main(["run", "-m", "runs/last-finetune", "--", "true"]) == 1
    assert "there is no finetune run" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["12", "a/b", "last", "last-data", ".x", "ü", "x" * 65])
def test_bad_run_names_are_refused_before_the_run_starts(workspace, capsys, name):
    assert main(["run", "--name", name, "--", "true"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tunesmith: error: --name {name!r}: a run name starts with a letter")
    assert not (workspace / "runs").exists()
