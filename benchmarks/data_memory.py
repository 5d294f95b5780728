"""Peak memory of `tunesmith data` on a large generated CSV, against the file's size.

python benchmarks/data_memory.py [--mb 200] [--tokenizer gpt2|none] [--keep FILE]

Writes a CSV of unique one-line jokes (an id column and a quoted text column, some rows with
quoted commas, quotes and newlines) of about --mb megabytes, then runs `tunesmith data --no-run`
on it in a child process and reports the child's peak resident memory (ru_maxrss) as a multiple
of the file size, beside the same figure for `tunesmith --version` (the interpreter alone).
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the a chicken road crossed why did my husband wife cat dog said never again doctor "
    "told me I am laughing nobody comedian joke bar walks into priest rabbi duck"
).split()


def write_csv(path: Path, megabytes: float, seed: int = 0) -> int:
    """A CSV of about `megabytes` MB of unique rows; returns its size in bytes."""
    rng = random.Random(seed)
    target = int(megabytes * 1024 * 1024)
    written, i = 0, 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write('"ID","Joke"\n')
        while written < target:
            i += 1
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24)))
            if i % 7 == 0:
                words += ', he said "twice"\nand again'
            row = f'{i},"{words.replace(chr(34), chr(34) * 2)} #{i}"\n'
            f.write(row)
            written += len(row)
    return path.stat().st_size


def peak_rss_mb(argv: list[str]) -> tuple[float, float]:
    """(peak resident MB, seconds) of a child running `argv`."""
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(before, after) / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200.0)
    parser.add_argument("--tokenizer", default="none")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "big.csv"
        size = write_csv(csv_path, args.mb)
        cli = [sys.executable, "-m", "tunesmith"]
        base, _ = peak_rss_mb([*cli, "--version"])
        data = [*cli, "data", str(csv_path), "--no-run", "--output-dir", str(Path(tmp) / "out")]
        peak, seconds = peak_rss_mb([*data, "--tokenizer", args.tokenizer])
    mb = size / 1024 / 1024
    print(f"file {mb:.0f} MB; interpreter alone {base:.0f} MB")
    print(f"tunesmith data: peak {peak:.0f} MB = {peak / mb:.2f}x the file, {seconds:.0f} s")


if __name__ == "__main__":
    main()
