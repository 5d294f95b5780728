"""`tunesmith sweep --cluster`: trials scheduled by Ray Tune on a real local Ray cluster (one
logical GPU), each trial a remote fine-tune recorded here as a local run; and the one-line
errors of the cluster options, which need no cluster."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.runs import Workspace, open_workspace, resolve_reference
from tunesmith.train.resume_state import list_checkpoints

FAST = [
    "--batch-size", "4", "--samples", "0", "--report-samples", "1", "--sample-tokens", "4",
    "--no-progress", "--dropout", "0", "--eval-every", "2",
]  # fmt: skip


@pytest.fixture()
def jokes(tmp_path):
    path = tmp_path / "jokes.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Joke"])
        for i in range(40):
            w.writerow([f"Joke number {i}: why did the chicken cross road {i}? To get away."])
    return path


def _finetune(model, data, *extra):
    return ["--", "finetune", "--model", str(model), "--data", str(data), *FAST, *extra]


def _rows(ws, run_id):
    with open(ws / "runs" / str(run_id) / "results.csv") as f:
        return {r["trial"]: r for r in csv.DictReader(f)}


@pytest.mark.cluster
def test_a_cluster_sweep_runs_its_trials_through_ray_tune(
    ray_cluster, workspace, tiny_model_dir, jokes, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # Tune's default storage is ~/ray_results
    argv = ["sweep", "--lr", "3e-3,1e-9", "--eta", "2", "--cluster", ray_cluster.address]
    argv += ["--gpus-per-trial", "1"]  # the cluster's one GPU: one trial at a time
    code = main(argv + _finetune(tiny_model_dir, jokes, "--max-steps", "30"))
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    ws = open_workspace()
    sweep = ws.get(1)
    assert sweep.kind == "sweep" and sweep.status == "succeeded"
    rows = _rows(workspace, 1)
    good, bad = rows["t0"], rows["t1"]  # --sweep-seed 0 starts t0 first, as locally
    assert good["status"] == "succeeded" and good["steps"] == "30"
    # Tune's ASHA (eta 2, first rung at the first evaluation) cut the learning rate that
    # cannot learn at its first evaluation
    assert bad["status"] == "stopped"
    assert "stopped by ASHA (Ray Tune) at step 2: val_loss" in bad["note"]
    assert float(good["best val_loss"]) < float(bad["best val_loss"])

    trials = {t: ws.get(int(rows[t]["run"].removeprefix("runs/"))) for t in ("t0", "t1")}
    for name, run in trials.items():
        assert run.kind == "finetune" and run.name == f"sweep1-{name}"
        assert run.info["parent"] == 1
        assert run.info["cluster"]["device"] == "cuda:0"  # the trial's logical GPU
        log = (ws.records_dir(run.id) / "log.txt").read_text()
        assert "step 2: val loss" in log  # the job's output came back into the run's log
        metrics = (ws.records_dir(run.id) / "metrics.jsonl").read_text().splitlines()
        assert 2 in [json.loads(line)["step"] for line in metrics]
    assert trials["t0"].status == "succeeded"
    assert (ws.run_dir(trials["t0"].id) / "model" / "model.safetensors").is_file()
    assert trials["t1"].status in ("interrupted", "succeeded")  # SIGTERM may come after its end
    assert trials["t0"].ended <= trials["t1"].started  # one GPU: one trial at a time

    # runs/1 is the best trial's model, here
    assert resolve_reference("runs/1") == ws.run_dir(trials["t0"].id).resolve() / "model"
    assert main(["generate", "--model", "runs/1", "--length", "3", "--prompt", "Why"]) == 0
    assert capsys.readouterr().out.strip()
    assert not (tmp_path / "home" / "ray_results").exists()


@pytest.mark.cluster
def test_cpu_trials_run_side_by_side_as_the_cluster_holds_them(
    ray_cluster, workspace, tiny_model_dir, jokes, capsys
):
    argv = ["sweep", "--lr", "3e-3,1e-3", "--no-asha", "--cluster", ray_cluster.address]
    argv += ["--cpus-per-trial", "2"]  # two trials fill the cluster's 4 CPUs
    code = main(argv + _finetune(tiny_model_dir, jokes, "--max-steps", "16"))
    assert code == 0, capsys.readouterr().err[-3000:]
    rows = _rows(workspace, 1)
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    ws = open_workspace()
    first, second = sorted(
        (ws.get(int(r["run"].removeprefix("runs/"))) for r in rows.values()),
        key=lambda run: run.started,
    )
    assert second.started < first.ended  # both at once, one driver following both
    for run in (first, second):
        assert run.info["cluster"]["device"] == "cpu"  # no GPU asked for, none seen
        assert run.info["cluster"]["resources"] == {"CPU": 2.0}
        assert run.params["num_threads"] == 2  # the cores the trial holds
        assert (ws.run_dir(run.id) / "model" / "model.safetensors").is_file()


@pytest.mark.cluster
def test_a_killed_cluster_sweep_stops_its_jobs_and_resumes_them(
    ray_cluster, workspace, tiny_model_dir, jokes, monkeypatch
):
    import ray
    from ray_cluster import wait_for

    src = str(Path(__file__).resolve().parents[1] / "src")  # the sweep's own process
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    where = ["--cluster", ray_cluster.address, "--gpus-per-trial", "1"]
    argv = ["sweep", "--max-steps", "100,4", "--no-asha", *where]
    argv += _finetune(tiny_model_dir, jokes, "--lr", "3e-3", "--save-every", "4")
    sweep = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", *argv], start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # The first trial's job frozen at its first checkpoint (whatever the machine's speed),
        # until that checkpoint has come back here; then the sweep is killed.
        job = wait_for(lambda: _job_of(2), what="the first trial's job")
        there = ray_cluster.cache / "jobs" / job / "workspace" / "runs" / "1"
        wait_for(lambda: list_checkpoints(there), interval=0.05, what="a checkpoint there")
        job_pid = Workspace(there.parent.parent).get(1).pid
        os.killpg(job_pid, signal.SIGSTOP)
        try:
            here = workspace / "runs" / "2"
            wait_for(lambda: list_checkpoints(here), what="the checkpoint copied here")
            live = (here / ".tunesmith" / "log.txt").read_text()
            assert "step 2: val loss" in live  # the trial's log streams here while it runs
            sweep.send_signal(signal.SIGTERM)
        finally:
            os.killpg(job_pid, signal.SIGCONT)
        _, err = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    ws = open_workspace()
    assert ws.get(1).status == "interrupted"
    before = json.loads((workspace / "runs" / "1" / "sweep.json").read_text())["trials"]
    assert [t["status"] for t in before] == ["interrupted", "pending"]
    stopped = ws.get(2)
    assert stopped.status == "interrupted" and stopped.name == "sweep1-t0"
    with pytest.raises(ValueError):  # its job is gone from the cluster
        ray.get_actor(stopped.info["cluster"]["job"], namespace="tunesmith")

    assert main(["sweep", "--resume", "runs/1", *where]) == 0
    resumed = ws.latest(kind="sweep")
    after = json.loads((ws.run_dir(resumed.id) / "sweep.json").read_text())["trials"]
    assert [t["status"] for t in after] == ["succeeded", "succeeded"]
    assert after[0]["runs"][0] == 2 and len(after[0]["runs"]) == 2
    continued = ws.get(after[0]["runs"][1])
    assert continued.params["resume"] == "runs/2"  # named as here, not as on the worker
    assert continued.info["parent"] == resumed.id
    assert max(step for step, _ in after[0]["curve"]) == 100
    assert (ws.run_dir(continued.id) / "model" / "model.safetensors").is_file()


def _job_of(run_id: int) -> str | None:
    """The name of a remote run's job, once it has started."""
    run = open_workspace().get(run_id)
    return run.info.get("cluster", {}).get("job") if run else None


@pytest.mark.cluster
def test_more_gpus_per_trial_than_the_cluster_has_fails_in_one_line(
    ray_cluster, workspace, tiny_model_dir, jokes, capsys
):
    argv = ["sweep", "--lr", "1e-3", "--cluster", ray_cluster.address, "--gpus-per-trial", "4"]
    assert main(argv + _finetune(tiny_model_dir, jokes, "--max-steps", "2")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tunesmith: error: no cluster node can run this")
    assert "1 CPU, 4 GPU" in err[-1] and "4 CPU, 1 GPU" in err[-1]
    assert open_workspace().get(1).status == "failed"  # the sweep; no trial started
    assert len(open_workspace().list_runs()) == 1


def test_per_trial_resources_need_a_cluster(workspace, monkeypatch, capsys):
    for name in ("TUNESMITH_CLUSTER", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    argv = ["sweep", "--lr", "1e-3", "--gpus-per-trial", "1", "--", "finetune", "--data", "x"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "tunesmith: error: --gpus-per-trial only apply to a cluster sweep: add --cluster ADDRESS"
    )
    assert open_workspace().list_runs() == []


def test_a_cluster_sweep_without_ray_says_how_to_install_it(workspace, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    argv = ["sweep", "--lr", "1e-3", "--cluster", "127.0.0.1:6379", "--"]
    assert main([*argv, "finetune", "--data", "x", "--eval-every", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "tunesmith: error: --cluster needs Ray, which is not installed: "
        "pip install 'tunesmith[cluster]'"
    )
    assert open_workspace().list_runs() == []


def test_a_cluster_sweeps_first_rung_comes_from_the_command():
    # Ray Tune's ASHA needs its first rung before any trial starts: --grace, else the
    # command's (smallest swept) --eval-every, else step 1 (each evaluation then counts at the
    # highest rung it has passed)
    from tunesmith.sweep import SweepConfig, check_cluster
    from tunesmith.sweep.trials import Trial

    trials = [Trial(0, {"eval_every": 6}), Trial(1, {"eval_every": 4})]
    config = SweepConfig(cluster="127.0.0.1:6379")
    assert check_cluster(config, ["finetune", "--eval-every=9"], trials) == 4
    assert check_cluster(config, ["finetune", "--eval-every", "9"], trials[:0]) == 9
    assert check_cluster(config, ["finetune", "--data", "x"], trials[:0]) == 1
    assert check_cluster(SweepConfig(cluster="x:1", grace=5), ["finetune"], trials[:0]) == 5
    assert check_cluster(SweepConfig(cluster="x:1", asha=False), ["finetune"], trials[:0]) is None


def test_a_sweep_here_does_not_import_ray():
    code = (
        "import sys; from tunesmith.cli.sweep import run_sweep; from tunesmith.sweep import sweep;"
        " from tunesmith.sweep.scheduler import LocalScheduler; print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
