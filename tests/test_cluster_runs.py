"""`tunesmith run --cluster`: a command on a real local Ray cluster, recorded here as a local run
(log, outputs with sha256, lineage, where it ran); inputs sent once; errors in one line."""

from __future__ import annotations

import hashlib
import json
import sys
import time

import pytest

from tunesmith.cli import main
from tunesmith.runs import open_workspace

pytestmark = pytest.mark.cluster


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _meta(ws, run_id: int) -> dict:
    return json.loads((ws / "runs" / str(run_id) / ".tunesmith" / "meta.json").read_text())


def test_run_with_a_mount_and_pip_comes_back_as_a_local_run(ray_cluster, workspace, capsys):
    address = ray_cluster.address
    assert main(["run", "--", "sh", "-c", "echo 'a joke' > data.txt"]) == 0
    script = (
        "python -c 'import six; print(\"six\", six.__version__)'; "
        "cat inputs/data.txt | tr a-z A-Z > shout.txt; echo to-stderr >&2"
    )
    code = main(["run", "--cluster", address, "-m", "runs/1:inputs", "--pip", "six", "--", script])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "six 1." in out.out and "to-stderr" in out.err
    run_dir = workspace / "runs" / "2"
    assert (run_dir / "shout.txt").read_text() == "A JOKE\n"
    assert not (run_dir / "inputs").exists()  # the mount stays out of the outputs
    meta = _meta(workspace, 2)
    assert meta["status"] == "succeeded" and meta["kind"] == "run"
    assert meta["outputs"] == [
        {"path": "shout.txt", "size": 7, "sha256": _sha(run_dir / "shout.txt")}
    ]
    assert meta["used"] == [{"run": 1, "ref": "runs/1"}]
    assert meta["cluster"]["address"] == address and meta["cluster"]["node"]
    assert meta["device"] == "cpu"
    assert meta["params"]["mounts"] == ["runs/1:inputs"] and meta["params"]["pip"] == ["six"]
    log = (run_dir / ".tunesmith" / "log.txt").read_text()
    assert "six 1." in log and "to-stderr" in log and "run 2 succeeded" in log
    assert meta["cluster"]["bytes_sent"] > 0

    # The node already holds runs/1's output: the second run sends nothing.
    assert (
        main(["run", "--cluster", address, "-m", "runs/1:inputs", "--", "cat inputs/data.txt"]) == 0
    )
    assert _meta(workspace, 3)["cluster"]["bytes_sent"] == 0


def test_a_failing_command_fails_the_run_with_its_code_and_output_tail(
    ray_cluster, workspace, capsys
):
    code = main(["run", "--cluster", ray_cluster.address, "--", "echo boom >&2; exit 3"])
    assert code == 3
    run = open_workspace().get(1)
    assert run.status == "failed" and run.exit_code == 3
    assert run.error == "command exited with code 3; its output ended: boom"
    assert "run 1 failed (exit code 3)" in capsys.readouterr().err


def test_an_unreachable_cluster_fails_at_once_in_one_line(workspace):
    from ray_cluster import free_ports, tunesmith

    address = f"127.0.0.1:{free_ports(1)[0]}"
    started = time.monotonic()
    done = tunesmith("run", "--cluster", address, "--", "true")
    assert time.monotonic() - started < 10
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("tunesmith: error: cannot reach")
    assert "Traceback" not in done.stderr
    run = open_workspace().get(1)
    assert run.status == "failed" and "cannot reach" in run.error
    assert [p.name for p in (workspace / "runs" / "1").iterdir()] == [".tunesmith"]
    assert open_workspace().outputs(1) == []


def test_an_impossible_request_fails_listing_what_the_nodes_offer(ray_cluster, workspace, capsys):
    code = main(["run", "--cluster", ray_cluster.address, "--gpus", "8", "--", "true"])
    err = capsys.readouterr().err
    assert code == 1
    assert "asks for 1 CPU, 8 GPU" in err and "4 CPU, 1 GPU" in err
    assert open_workspace().get(1).status == "failed"


def test_a_gpu_request_is_placed_on_a_gpu(ray_cluster, workspace, capsys):
    assert main(["run", "--cluster", ray_cluster.address, "--gpus", "1", "--", "true"]) == 0
    assert _meta(workspace, 1)["cluster"]["device"] == "cuda:0"  # Ray's logical GPU 0


def test_without_ray_cluster_says_how_to_install_it(workspace, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    assert main(["run", "--cluster", "127.0.0.1:6379", "--", "true"]) == 2
    assert capsys.readouterr().err.strip() == (
        "tunesmith: error: --cluster needs Ray, which is not installed: "
        "pip install 'tunesmith[cluster]'"
    )
    assert open_workspace().list_runs() == []


def test_resources_without_a_cluster_are_refused(workspace, monkeypatch, capsys):
    for name in ("TUNESMITH_CLUSTER", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert main(["run", "--gpus", "1", "--", "true"]) == 2
    assert "add --cluster" in capsys.readouterr().err
