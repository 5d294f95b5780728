"""recorded_run: the run handle, its log, outputs, metadata and how it ends."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from tunesmith.errors import DataError, RunError
from tunesmith.runs import Terminated, open_workspace, recorded_run, resolve_reference
from tunesmith.runs.outputs import sha256_file


def meta(workspace, run_id: int) -> dict:
    return json.loads((workspace / "runs" / str(run_id) / ".tunesmith" / "meta.json").read_text())


def test_a_run_is_numbered_logged_and_records_its_outputs(workspace, capsys):
    with recorded_run(kind="data", params={"lr": 0.1}, argv=["tunesmith", "data"]) as run:
        assert run.id == 1
        assert run.dir == workspace / "runs" / "1"
        print("hello to stdout")
        print("progress\r", end="", file=sys.stderr)
        (run.dir / "sub").mkdir()
        (run.dir / "sub" / "data.txt").write_text("abc\n")
        run.log_metrics({"loss": 2.5}, step=1)
        run.log_metrics({"loss": 1.5}, step=2)
        run.set_summary("1 file of data")

    out, err = capsys.readouterr()
    assert "hello to stdout" in out  # still printed live
    assert err.startswith("run 1\n")
    assert "run 1 succeeded in " in err

    records = workspace / "runs" / "1" / ".tunesmith"
    log = (records / "log.txt").read_bytes().decode()
    assert "run 1" in log and "hello to stdout" in log and "progress\r" in log
    assert "succeeded" in log
    lines = [json.loads(x) for x in (records / "metrics.jsonl").read_text().splitlines()]
    assert [(x["step"], x["loss"]) for x in lines] == [(1, 2.5), (2, 1.5)]

    m = meta(workspace, 1)
    assert m["status"] == "succeeded" and m["exit_code"] == 0 and m["kind"] == "data"
    assert m["command"] == ["tunesmith", "data"]
    assert m["params"] == {"lr": 0.1}
    assert m["metrics"] == {"loss": 1.5}  # the latest values when the caller sets none
    assert m["summary"] == "1 file of data"
    assert m["duration_s"] >= 0 and m["started"] and m["ended"]
    assert m["host"] and m["device"] and m["pid"] == os.getpid()
    assert set(m["versions"]) == {"tunesmith", "torch", "python"}
    data = workspace / "runs" / "1" / "sub" / "data.txt"
    assert m["outputs"] == [{"path": "sub/data.txt", "size": 4, "sha256": sha256_file(data)}]


def test_final_metrics_and_main_output_are_stored(workspace):
    with recorded_run(kind="finetune", params={}) as run:
        (run.dir / "model").mkdir()
        (run.dir / "model" / "weights.bin").write_bytes(b"\0" * 10)
        run.set_main_output("model")
        run.log_metrics({"train_loss": 3.0}, step=5)
        run.final_metrics.update(val_loss=2.0)
    m = meta(workspace, 1)
    assert m["metrics"] == {"val_loss": 2.0}
    assert m["main_output"] == "model"
    assert resolve_reference("runs/1", open_workspace()) == workspace / "runs" / "1" / "model"


def test_an_error_fails_the_run_but_keeps_what_was_saved(workspace, capsys):
    with pytest.raises(DataError, match="nothing to train on"):
        with recorded_run(kind="data", params={}) as run:
            (run.dir / "partial.txt").write_text("half")
            raise DataError("nothing to train on")
    m = meta(workspace, 1)
    assert m["status"] == "failed" and m["exit_code"] == 1
    assert m["error"] == "nothing to train on"
    assert [o["path"] for o in m["outputs"]] == ["partial.txt"]
    assert "run 1 failed" in capsys.readouterr().err
    log = (workspace / "runs" / "1" / ".tunesmith" / "log.txt").read_text()
    assert "error: nothing to train on" in log


def test_ctrl_c_marks_the_run_interrupted(workspace):
    with pytest.raises(KeyboardInterrupt):
        with recorded_run(kind="finetune", params={}):
            raise KeyboardInterrupt
    m = meta(workspace, 1)
    assert m["status"] == "interrupted" and m["exit_code"] == 130


def test_sigterm_inside_a_run_ends_it_interrupted_and_restores_the_handler(workspace):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        with recorded_run(kind="generate", params={}):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause() if hasattr(signal, "pause") else None
    assert signal.getsignal(signal.SIGTERM) == before
    m = meta(workspace, 1)
    assert m["status"] == "interrupted" and m["exit_code"] == 143


def test_a_nonzero_exit_code_set_by_the_caller_fails_the_run(workspace):
    with recorded_run(kind="run", params={}) as run:
        run.exit_code = 3
    m = meta(workspace, 1)
    assert m["status"] == "failed" and m["exit_code"] == 3


def test_stdout_and_stderr_are_restored(workspace):
    saved = sys.stdout, sys.stderr
    with recorded_run(kind="run", params={}):
        assert sys.stdout is not saved[0]
    assert (sys.stdout, sys.stderr) == saved


def test_disabled_run_records_nothing_but_everything_works(workspace, tmp_path, capsys):
    with recorded_run(kind="data", params={}) as first:
        (first.dir / "d.txt").write_text("x")
    out_dir = tmp_path / "out"
    with recorded_run(kind="generate", params={}, enabled=False, output_dir=out_dir) as run:
        assert run.id is None and run.dir == out_dir and out_dir.is_dir()
        assert run.use("runs/1/d.txt") == str(workspace / "runs" / "1" / "d.txt")
        assert run.use("gpt2") == "gpt2"
        run.log_metrics({"loss": 1.0})
        assert run.metrics_path.exists()
        run.set_summary("x")
        run.set_main_output("model")
        run.final_metrics["a"] = 1
    assert [r.id for r in open_workspace().list_runs()] == [1]
    assert open_workspace().used_by(1) == []
    assert "run " not in capsys.readouterr().err.replace("run 1", "")
    with recorded_run(kind="generate", params={}, enabled=False) as run:
        assert run.dir == workspace


def test_use_records_lineage_and_passes_other_names_through(workspace):
    with recorded_run(kind="data", params={}) as data:
        (data.dir / "train.txt").write_text("x")
    with recorded_run(kind="finetune", params={}) as run:
        assert run.use("runs/1") == str(workspace / "runs" / "1")
        assert run.use("runs/last/train.txt") == str(workspace / "runs" / "1" / "train.txt")
        for other in ("gpt2", "openai-community/gpt2", "./my/model", "https://x.org/a.txt"):
            assert run.use(other) == other
        with pytest.raises(RunError, match="no run 7"):
            run.use("runs/7")
    ws = open_workspace()
    assert ws.used(2) == [(1, "runs/1"), (1, "runs/1/train.txt")]
    assert ws.used_by(1) == [2]
    assert [u["ref"] for u in meta(workspace, 2)["used"]] == ["runs/1", "runs/1/train.txt"]


def test_workspace_option_overrides_the_environment(workspace, tmp_path):
    other = tmp_path / "elsewhere"
    with recorded_run(kind="data", params={}, workspace=other) as run:
        assert run.dir == other / "runs" / "1"
    assert not (workspace / "runs").exists()


def test_a_signal_while_the_end_is_recorded_waits_until_it_is(workspace, monkeypatch):
    from tunesmith.runs import record

    finish = record._finish

    def finish_with_a_second_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        finish(*args, **kwargs)

    monkeypatch.setattr(record, "_finish", finish_with_a_second_ctrl_c)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with recorded_run(kind="data", params={}):
            pass
    assert meta(workspace, 1)["status"] == "succeeded"  # fully recorded first
    assert signal.getsignal(signal.SIGINT) == before
