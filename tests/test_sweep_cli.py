"""`tunesmith sweep` end to end on a tiny model: each trial a real `tunesmith finetune`
process and run, stopped by ASHA, run two at a time, resumed after a kill."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.runs import open_workspace, resolve_reference
from tunesmith.train.resume_state import list_checkpoints

pytestmark = pytest.mark.slow

FAST = [
    "--batch-size", "4", "--samples", "1", "--sample-tokens", "4", "--report-samples", "1",
    "--no-progress", "--dropout", "0",
]  # fmt: skip


@pytest.fixture()
def jokes_csv(tmp_path):
    path = tmp_path / "jokes.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Joke"])
        for i in range(40):
            w.writerow([i, f"Joke number {i}: why did the chicken cross road {i}? To get away."])
    return path


@pytest.fixture()
def trial_env(workspace, monkeypatch):
    """Trials are child processes: they find this tree's tunesmith and never the hub."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return workspace


def _finetune(model, data, *extra):
    return ["--", "finetune", "--model", str(model), "--data", str(data), *FAST, *extra]


def _results(ws, run_id):
    with open(ws / "runs" / str(run_id) / "results.csv") as f:
        return list(csv.DictReader(f))


def test_a_grid_finds_the_learning_rate_that_learns(trial_env, tiny_model_dir, jokes_csv, capsys):
    code = main(
        ["sweep", "--lr", "1e-9,3e-3", "--warmup", "0,2", "--parallel", "2", "--no-asha"]
        + _finetune(tiny_model_dir, jokes_csv, "--max-steps", "12", "--eval-every", "4")
    )
    out = capsys.readouterr().out
    assert code == 0, out
    ws = open_workspace(trial_env)
    sweep = ws.get(1)
    assert sweep.kind == "sweep" and sweep.status == "succeeded"
    rows = _results(trial_env, 1)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"succeeded"}
    assert [float(r["best val_loss"]) for r in rows] == sorted(
        float(r["best val_loss"]) for r in rows
    )
    assert float(rows[0]["lr"]) == 3e-3 and float(rows[-1]["lr"]) == 1e-9
    assert "best val_loss" in out and "t0" in out  # the table is printed
    trials = [ws.get(int(r["run"].removeprefix("runs/"))) for r in rows]
    assert all(t.kind == "finetune" and t.info["parent"] == 1 for t in trials)
    # --parallel 2: two trials were running at once, each with half the cores
    first, second = sorted(trials, key=lambda t: t.started)[:2]
    assert second.started < first.ended
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert all(t.params["num_threads"] == threads for t in trials)
    # runs/1 is the best trial's model: generate uses it like any model
    best = trials[0]
    assert resolve_reference("runs/1") == ws.run_dir(best.id).resolve() / "model"
    assert sweep.metrics["best_val_loss"] == pytest.approx(float(rows[0]["best val_loss"]), 1e-3)
    code = main(["generate", "--model", "runs/1", "--length", "3", "--prompt", "Why"])
    assert code == 0
    # the lineage names the run whose files were used: the best trial
    assert ws.used(ws.latest().id) == [(best.id, f"runs/{best.id}/model")]
    for name in ("metric_vs_params.png", "val_curves.png", "results.md"):
        assert (trial_env / "runs" / "1" / name).is_file()


def test_asha_stops_a_trial_that_cannot_learn(trial_env, tiny_model_dir, jokes_csv, capsys):
    code = main(
        ["sweep", "--lr", "3e-3,1e-9", "--eta", "2"]  # --sweep-seed 0 starts t0 first
        + _finetune(tiny_model_dir, jokes_csv, "--max-steps", "80", "--eval-every", "3")
    )
    assert code == 0
    rows = {r["lr"]: r for r in _results(trial_env, 1)}
    good, bad = rows["0.003"], rows["1e-09"]
    assert good["status"] == "succeeded" and good["steps"] == "80"
    assert bad["status"] == "stopped" and int(bad["steps"]) < 80
    assert "stopped by ASHA at step 3: val_loss" in bad["note"]
    ws = open_workspace(trial_env)
    assert ws.get(int(bad["run"].removeprefix("runs/"))).status == "interrupted"
    state = json.loads((trial_env / "runs" / "1" / "sweep.json").read_text())
    assert [t["status"] for t in state["trials"]] == ["succeeded", "stopped"]


def _wait_for(predicate, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def _trials(ws_path):
    path = ws_path / "runs" / "1" / "sweep.json"
    try:
        return json.loads(path.read_text())["trials"]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def test_a_killed_sweep_resumes_keeping_finished_trials(trial_env, tiny_model_dir, jokes_csv):
    argv = ["sweep", "--max-steps", "6,60", "--no-asha"] + _finetune(
        tiny_model_dir, jokes_csv, "--lr", "3e-3", "--eval-every", "3", "--save-every", "3"
    )
    sweep = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", *argv], start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # killed once the first trial is done and the second has a checkpoint
        def second_has_checkpoint():
            trials = _trials(trial_env)
            if len(trials) < 2 or trials[0]["status"] != "succeeded" or not trials[1]["runs"]:
                return False
            return bool(list_checkpoints(trial_env / "runs" / str(trials[1]["runs"][0])))

        _wait_for(second_has_checkpoint)
        sweep.send_signal(signal.SIGTERM)
        assert sweep.wait(timeout=120) == 143
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    ws = open_workspace(trial_env)
    before = _trials(trial_env)
    assert ws.get(1).status == "interrupted"
    assert [t["status"] for t in before] == ["succeeded", "interrupted"]
    assert ws.get(before[1]["runs"][0]).status == "interrupted"

    assert main(["sweep", "--resume", "runs/1"]) == 0
    resumed = ws.latest(kind="sweep")
    after = json.loads((ws.run_dir(resumed.id) / "sweep.json").read_text())["trials"]
    assert after[0]["runs"] == before[0]["runs"]  # kept, not run again
    assert after[1]["status"] == "succeeded" and len(after[1]["runs"]) == 2
    continued = ws.get(after[1]["runs"][1])
    assert continued.params["resume"] == f"runs/{before[1]['runs'][0]}"
    assert ws.used(resumed.id) == [(1, "runs/1/sweep.json")]
    assert max(s for s, _ in after[1]["curve"]) == 60


def test_a_failing_trial_is_recorded_and_the_others_decide(trial_env, tiny_model_dir, jokes_csv):
    code = main(
        ["sweep", "--random", "2", "--lr", "1e-3:3e-3:log", "--block-size", "16,100000"]
        + ["--sweep-seed", "1"]
        + _finetune(tiny_model_dir, jokes_csv, "--max-steps", "4", "--eval-every", "2")
    )
    rows = _results(trial_env, 1)  # --sweep-seed 1 draws one of each block size
    assert code == 0
    assert [(r["block_size"], r["status"]) for r in rows] == [
        ("16", "succeeded"),  # ranked above the trial without a value
        ("100000", "failed"),
    ]
    assert "block" in rows[1]["note"] and "trials/t1.log" in rows[1]["note"]
    assert [float(r["lr"]) for r in rows] == [0.001159, 0.001323]
