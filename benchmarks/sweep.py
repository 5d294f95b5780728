"""A 9-trial grid on the seed's jokes, tiny shape: ASHA against the full grid.

    python benchmarks/sweep.py [--jokes 2000] [--max-steps 60] [--eval-every 10] [--parallel 1]

Both sweeps train the same grid (--lr 1e-4,1e-3,1e-2 x --batch-size 8,16,32) of `--from-scratch
tiny` models (GPT-2's vocabulary and init, 2 layers x 128) on the first --jokes jokes of
onelinefun.csv, in a temporary workspace, through the real `tunesmith sweep` command: one with
ASHA (eta 3, rungs from the first evaluation), one with --no-asha. It prints the compute each
spent (training steps summed over trials, and wall time, which a shared machine distorts) and
the best validation loss each found.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED_CSV = ROOT.parent / "shared" / "data" / "onelinefun.csv"
GRID = ["--lr", "1e-4,1e-3,1e-2", "--batch-size", "8,16,32"]


def write_jokes(path: Path, count: int) -> None:
    with open(SEED_CSV, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[: count + 1])  # the header, then the jokes


def run_sweep(workspace: Path, jokes: Path, args: argparse.Namespace, asha: bool) -> dict:
    command = [sys.executable, "-m", "tunesmith", "sweep", *GRID, "--parallel", str(args.parallel)]
    command += ["--workspace", str(workspace)] + ([] if asha else ["--no-asha"])
    command += ["--", "finetune", "--from-scratch", "tiny", "--data", str(jokes)]
    command += ["--max-steps", str(args.max_steps), "--eval-every", str(args.eval_every)]
    command += ["--no-progress", "--report-samples", "1", "--samples", "1", "--sample-tokens", "8"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"sweep failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    folder = workspace / "runs" / "1"  # the sweep; its trials are runs 2 and on
    trials = json.loads((folder / "sweep.json").read_text())["trials"]
    best = min(
        (v for t in trials if t["status"] == "succeeded" for s, v in t["curve"] if s > 0),
        default=float("nan"),
    )
    return {
        "steps": sum(t["trained"] for t in trials),  # steps trained, stopped trials' too
        "stopped": sum(t["status"] == "stopped" for t in trials),
        "best": best,
        "seconds": seconds,
        "table": done.stdout,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jokes", type=int, default=2000)
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--asha-only", action="store_true", help="skip the full grid")
    args = parser.parse_args()
    if not SEED_CSV.is_file():
        sys.exit(f"the seed's jokes are not at {SEED_CSV}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="tunesmith-sweep-bench-") as tmp:
        jokes = Path(tmp) / "jokes.csv"
        write_jokes(jokes, args.jokes)
        results = {}
        sweeps = (("ASHA", True),) + (() if args.asha_only else (("full grid", False),))
        for name, asha in sweeps:
            results[name] = run_sweep(Path(tmp) / name.replace(" ", "-"), jokes, args, asha)
            print(results[name]["table"])
    print(f"{'':10} {'steps':>6} {'stopped':>8} {'best val_loss':>14} {'wall':>8}")
    for name, r in results.items():
        print(
            f"{name:10} {r['steps']:>6} {r['stopped']:>8} {r['best']:>14.4f} {r['seconds']:>7.0f}s"
        )
    if "full grid" in results:
        share = results["ASHA"]["steps"] / max(1, results["full grid"]["steps"])
        print(f"ASHA spent {share:.0%} of the full grid's steps")


if __name__ == "__main__":
    main()
