"""Run references (`runs/N`, `runs/N/path`, `runs/last`) and their errors."""

from __future__ import annotations

import pytest

from tunesmith.errors import RunError
from tunesmith.runs import (
    is_run_reference,
    open_workspace,
    parse_reference,
    recorded_run,
    resolve_reference,
)
from tunesmith.runs.context import FolderRun
from tunesmith.runs.references import pick_run


@pytest.mark.parametrize(
    "text, run, sub",
    [
        ("runs/3", 3, ""),
        ("runs/3/", 3, ""),
        ("./runs/12/model", 12, "model"),
        ("runs/3/sub/path.txt", 3, "sub/path.txt"),
        ("runs/last", None, ""),
        ("runs/last/data.txt", None, "data.txt"),
        ("runs/last-data", None, ""),
        ("runs/jokes/data.txt", None, "data.txt"),
    ],
)
def test_references_parse(text, run, sub):
    ref = parse_reference(text)
    assert (ref.run, ref.subpath) == (run, sub)
    assert str(ref) == text.removeprefix("./").rstrip("/")
    assert is_run_reference(text)


@pytest.mark.parametrize(
    "text",
    [
        "gpt2",
        "openai-community/gpt2",
        "runs",
        "myruns/3",
        "/abs/runs/3",
        "r/3",
        "runs/３",
        "runs/²",
    ],
)
def test_other_names_are_not_references(text):
    assert not is_run_reference(text)
    assert parse_reference(text) is None


def test_a_reference_cannot_leave_its_run_folder(workspace):
    assert is_run_reference("runs/1/../2")
    with pytest.raises(RunError, match="outside its run folder"):
        resolve_reference("runs/1/../2")


@pytest.fixture()
def three_runs(workspace):
    """Run 1 succeeded (data.txt), run 2 failed, run 3 a finetune with main output `model`."""
    with recorded_run(kind="data", params={}) as run:
        (run.dir / "data.txt").write_text("hello")
    with pytest.raises(ValueError):
        with recorded_run(kind="data", params={}) as run:
            (run.dir / "half.txt").write_text("x")
            raise ValueError("boom")
    with recorded_run(kind="finetune", params={}) as run:
        (run.dir / "model").mkdir()
        (run.dir / "model" / "config.json").write_text("{}")
        run.set_main_output("model")
    return workspace


def test_references_resolve_to_paths(three_runs):
    ws = open_workspace()
    runs = three_runs / "runs"
    assert resolve_reference("runs/1", ws) == runs / "1"
    assert resolve_reference("runs/1/data.txt", ws) == runs / "1" / "data.txt"
    assert resolve_reference("runs/3", ws) == runs / "3" / "model"
    assert resolve_reference("runs/3/model/config.json", ws) == runs / "3" / "model" / "config.json"
    assert resolve_reference("runs/last", ws) == runs / "3" / "model"
    assert resolve_reference("runs/1/data.txt") == runs / "1" / "data.txt"
    assert resolve_reference("gpt2") == __import__("pathlib").Path("gpt2")


def test_resolving_needs_no_current_directory(three_runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # TUNESMITH_HOME still names the workspace
    assert resolve_reference("runs/1/data.txt") == three_runs / "runs" / "1" / "data.txt"
    monkeypatch.delenv("TUNESMITH_HOME")
    assert resolve_reference("runs/1", workspace=three_runs) == three_runs / "runs" / "1"


@pytest.mark.parametrize(
    "ref, message",
    [
        ("runs/9", "runs/9: there is no run 9 in"),
        ("runs/2", "runs/2: run 2 failed \\(boom\\); only a succeeded run"),
        ("runs/2/half.txt", "run 2 failed"),
        ("runs/1/nope.txt", "runs/1/nope.txt: run 1 has no 'nope.txt' \\(it has: data.txt\\)"),
    ],
)
def test_bad_references_are_clear_errors(three_runs, ref, message):
    with pytest.raises(RunError, match=message):
        resolve_reference(ref, open_workspace())


def test_unfinished_runs_resolve_when_allowed(three_runs):
    ws = open_workspace()
    assert resolve_reference("runs/2/half.txt", ws, allow_unfinished=True).name == "half.txt"
    assert resolve_reference("runs/2", allow_unfinished=True) == three_runs / "runs" / "2"


def test_runs_last_in_an_empty_workspace(workspace):
    with pytest.raises(RunError, match="no runs in"):
        resolve_reference("runs/last")


def test_runs_last_inside_a_run_means_the_run_before_it(three_runs):
    with recorded_run(kind="generate", params={}) as run:
        assert run.use("runs/last") == str(three_runs / "runs" / "3" / "model")
    assert open_workspace().used(4) == [(3, "runs/3")]  # recorded as the run it named


def test_running_run_cannot_be_used_unless_allowed(workspace):
    with recorded_run(kind="finetune", params={}) as first:
        with pytest.raises(RunError, match="run 1 is still running"):
            resolve_reference("runs/1")
        assert resolve_reference("runs/1", allow_unfinished=True) == first.dir
        with recorded_run(kind="finetune", params={}) as second:
            assert second.use("runs/1", allow_unfinished=True) == str(first.dir)


@pytest.mark.parametrize("text, run_id", [("1", 1), ("runs/2", 2), ("./runs/3/", 3), ("last", 3)])
def test_a_run_is_picked_by_number_or_reference(three_runs, text, run_id):
    assert pick_run(open_workspace(), text) == run_id


@pytest.mark.parametrize(
    "text, message",
    [
        ("runs/1/data.txt", "is not a run; give its number"),
        ("three", "there is no run named 'three' in"),
        ("7", "there is no run 7 in"),
        ("３", r"is not a run; give its number \(ASCII digits"),
        ("²", "is not a run; give its number"),
        ("99999999999999999999999", "there is no run 99999999999999999999999"),
    ],
)
def test_picking_a_run_that_is_not_one_is_a_clear_error(three_runs, text, message):
    with pytest.raises(RunError, match=message):
        pick_run(open_workspace(), text)


def test_last_in_an_empty_workspace_is_a_clear_error(workspace):
    with pytest.raises(RunError, match="there are no runs in"):
        pick_run(open_workspace(), "runs/last")


def test_a_plain_folder_run_resolves_references_without_recording_them(three_runs, tmp_path):
    run = FolderRun(tmp_path / "out")
    assert run.use("runs/3") == str(three_runs / "runs" / "3" / "model")
    assert run.use("gpt2") == "gpt2"
    with pytest.raises(RunError, match="run 2 failed"):
        run.use("runs/2")
    assert run.use("runs/2", allow_unfinished=True) == str(three_runs / "runs" / "2")
    assert open_workspace().used_by(3) == []  # no lineage outside a recorded run
    run.log_metrics({"loss": 0.5}, step=2)
    run.log_metrics({"val_loss": 0.25})
    lines = (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    assert lines == ['{"step": 2, "loss": 0.5}', '{"val_loss": 0.25}']
