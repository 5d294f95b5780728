"""The GPU check, one script in under 10 minutes: the `gpu`-marked tests, then fine-tuning and
generation on CUDA beside `transformers` on the same device.

    python benchmarks/gpu.py [--steps 10] [--batch 8] [--peak-tflops 989] [--skip-tests]

Fine-tuning: the GPT-2 124M shape (random weights) on 8 x 1,024-token blocks of the seed's jokes,
bf16 autocast: tunesmith eager and --compile (fused AdamW, its default), LoRA, and a plain
transformers loop (bf16 autocast, default and fused AdamW). Each prints target tokens/s, MFU
against the device's dense bf16 peak (the table below, else --peak-tflops) and peak memory.
Generation: benchmarks/generate.py's comparison at batch 1 and 8 in bfloat16.
Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling benchmark scripts

# Dense bf16 tensor-core peaks (TFLOPS, no sparsity), from the vendors' data sheets.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
}


def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    for key, value in BF16_PEAK_TFLOPS.items():  # most specific first
        if key in name:
            return value
    return None


def flops_per_token(params: int, n_layer: int, n_embd: int, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), as nanoGPT's estimate_mfu (PaLM's
    appendix B): 6 per parameter plus attention's 12 * layers * width * sequence."""
    return 6 * params + 12 * n_layer * n_embd * seq_len


def run_gpu_tests() -> int:
    print("== gpu-marked tests", flush=True)
    root = HERE.parent
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:randomly", "tests"],
        cwd=root,
    )
    print(f"gpu tests: exit code {result.returncode}", flush=True)
    return result.returncode


def time_setup(setup, batches, steps: int) -> tuple[float, float]:
    """Median tokens/s over `steps` steps after two warm-up steps (compilation, allocator),
    and the peak memory of the timed steps in GiB."""
    for batch in batches[:2]:
        setup.step(batch)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    rates = []
    for i in range(steps):
        batch = batches[2 + i % (len(batches) - 2)]
        start = time.perf_counter()
        setup.step(batch)
        torch.cuda.synchronize()
        rates.append(batch.num_targets / (time.perf_counter() - start))
    return statistics.median(rates), torch.cuda.max_memory_allocated() / 2**30


def finetune_benchmark(args, peak: float | None) -> None:
    import finetune as bench

    from tunesmith.model import GPT2, GPT2Config
    from tunesmith.train.batching import BatchPlan, pack_blocks, tokenize_examples

    device = torch.device("cuda")
    tok = bench.load_tokenizer(None)
    seqs, _ = tokenize_examples(tok, bench.load_jokes(Path(args.data)), tok.eos_id, 1024)
    plan = BatchPlan(pack_blocks(seqs, 1024), args.batch, 0, bucket=False, pad_id=tok.eos_id)
    batches = [plan.collate(ix) for ix in plan.epoch(0)[: args.steps + 2]]
    config = GPT2Config()
    params = sum(p.numel() for p in GPT2(config).parameters())
    per_token = flops_per_token(params, config.n_layer, config.n_embd, 1024)
    builders = [
        lambda: bench.hf_setup(device, bf16=True),
        lambda: bench.hf_setup(device, bf16=True, fused=True),
        lambda: bench.tunesmith_setup(device, lora=False, dropout=None),
        lambda: bench.tunesmith_setup(device, lora=False, dropout=None, compile_=True),
        lambda: bench.tunesmith_setup(device, lora=True, dropout=None),
        lambda: bench.tunesmith_setup(device, lora=True, dropout=None, compile_=True),
    ]
    print(
        f"\n== fine-tune: GPT-2 124M shape, {args.batch} x 1,024-token blocks, bf16 autocast, "
        f"median of {args.steps} steps"
    )
    print(f"{'setup':58s} {'tokens/s':>10s} {'vs hf':>6s} {'MFU':>6s} {'peak mem':>9s}")
    reference = None
    for build in builders:
        setup = build()
        rate, memory = time_setup(setup, batches, args.steps)
        reference = reference or rate
        # LoRA skips the frozen weights' gradients: MFU counts the full model's FLOPs anyway,
        # so its figure reads as "the speed of a full step's work".
        mfu = f"{rate * per_token / (peak * 1e12):6.1%}" if peak else "   n/a"
        print(
            f"{setup.name:58s} {rate:10,.0f} {rate / reference:5.2f}x {mfu} {memory:7.2f} GiB",
            flush=True,
        )
        del setup
        gc.collect()
        torch.cuda.empty_cache()


def generate_benchmark(args) -> None:
    import generate as bench

    print("\n== generation (benchmarks/generate.py --device cuda)", flush=True)
    sys.argv = ["generate.py", "--device", "cuda", "--repeats", str(args.repeats)]
    bench.main()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed fine-tuning steps")
    parser.add_argument("--batch", type=int, default=8, help="1,024-token blocks per step")
    parser.add_argument("--repeats", type=int, default=3, help="generation repeats")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/data/onelinefun.csv"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here; run it on a machine with a GPU")
        return 0
    name = torch.cuda.get_device_name()
    peak = peak_tflops(name, args.peak_tflops)
    print(
        f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}; bf16 peak "
        + (f"{peak:g} TFLOPS" if peak else "unknown (pass --peak-tflops for MFU)")
    )
    failed = 0 if args.skip_tests else run_gpu_tests()
    finetune_benchmark(args, peak)
    generate_benchmark(args)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
