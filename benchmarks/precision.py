"""bf16 autocast (what `--precision auto` picks where it trains faster) against fp32 on the GPT-2
124M shape: the same validation loss?

    python benchmarks/precision.py [--steps 60] [--batch-size 16] [--val 256]

Both fine-tune the same randomly initialised 124M-shaped GPT-2 (saved by `transformers`, GPT-2's
vocabulary) on the seed's jokes with tunesmith's real training (`tunesmith.train.finetune`), the
same batches in the same order, and report the validation loss before and after: under bf16
autocast with fp32 master weights (`--precision bf16`, where the device computes bf16 natively:
CUDA, or a CPU with AVX-512 BF16 / AMX) and in fp32. The goal (issue 14): the two final
validation losses within 1 % of each other. The wall time
of each is printed too; it moves with the machine's load, the losses do not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from whole_process import model_folder

from tunesmith.data import load_training_examples
from tunesmith.devices import cpu_has_bf16, precision_name, resolve_device, use_bf16_autocast
from tunesmith.train import FinetuneConfig, finetune

ROOT = Path(__file__).resolve().parents[1]
SEED_CSV = ROOT.parent / "shared" / "data" / "onelinefun.csv"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(SEED_CSV))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--val", type=int, default=256, help="validation jokes")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    train, val = load_training_examples(args.data)
    device = resolve_device(args.device)
    chosen = precision_name(use_bf16_autocast("auto", device))
    print(
        f"GPT-2 124M shape, random init; {args.steps} steps of {args.batch_size} jokes, "
        f"lr {args.lr}, {min(args.val, len(val))} validation jokes; device {device}, where "
        f"--precision auto is {chosen}",
        flush=True,
    )
    if not (device.type == "cuda" or cpu_has_bf16()):
        print("no native bf16 on this device: --precision auto is fp32, nothing to compare")
        return 0
    losses = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = model_folder(Path(tmp) / "gpt2-124m")
        for precision in ("bf16", "fp32"):
            config = FinetuneConfig(
                model=str(folder),
                data=args.data,
                precision=precision,
                batch_size=args.batch_size,
                lr=args.lr,
                max_steps=args.steps,
                report_samples=0,
                progress=False,
                device=args.device,
            )
            start = time.perf_counter()
            result = finetune(
                config,
                output_dir=Path(tmp) / precision,
                train_texts=train,
                val_texts=val[: args.val],
                log=lambda line: None,
            )
            took = time.perf_counter() - start
            losses[precision] = result.val_loss_after
            print(
                f"  {precision:5s} ({result.metrics['precision']:13s}) val loss "
                f"{result.val_loss_before:.4f} -> {result.val_loss_after:.4f}  ({took:.0f} s)",
                flush=True,
            )
    difference = abs(losses["bf16"] - losses["fp32"]) / losses["fp32"]
    print(f"bf16 vs fp32 final validation loss: {difference:.2%} apart (goal: within 1%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
