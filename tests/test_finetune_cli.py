"""`tunesmith finetune` as a recorded run, and every bad input it must refuse cleanly."""

from __future__ import annotations

import csv
import errno
import json
import os
import time

import pytest

from tunesmith.cli import main
from tunesmith.runs import open_workspace
from tunesmith.train import resume_state

FAST = [
    "--batch-size",
    "4",
    "--samples",
    "1",
    "--sample-tokens",
    "6",
    "--report-samples",
    "3",
    "--no-progress",
    "--dropout",
    "0",
]


@pytest.fixture()
def jokes_csv(tmp_path):
    path = tmp_path / "jokes.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Joke"])
        for i in range(40):
            w.writerow([i, f"Joke number {i}: why did the chicken cross road {i}? To get away."])
    return path


def _status(ws, run_id):
    return open_workspace(ws).get(run_id).status


def test_finetune_run_writes_model_metrics_plot_and_report(
    workspace, tiny_model_dir, jokes_csv, capsys
):
    code = main(
        [
            "finetune",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(jokes_csv),
            "--max-steps",
            "4",
            "--sample-every",
            "2",
            "--save-every",
            "2",
            *FAST,
        ]
    )
    assert code == 0
    out = capsys.readouterr()
    assert "Quality report" in out.out and "validation perplexity" in out.out
    run = workspace / "runs" / "1"
    for name in (
        "model/config.json",
        "model/model.safetensors",
        "model/generation_config.json",
        "model/tokenizer.json",
        "model/finetune_config.json",
        "finetune_config.json",
        "loss.png",
        "report.txt",
        "samples.jsonl",
    ):
        assert (run / name).is_file(), name
    assert _status(workspace, 1) == "succeeded"
    metrics = [
        json.loads(x) for x in (run / ".tunesmith" / "metrics.jsonl").read_text().split("\n") if x
    ]
    assert metrics[0]["step"] == 0 and "val_loss" in metrics[0]
    assert any("train_loss" in m for m in metrics)
    stored = open_workspace(workspace).get(1)
    assert stored.main_output == "model"
    # The final weights are on disk once, under two names, both sealed with the run.
    last = resume_state.list_checkpoints(run)[-1] / "model.safetensors"
    assert os.path.samefile(run / "model" / "model.safetensors", last)
    capsys.readouterr()
    assert main(["runs", "verify", "1"]) == 0, capsys.readouterr()
    # runs/1 now names the model: generate-style loading works through the reference.
    import tunesmith

    tunesmith.load("runs/1", device="cpu")


def test_resume_continues_an_interrupted_run(workspace, tiny_model_dir, jokes_csv, monkeypatch):
    from tunesmith.train import loop

    real = loop._step

    def dies_at_step_3(t, indices, params, step):
        if step == 3:
            raise KeyboardInterrupt
        return real(t, indices, params, step)

    monkeypatch.setattr(loop, "_step", dies_at_step_3)
    args = [
        "finetune",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(jokes_csv),
        "--max-steps",
        "5",
        "--save-every",
        "2",
        *FAST,
    ]
    assert main(args) == 130
    assert _status(workspace, 1) == "interrupted"
    monkeypatch.setattr(loop, "_step", real)
    # Settings that cannot change the weights may change (the report is made after training).
    assert main(["finetune", "--resume", "runs/1", "--no-progress", "--report-samples", "2"]) == 0
    assert _status(workspace, 2) == "succeeded"
    log = (workspace / "runs" / "2" / ".tunesmith" / "log.txt").read_text()
    assert "at step 2" in log
    # Settings that would change the result are refused.
    assert main(["finetune", "--resume", "runs/1", "--lr", "0.5"]) == 2
    assert _status(workspace, 3) == "failed"


def test_empty_data_fails_the_run_with_a_clear_message(workspace, tiny_model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("ID,Joke\n")
    code = main(["finetune", "--model", str(tiny_model_dir), "--data", str(empty), *FAST])
    assert code != 0
    err = capsys.readouterr().err
    assert "error:" in err and ("no " in err or "empty" in err)
    assert _status(workspace, 1) == "failed"


def test_block_size_beyond_the_context_is_refused(workspace, tiny_model_dir, jokes_csv, capsys):
    code = main(
        [
            "finetune",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(jokes_csv),
            "--block-size",
            "4096",
            *FAST,
        ]
    )
    assert code == 2
    assert "larger than the model's context of 128" in capsys.readouterr().err
    assert _status(workspace, 1) == "failed"


@pytest.mark.parametrize(
    "model, data, message",
    [("/no/such/model", None, "does not exist"), (None, "runs/7", "no run 7")],
    ids=["model", "data-run"],
)
def test_missing_model_or_run(workspace, tiny_model_dir, jokes_csv, capsys, model, data, message):
    code = main(
        [
            "finetune",
            "--model",
            model or str(tiny_model_dir),
            "--data",
            data or str(jokes_csv),
            *FAST,
        ]
    )
    assert code != 0
    assert message in capsys.readouterr().err
    assert _status(workspace, 1) == "failed"


def test_bad_values_are_usage_errors(workspace, capsys):
    assert main(["finetune", "--data", "x.csv", "--lr", "-1"]) == 2
    assert "--lr must be positive" in capsys.readouterr().err
    assert main(["finetune", "--data", "x.csv", "--lora-targets", "wte"]) == 2
    assert main(["finetune", "--resume", "runs/9"]) != 0


def test_a_full_disk_fails_the_run_and_keeps_earlier_checkpoints(
    workspace, tiny_model_dir, jokes_csv, monkeypatch, capsys
):
    real = resume_state.save_file
    calls = {"n": 0}

    def fills_up(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] >= 2:
            with open(path, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(resume_state, "save_file", fills_up)
    code = main(
        [
            "finetune",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(jokes_csv),
            "--max-steps",
            "6",
            "--save-every",
            "2",
            *FAST,
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "disk is full" in err and "step-0000002" in err
    assert _status(workspace, 1) == "failed"
    run = workspace / "runs" / "1"
    assert [p.name for p in resume_state.list_checkpoints(run)] == ["step-0000002"]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(resume_state, "save_file", real)
    assert main(["finetune", "--resume", "runs/1", "--no-progress"]) == 0


def test_a_full_disk_under_torch_save_is_one_line_and_keeps_earlier_checkpoints(
    workspace, tiny_model_dir, jokes_csv, monkeypatch, capsys
):
    # torch.save reports a short write as a RuntimeError from its zip writer, not an OSError.
    real = resume_state.torch.save
    calls = {"n": 0}

    def fills_up(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 3:  # step 2 writes optimizer.pt and rng.pt; step 4 fails
            with open(path, "wb") as f:
                f.write(b"PK partial")
            raise RuntimeError(
                "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing "
                "file data/2: file write failed; unexpected pos 6720 vs 6612"
            )
        return real(obj, path, *args, **kwargs)

    monkeypatch.setattr(resume_state.torch, "save", fills_up)
    args = ["--model", str(tiny_model_dir), "--data", str(jokes_csv), "--max-steps", "6"]
    assert main(["finetune", *args, "--save-every", "2", *FAST]) == 1
    err = capsys.readouterr().err
    assert err.count("tunesmith: error:") == 1 and err.endswith("--resume\n")
    assert "Traceback" not in err and "RuntimeError" not in err
    assert "cannot write step-0000004: the disk is full" in err
    assert "earlier checkpoints are intact (step-0000002)" in err and "--resume" in err
    assert _status(workspace, 1) == "failed"
    run = workspace / "runs" / "1"
    assert [p.name for p in resume_state.list_checkpoints(run)] == ["step-0000002"]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(resume_state.torch, "save", real)
    assert main(["finetune", "--resume", "runs/1", "--no-progress"]) == 0


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_a_full_disk_while_saving_the_model_says_the_checkpoints_are_intact(
    workspace, tiny_model_dir, jokes_csv, monkeypatch, capsys, kind
):
    from tunesmith import checkpoint

    def no_space(*args, **kwargs):
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                           'message: "No space left on device" })')  # fmt: skip

    def no_space_for_a_copy(source, dest):  # no link across filesystems, and a full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    if kind == "lora":  # the merged weights are written anew
        monkeypatch.setattr(checkpoint, "save_file", no_space)
    else:  # the last checkpoint's weights file goes into the model folder
        monkeypatch.setattr(checkpoint, "link_or_copy", no_space_for_a_copy)
    args = ["--model", str(tiny_model_dir), "--data", str(jokes_csv), "--max-steps", "2"]
    args += ["--lora"] if kind == "lora" else []
    assert main(["finetune", *args, *FAST]) == 1
    err = capsys.readouterr().err
    assert err.count("tunesmith: error:") == 1 and "Traceback" not in err
    assert "cannot write the fine-tuned model" in err and "the disk is full" in err
    assert "are intact, resume with --resume" in err


@pytest.mark.slow
def test_off_a_terminal_the_progress_bar_leaves_the_log_small(
    workspace, tiny_model_dir, jokes_csv, capsys
):
    quiet = [a for a in FAST if a != "--no-progress"]  # the bar on, its stderr not a terminal
    args = ["--model", str(tiny_model_dir), "--data", str(jokes_csv), "--max-steps", "88"]
    cheap = ["--block-size", "8", "--eval-every", "88", "--keep-checkpoints", "1"]
    started = time.monotonic()
    assert main(["finetune", *args, *quiet, *cheap]) == 0
    seconds = time.monotonic() - started
    log = (workspace / "runs" / "1" / ".tunesmith" / "log.txt").read_text()
    assert "\r" not in log  # no redrawn frames
    bar_lines = [line for line in log.splitlines() if " step (" in line]
    assert len(bar_lines) <= 1 + seconds / 30  # a plain line at most every 30 s
    assert len(log.encode()) < 2000 + 120 * len(bar_lines), log  # a frame a step was 12 KB
