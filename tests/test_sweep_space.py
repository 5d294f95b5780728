"""The parts of a sweep that need no training: ranges, ASHA's cuts, the table, and a run whose
main output is another run's (what `runs/SWEEP` resolves to)."""

from __future__ import annotations

import csv

import pytest

from tunesmith.cli import main
from tunesmith.errors import RunError, UsageError
from tunesmith.runs import recorded_run, resolve_reference
from tunesmith.sweep.asha import Asha
from tunesmith.sweep.results import best_trial, write_results
from tunesmith.sweep.space import Option, SearchSpace
from tunesmith.sweep.trials import Trial

OPTIONS = {
    "lr": Option("lr", float),
    "lora_rank": Option("lora_rank", int),
    "schedule": Option("schedule", str, ("linear", "cosine")),
}


def test_a_grid_is_every_combination():
    space = SearchSpace.parse({"lr": "1e-4,3e-4", "lora_rank": "4,8,16"}, OPTIONS)
    trials = space.trials(None)
    assert len(trials) == 6
    assert trials[0] == {"lr": 1e-4, "lora_rank": 4}
    assert {(t["lr"], t["lora_rank"]) for t in trials} == {
        (lr, r) for lr in (1e-4, 3e-4) for r in (4, 8, 16)
    }


def test_random_draws_stay_in_their_ranges_and_repeat_with_the_seed():
    space = SearchSpace.parse({"lr": "1e-5:1e-3:log", "lora_rank": "2:64"}, OPTIONS)
    trials = space.trials(50, seed=3)
    assert len(trials) == 50
    assert all(1e-5 <= t["lr"] <= 1e-3 for t in trials)
    assert all(isinstance(t["lora_rank"], int) and 2 <= t["lora_rank"] <= 64 for t in trials)
    # log-uniform: about half the draws below the geometric middle (1e-4)
    assert 15 < sum(t["lr"] < 1e-4 for t in trials) < 35
    assert space.trials(50, seed=3) == trials
    assert space.trials(50, seed=4) != trials


@pytest.mark.parametrize(
    "ranges, message",
    [
        ({"lr": "fast"}, "--lr 'fast': 'fast' is not a number"),
        ({"lora_rank": "4,8.5"}, "'8.5' is not a whole number"),
        ({"schedule": "linear,steep"}, "'steep' is not one of linear, cosine"),
        ({"lr": "1e-3:1e-5"}, "low end must be below its high end"),
        ({"lr": "0:1e-3:log"}, "a log range needs positive ends"),
        ({"lr": "1e-5:1e-3:ln"}, "a:b (uniform) or a:b:log"),
        ({"warp": "1"}, "--warp: not a finetune option"),
        ({}, "give at least one range"),
    ],
)
def test_bad_ranges_say_what_is_wrong(ranges, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchSpace.parse(ranges, OPTIONS)


def test_a_range_in_a_grid_needs_random():
    space = SearchSpace.parse({"lr": "1e-5:1e-3"}, OPTIONS)
    with pytest.raises(UsageError, match="needs --random N"):
        space.trials(None)


def test_asha_cuts_what_is_worse_than_the_best_third_at_a_rung():
    asha = Asha(grace=2, eta=3, mode="min")
    assert asha.rung_steps(20) == [2, 6, 18]
    assert asha.report("a", 2, 5.0) is None  # the first at a rung always goes on
    assert asha.report("b", 2, 4.0) is None  # better than the bar
    cut = asha.report("c", 2, 9.0)
    assert cut is not None and cut.step == 2 and cut.value == 9.0
    assert cut.cutoff == pytest.approx(4.0 + (5.0 - 4.0) * (2 / 3))  # numpy's percentile
    assert asha.report("a", 4, 100.0) is None  # not a rung
    assert asha.report("b", 2, 99.0) is None  # a rung is reported once
    text = cut.describe("val_loss", "min")
    assert "stopped by ASHA at step 2: val_loss 9.0000 > rung cut" in text


def test_asha_in_max_mode_cuts_the_low_values():
    asha = Asha(grace=1, eta=2, mode="max")
    assert asha.report("a", 1, 0.9) is None
    assert asha.report("b", 1, 0.1) is not None


def test_results_are_sorted_by_the_metric_and_saved(tmp_path):
    trials = [
        Trial(0, {"lr": 1e-9}, "succeeded", [2], [(0, 10.0), (4, 9.9)]),
        Trial(1, {"lr": 1e-3}, "stopped", [3], [(0, 10.0), (4, 8.0)], "stopped by ASHA", 6),
        Trial(2, {"lr": 3e-3}, "succeeded", [4], [(0, 10.0), (4, 8.5), (8, 7.0)]),
        Trial(3, {"lr": 1e-2}, "failed", [], []),
    ]
    table = write_results(tmp_path, trials, "val_loss", "min")
    assert [line.split()[0] for line in table.splitlines()] == ["trial", "t2", "t1", "t0", "t3"]
    rows = list(csv.reader(open(tmp_path / "results.csv")))
    assert rows[0] == ["trial", "lr", "best val_loss", "steps", "status", "run", "note"]
    assert rows[1] == ["t2", "0.003", "7.0000", "8", "succeeded", "runs/4", ""]
    assert rows[2][-1] == "stopped by ASHA" and rows[2][3] == "6"  # steps trained
    assert "| t2 | 0.003 | 7.0000 |" in (tmp_path / "results.md").read_text()
    for plot in ("metric_vs_params.png", "val_curves.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"
    # a stopped trial has no model: the best is the best that succeeded
    assert best_trial(trials, "min").index == 2


def test_a_main_output_can_name_another_runs_output(workspace):
    with recorded_run("finetune") as trial:
        (trial.dir / "model").mkdir()
        (trial.dir / "model" / "config.json").write_text("{}")
        trial.set_main_output("model")
    with recorded_run("sweep") as sweep:
        with pytest.raises(RunError, match="another run by its number"):
            sweep.set_main_output(f"runs/{sweep.id}/x")
        sweep.set_main_output(f"runs/{trial.id}/model")
    assert resolve_reference(f"runs/{sweep.id}") == (trial.dir / "model").resolve()
    # still checked against what the trial sealed
    (trial.dir / "model" / "config.json").write_text('{"changed": 1}')
    with pytest.raises(RunError, match="changed"):
        resolve_reference(f"runs/{sweep.id}")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr", "1e-4", "--", "train"], "give the trials' command after --"),
        (["--lr", "x1", "--", "finetune"], "--lr 'x1': 'x1' is not a number"),
        (["--lr", "1e-4", "--", "finetune", "--lr", "1"], "--lr is set by the sweep"),
        (["--lr", "1e-4", "--", "finetune", "--name", "a"], "--name is set by the sweep"),
        (["--lr", "1e-5:1e-3", "--", "finetune"], "needs --random N"),
        (["--parallel", "0", "--lr", "1e-4", "--", "finetune"], "--parallel 0"),
        (["--warp", "3", "--", "finetune"], "unrecognized arguments: --warp"),
        (["--resume", "runs/1", "--lr", "1e-4"], "continues with that sweep's ranges"),
        (["--resume", "runs/1"], "there is no run 1"),
        (["--resume", "sweep.json"], "give the sweep as runs/N or runs/NAME"),
    ],
)
def test_bad_sweeps_are_one_line_errors(workspace, capsys, argv, message):
    try:
        code = main(["sweep", *argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code in (1, 2)  # 1: a run reference that names nothing
    assert message in err and len(err.splitlines()) == 1
