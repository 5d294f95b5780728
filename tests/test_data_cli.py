"""`tunesmith data` end to end: runs, reports, failures, --no-run, data runs as sources."""

from __future__ import annotations

import json

import pytest

from tunesmith.cli import main
from tunesmith.data import load_training_examples
from tunesmith.runs import open_workspace

OUTPUTS = {"data.txt", "train.jsonl", "val.jsonl", "stats.json", "lengths.png"}


def outputs(folder) -> set[str]:
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


def test_seed_csv_run(workspace, seed_csv, capsys, gpt2_vocab_dir):
    code = main(["data", str(seed_csv), "--column", "Joke", "--tokenizer", str(gpt2_vocab_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Read 2,950 examples from" in out and "column 'Joke'" in out
    for label, count in [("read", "2,950"), ("duplicate", "2"), ("kept", "2,948")]:
        assert any(line.split() == [label, count] for line in out.splitlines()), label
    assert "Tokens" in out and "(1,024 tokens)" in out and "Longest examples (tokens)" in out
    run_dir = workspace / "runs" / "1"
    assert outputs(run_dir) == OUTPUTS
    assert len((run_dir / "data.txt").read_text().splitlines()) == 2948
    run = open_workspace(workspace).get(1)
    assert run.status == "succeeded" and run.kind == "data"
    assert run.metrics["examples_kept"] == 2948 and run.metrics["tokens"] > 10_000
    assert run.summary.startswith("2,948 examples (2,801 train, 147 val), ")
    assert run.params["column"] == "Joke"


@pytest.mark.parametrize(
    "name, content, options, message",
    [
        ("missing.csv", None, [], "missing.csv does not exist"),
        ("pic.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00", [], "is not a text file"),
        ("bad.txt", b"ok\n\xff\xfe bad\n", [], "is not valid utf-8 at line 2"),
        ("bad.csv", b'id,text\n1,"open\n', [], "the quoted field on line 2 is never closed"),
        ("d.csv", b"ID,Joke\n1,a\n", ["--column", "Jokes"], "columns are: ID, Joke"),
        ("d.txt", b"a\nb\n", ["--min-chars", "5"], "no examples left in"),
    ],
)
def test_bad_input_fails_the_run(workspace, capsys, name, content, options, message):
    if content is not None:
        (workspace / name).write_bytes(content)
    code = main(["data", name, "--tokenizer", "none", *options])
    _, err = capsys.readouterr()
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("tunesmith: error:")]
    assert len(errors) == 1 and message in errors[0]
    run = open_workspace(workspace).get(1)
    assert run.status == "failed" and message in run.error
    assert not (workspace / "runs" / "1" / "data.txt").exists()


def test_bad_option_is_a_usage_error_without_a_run(workspace, capsys):
    assert main(["data", "x.txt", "--val-fraction", "1.5"]) == 2
    assert "--val-fraction must be" in capsys.readouterr().err
    assert open_workspace(workspace).get(1) is None


def test_no_run_writes_to_the_output_dir(workspace, tmp_path, capsys):
    (tmp_path / "d.txt").write_text("one\ntwo\n")
    out_dir = tmp_path / "out"
    code = main(
        [
            "data",
            str(tmp_path / "d.txt"),
            "--tokenizer",
            "none",
            "--no-run",
            "--output-dir",
            str(out_dir),
        ]
    )
    assert code == 0
    assert outputs(out_dir) == OUTPUTS
    assert not (workspace / "runs").exists()


def test_missing_tokenizer_warns_and_succeeds(workspace, tmp_path, capsys):
    (workspace / "d.txt").write_text("one\ntwo\n")
    code = main(["data", "d.txt", "--tokenizer", str(tmp_path / "no-model")])
    _, err = capsys.readouterr()
    assert code == 0
    warnings = [line for line in err.splitlines() if line.startswith("tunesmith: warning:")]
    assert len(warnings) == 1 and "token statistics left out" in warnings[0]
    assert open_workspace(workspace).get(1).status == "succeeded"


def test_default_gpt2_tokenizer_needs_no_network(workspace, no_network, capsys):
    (workspace / "d.txt").write_text("Hello world\n")
    assert main(["data", "d.txt", "--val-fraction", "0"]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err and "Retry" not in err
    assert "Tokens (gpt2)" in out and "(1,024 tokens)" in out  # GPT-2's context
    stats = json.loads((workspace / "runs" / "1" / "stats.json").read_text())
    assert stats["tokens"]["total"] == 2 and stats["context"] == 1024
    assert not any(no_network.iterdir())  # nothing downloaded, nothing cached


def test_a_data_run_as_source_and_for_training(workspace, seed_csv, capsys):
    assert main(["data", str(seed_csv), "--tokenizer", "none"]) == 0
    assert main(["data", "runs/1", "--tokenizer", "none", "--seed", "3"]) == 0
    ws = open_workspace(workspace)
    assert [used for used, _ in ws.used(2)] == [1]
    assert ws.get(2).metrics["examples_kept"] == 2948
    train, val = load_training_examples(workspace / "runs" / "1")
    rows = (workspace / "runs" / "1" / "train.jsonl").read_text().splitlines()
    assert train == [json.loads(r)["text"] for r in rows]
    assert len(train) + len(val) == 2948 and not set(train) & set(val)
    direct = load_training_examples(str(seed_csv))
    assert direct == (train, val)  # a SOURCE read directly is split like the data run
