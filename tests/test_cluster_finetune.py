"""`finetune --cluster`: a tiny fine-tune on a real local Ray cluster gives, to 1e-6, the weights a
local fine-tune with the same seed gives; `runs/N` then names it here like a local model."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from tunesmith.cli import main
from tunesmith.runs import open_workspace

pytestmark = pytest.mark.cluster

COMMON = [
    "--max-steps", "4", "--dropout", "0", "--samples", "0", "--report-samples", "1",
    "--sample-tokens", "4", "--no-progress", "--lr", "1e-3", "--eval-every", "2",
    "--save-every", "2", "--seed", "0",
    # fp32: bf16 autocast (auto's choice on CPUs with native bf16) rounds DDP's reductions
    # differently from one process's.
    "--precision", "fp32",
]  # fmt: skip


@pytest.fixture()
def jokes(tmp_path):
    path = tmp_path / "jokes.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Joke"])
        for i in range(24):
            w.writerow([f"Joke {i}: " + "ha " * (i % 7) + "the end."])
    return path


def assert_same_weights(a_dir, b_dir, atol=1e-6):
    a = load_file(a_dir / "model.safetensors")
    b = load_file(b_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol)


def test_finetune_on_the_cluster_equals_a_local_one(
    ray_cluster, workspace, tiny_model_dir, jokes, tmp_path, capsys
):
    args = ["finetune", "--model", str(tiny_model_dir), "--data", str(jokes), *COMMON]
    args += ["--batch-size", "4"]
    assert main([*args, "--cluster", ray_cluster.address]) == 0
    out = capsys.readouterr()
    assert "step 2: val loss" in out.out + out.err  # the job's log streamed here
    assert main([*args, "--no-run", "--output-dir", str(tmp_path / "local")]) == 0
    assert_same_weights(workspace / "runs" / "1" / "model", tmp_path / "local" / "model")

    ws = open_workspace()
    run = ws.get(1)
    assert run.status == "succeeded" and run.main_output == "model"
    assert run.params["model"] == str(tiny_model_dir)  # named as here, not as on the worker
    saved = json.loads((workspace / "runs" / "1" / "finetune_config.json").read_text())
    assert saved["model"] == str(tiny_model_dir) and saved["data"] == str(jokes)
    steps = [json.loads(line).get("step") for line in open(ws.records_dir(1) / "metrics.jsonl")]
    assert 4 in steps
    assert {o.path for o in ws.outputs(1)} >= {"model/model.safetensors", "report.txt"}

    # runs/1 names the remote fine-tune's model here, as a local one would.
    assert main(["generate", "--model", "runs/1", "--length", "5", "--seed", "0"]) == 0
    assert capsys.readouterr().out.strip()
    assert ws.used(2) == [(1, "runs/1")]


def test_nodes_2_trains_over_two_ray_train_workers_equal_to_one_process(
    ray_cluster, workspace, tiny_model_dir, jokes, tmp_path, capsys
):
    args = ["finetune", "--model", str(tiny_model_dir), "--data", str(jokes), *COMMON]
    remote = [*args, "--batch-size", "2", "--cluster", ray_cluster.address, "--nodes", "2"]
    assert main(remote) == 0, capsys.readouterr().err[-3000:]
    assert (
        main([*args, "--batch-size", "4", "--no-run", "--output-dir", str(tmp_path / "one")]) == 0
    )
    # Same global batch (2 workers x 2): the same weights, as --nproc 2 gives locally.
    assert_same_weights(workspace / "runs" / "1" / "model", tmp_path / "one" / "model", atol=1e-5)
    assert open_workspace().get(1).status == "succeeded"


def test_nodes_is_for_finetune_only(workspace, capsys):
    assert main(["run", "--cluster", "127.0.0.1:1", "--nodes", "2", "--", "true"]) == 2
    assert "use it with finetune" in capsys.readouterr().err


def test_the_fine_tune_config_is_renamed_back_by_its_name():
    from tunesmith.cluster.session import RECORDED_FILES
    from tunesmith.train.config import CONFIG_FILE

    assert RECORDED_FILES == (CONFIG_FILE,)
