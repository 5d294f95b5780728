"""Generation speed: tunesmith against `transformers`' generate, measured in one run.

Same model (the GPT-2 124M shape, random weights), same prompt, 70 new tokens, same sampling
(temperature 1, top-p 0.9, no early stop), at batch 1 and batch 8. Prints tokens/s for both
and the ratio; on CPU also tunesmith with weight-only int8 (`--quantize int8`).

With --whole-process it then times whole commands on a local 124M model folder, as a user
runs them: `python -c "import torch"`, `tunesmith generate --length 1 --no-run` (the start),
and 200 new tokens at batch 1 from `tunesmith generate` (default and --quantize int8) against a
`transformers` script that loads the same folder and generates as many.

    python benchmarks/generate.py [--device cpu|cuda] [--repeats 3] [--batches 1,8] [--threads N]
        [--whole-process] [--process-tokens 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPT_TOKENS = [464, 1266, 1110, 314, 2497, 257, 1310, 284]  # "The best way I know a man to"
NEW_TOKENS = 70


def build_models(device: torch.device, dtype: torch.dtype):
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    from tunesmith.checkpoint import load_weights
    from tunesmith.model import GPT2, GPT2Config

    torch.manual_seed(0)
    reference = GPT2LMHeadModel(HFConfig()).eval()
    ours = GPT2(GPT2Config.from_hf(reference.config.to_dict())).eval()
    load_weights(ours, reference.state_dict())
    return reference.to(device, dtype), ours.to(device, dtype)


def time_transformers(model, batch: int, device, new_tokens: int = NEW_TOKENS) -> float:
    x = torch.tensor([PROMPT_TOKENS] * batch, device=device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            do_sample=True,
            top_p=0.9,
            top_k=0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=50256,
        )
    _sync(device)
    assert out.shape == (batch, len(PROMPT_TOKENS) + new_tokens)
    return batch * new_tokens / (time.perf_counter() - start)


def time_tunesmith(generator, batch: int, device, new_tokens: int = NEW_TOKENS) -> float:
    from tunesmith.generate import GenerationConfig, GenerationRequest

    config = GenerationConfig(
        length=new_tokens, temperature=1.0, top_p=0.9, ignore_eos=True, seed=0
    )
    requests = [GenerationRequest(PROMPT_TOKENS, config, seed) for seed in range(batch)]
    start = time.perf_counter()
    produced = 0
    for _, _, sample in generator.stream_batch(requests):
        if sample is not None:
            produced += len(sample.token_ids)
    _sync(device)
    assert produced == batch * new_tokens
    return produced / (time.perf_counter() - start)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    parser.add_argument("--whole-process", action="store_true", help="also time whole commands")
    parser.add_argument("--process-tokens", type=int, default=200)
    parser.add_argument("--skip-steps", action="store_true", help="only the whole commands")
    args = parser.parse_args()
    if args.skip_steps:
        whole_process(args.repeats, args.process_tokens)
        return

    from tunesmith.devices import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)  # for both libraries alike
    # Each library in its default format for the device (transformers: float32 on CPU; on GPU
    # both bfloat16), plus tunesmith in float32 for a like-for-like row where they differ.
    default = resolve_dtype("auto", device)
    reference_dtype = torch.float32 if device.type == "cpu" else default
    reference, ours = build_models(device, reference_dtype)
    variants = {str(default).removeprefix("torch."): _generator(ours.to(default))}
    if default != reference_dtype:
        _, ours32 = build_models(device, reference_dtype)
        variants[str(reference_dtype).removeprefix("torch.")] = _generator(ours32)
    if device.type == "cpu":
        from tunesmith.quantize import quantize_model

        _, ours_q = build_models(device, torch.float32)  # scales from the float32 weights
        variants["int8"] = _generator(quantize_model(ours_q, "int8").to(device, default))

    print(
        f"device {device}, threads {torch.get_num_threads()}, torch {torch.__version__}; "
        f"GPT-2 124M shape, {len(PROMPT_TOKENS)}-token prompt, {args.new_tokens} new tokens, "
        f"top-p 0.9; median of {args.repeats}; transformers in "
        f"{str(reference_dtype).removeprefix('torch.')}"
    )
    names = list(variants)
    header = f"{'batch':>5}  {'transformers':>12}" + "".join(
        f"  {'tunesmith ' + n:>18}  {'ratio':>6}" for n in names
    )
    print(header + "   (tokens/s)")
    for batch in (int(b) for b in args.batches.split(",")):
        n = args.new_tokens
        time_transformers(reference, batch, device, n)  # warm-up
        for generator in variants.values():
            time_tunesmith(generator, batch, device, n)
        rates: dict[str, list[float]] = {"transformers": [], **{n: [] for n in names}}
        for _ in range(args.repeats):  # interleaved, so load on the machine hits all alike
            rates["transformers"].append(time_transformers(reference, batch, device, n))
            for name, generator in variants.items():
                rates[name].append(time_tunesmith(generator, batch, device, n))
        hf = statistics.median(rates["transformers"])
        row = f"{batch:>5}  {hf:>12.1f}"
        for name in names:
            ts = statistics.median(rates[name])
            row += f"  {ts:>18.1f}  {ts / hf:>5.2f}x"
        print(row, flush=True)
    if args.whole_process:
        whole_process(args.repeats, args.process_tokens)


HF_SCRIPT = """
import sys, torch
from transformers import GPT2LMHeadModel
model = GPT2LMHeadModel.from_pretrained(sys.argv[1]).eval()
x = torch.tensor([[50256]])
with torch.inference_mode():
    model.generate(x, attention_mask=torch.ones_like(x), do_sample=True, top_p=0.9, top_k=0,
                   max_new_tokens=int(sys.argv[2]), min_new_tokens=int(sys.argv[2]),
                   pad_token_id=50256)
"""


def whole_process(repeats: int, tokens: int) -> None:
    """Whole commands on a local GPT-2 124M-shaped folder, interleaved; median seconds."""
    import whole_process as wp

    with tempfile.TemporaryDirectory() as tmp:
        folder = wp.model_folder(Path(tmp) / "gpt2-124m")
        tunesmith = [sys.executable, "-m", "tunesmith", "generate", "--model", str(folder)]
        many = ["--length", str(tokens), "--ignore-eos", "--seed", "1", "--no-run"]
        commands = {
            'python -c "import torch"': [sys.executable, "-c", "import torch"],
            "tunesmith generate --length 1": [*tunesmith, "--length", "1", "--no-run"],
            f"tunesmith generate, {tokens} tokens": [*tunesmith, *many],
            f"tunesmith generate --quantize int8, {tokens} tokens": [
                *tunesmith,
                *many,
                *("--quantize", "int8"),
            ],
            f"transformers script, {tokens} tokens": [
                *(sys.executable, "-c", HF_SCRIPT),
                *(str(folder), str(tokens)),
            ],
        }
        median = wp.median_seconds(commands, repeats, Path(tmp))
    torch_s = median['python -c "import torch"']
    hf_s = median[f"transformers script, {tokens} tokens"]
    print(f"\nwhole process, local 124M-shaped folder, median of {repeats}:")
    for name, seconds in median.items():
        extra = f"  (+{seconds - torch_s:.2f} s over import torch)" if "length 1" in name else ""
        ratio = f"  {hf_s / seconds:5.2f}x transformers" if f"{tokens} tokens" in name else ""
        print(f"  {name:50s} {seconds:6.2f} s{ratio}{extra}", flush=True)


def _generator(model):
    """A TextGenerator around `model`; its tokenizer only decodes, so any GPT-2-sized
    vocabulary works and the benchmark needs no download."""
    from tokenizers import Tokenizer, models

    from tunesmith.generate import TextGenerator
    from tunesmith.tokenizer import GPT2Tokenizer

    vocab = {f"t{i}": i for i in range(50256)} | {"<|endoftext|>": 50256}
    return TextGenerator(model, GPT2Tokenizer(Tokenizer(models.WordLevel(vocab, "t0"))))


if __name__ == "__main__":
    main()
