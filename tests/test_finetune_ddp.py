"""DistributedDataParallel over gloo: 2 processes train exactly what 1 process does with the
same global batch, and only rank 0 writes files."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from tunesmith.train.distributed import strip_launch_options

COMMON = [
    "--max-steps",
    "3",
    "--dropout",
    "0",
    "--samples",
    "0",
    "--report-samples",
    "1",
    "--sample-tokens",
    "4",
    "--no-progress",
    "--no-run",
    "--lr",
    "1e-3",
    "--eval-every",
    "2",
    # The split must not change the update: compared in fp32, where that is exact to 1e-5
    # (bf16 autocast, auto's choice on CPUs with native bf16, rounds differently per split).
    "--precision",
    "fp32",
]


def _finetune(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "tunesmith", "finetune", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_two_processes_equal_one_with_the_same_global_batch(tiny_model_dir, tmp_path):
    data = tmp_path / "jokes.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Joke"])
        for i in range(24):
            w.writerow([f"Joke {i}: " + "ha " * (i % 7) + "the end."])
    base = ["--model", str(tiny_model_dir), "--data", str(data), *COMMON]
    one = _finetune([*base, "--batch-size", "4", "--output-dir", str(tmp_path / "one")], tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _finetune(
        [*base, "--batch-size", "2", "--nproc", "2", "--output-dir", str(tmp_path / "two")],
        tmp_path,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_file(tmp_path / "one" / "model" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    # One report and one log of each evaluation: rank 1 wrote nothing.
    assert two.stdout.count("Quality report") == 1
    assert two.stdout.count("step 2: val loss") == 1


def test_launch_options_are_not_passed_on():
    argv = ["finetune", "--nproc", "2", "--nnodes=1", "--data", "x", "--master-port", "1234"]
    assert strip_launch_options(argv) == ["finetune", "--data", "x"]
