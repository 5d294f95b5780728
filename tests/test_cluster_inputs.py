"""What a remote run takes from here (no cluster needed): run references and local paths found
in its command line, files named by sha256, worker names mapped back, the cluster options."""

from __future__ import annotations

import hashlib

import pytest

from tunesmith.cluster.config import ClusterConfig
from tunesmith.cluster.inputs import collect, strip_local_flags
from tunesmith.cluster.names import map_value
from tunesmith.cluster.store import BlobStore
from tunesmith.errors import RunError, UsageError
from tunesmith.runs import open_workspace, recorded_run


def test_cluster_options_are_dropped_up_to_the_command():
    argv = ["run", "--cluster", "h:1", "--gpus=2", "--detach", "--workspace", "w", "-m", "runs/1"]
    argv += ["--", "echo", "--cluster", "x"]
    assert strip_local_flags(argv) == ["run", "-m", "runs/1", "--", "echo", "--cluster", "x"]


def test_runs_and_local_paths_become_inputs(workspace, tmp_path):
    with recorded_run(kind="data", argv=["tunesmith", "data"]) as run:
        (run.dir / "data.txt").write_text("a joke\n")
        run.set_main_output("data.txt")
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"\0" * 10)
    argv = ["finetune", "--data", "runs/last", f"--model={model}", "--lr", "1e-3", "-m", "runs/1:x"]
    found = collect(open_workspace(), argv)
    assert found.argv == [
        "finetune", "--data", "runs/{run:0}", "--model={path:0}", "--lr", "1e-3",
        "-m", "runs/{run:0}:x",
    ]  # fmt: skip
    assert [r["id"] for r in found.runs] == [1] and found.runs[0]["main_output"] == "data.txt"
    sha = hashlib.sha256(b"a joke\n").hexdigest()
    assert found.runs[0]["files"][0]["sha256"] == sha
    assert found.paths[0]["local"] == str(model) and found.paths[0]["files"][0]["path"] == "w.bin"
    assert found.uses == [(1, "runs/1"), (1, "runs/1")]
    assert found.command([7], ["/w/inputs/0/model"])[1:4] == [
        "--data", "runs/7", "--model=/w/inputs/0/model",
    ]  # fmt: skip


def test_a_failed_run_is_an_input_only_to_resume(workspace):
    with pytest.raises(RuntimeError), recorded_run(kind="finetune", argv=["tunesmith"]):
        raise RuntimeError("killed")
    assert (
        collect(open_workspace(), ["finetune", "--resume", "runs/1"]).runs[0]["status"] == "failed"
    )
    with pytest.raises(RunError, match="failed"):
        collect(open_workspace(), ["finetune", "--model", "runs/1"])


def test_worker_names_map_back_exactly():
    names = {"runs/1": "runs/5", "/cache/jobs/j/inputs/0/tiny": "/home/me/tiny"}
    config = {"model": "runs/1/model", "data": "runs/10", "base": "/cache/jobs/j/inputs/0/tiny"}
    assert map_value(config, names) == {
        "model": "runs/5/model",
        "data": "runs/10",  # not runs/1 followed by 0
        "base": "/home/me/tiny",
    }


def test_blobs_are_verified_before_they_count(tmp_path):
    store = BlobStore(tmp_path)
    data = b"x" * 100
    sha = hashlib.sha256(data).hexdigest()
    assert store.missing([sha]) == [sha]
    store.put(sha, data[:60], 0, last=False)
    store.put(sha, data[60:], 60, last=True)
    assert store.missing([sha]) == [] and store.path(sha).read_bytes() == data
    other = hashlib.sha256(b"y").hexdigest()
    with pytest.raises(ValueError, match="corrupted"):
        store.put(other, b"not y", 0, last=True)
    assert store.missing([other]) == [other]


def test_cluster_address_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("TUNESMITH_CLUSTER", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert ClusterConfig().address == "10.0.0.1:6379"
    monkeypatch.setenv("TUNESMITH_CLUSTER", "head:6379")
    assert ClusterConfig().address == "head:6379"
    assert ClusterConfig(cluster="local").address is None
    with pytest.raises(UsageError):
        ClusterConfig(memory=0)
    assert ClusterConfig(gpus=1, memory=2).resources() == {"CPU": 1, "GPU": 1, "memory": 2e9}
