"""Generation speed: tunesmith against `transformers`' generate, measured in one run.

Same model (the GPT-2 124M shape, random weights), same prompt, 70 new tokens, same sampling
(temperature 1, top-p 0.9, no early stop), at batch 1 and batch 8. Prints tokens/s for both
and the ratio.

    python benchmarks/generate.py [--device cpu|cuda] [--repeats 3] [--batches 1,8] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

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


def time_transformers(model, batch: int, device) -> float:
    x = torch.tensor([PROMPT_TOKENS] * batch, device=device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            do_sample=True,
            top_p=0.9,
            top_k=0,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            pad_token_id=50256,
        )
    _sync(device)
    assert out.shape == (batch, len(PROMPT_TOKENS) + NEW_TOKENS)
    return batch * NEW_TOKENS / (time.perf_counter() - start)


def time_tunesmith(generator, batch: int, device) -> float:
    from tunesmith.generate import GenerationConfig, GenerationRequest

    config = GenerationConfig(
        length=NEW_TOKENS, temperature=1.0, top_p=0.9, ignore_eos=True, seed=0
    )
    requests = [GenerationRequest(PROMPT_TOKENS, config, seed) for seed in range(batch)]
    start = time.perf_counter()
    produced = 0
    for _, _, sample in generator.stream_batch(requests):
        if sample is not None:
            produced += len(sample.token_ids)
    _sync(device)
    assert produced == batch * NEW_TOKENS
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
    args = parser.parse_args()

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

    print(
        f"device {device}, threads {torch.get_num_threads()}, torch {torch.__version__}; "
        f"GPT-2 124M shape, {len(PROMPT_TOKENS)}-token prompt, {NEW_TOKENS} new tokens, "
        f"top-p 0.9; median of {args.repeats}; transformers in "
        f"{str(reference_dtype).removeprefix('torch.')}"
    )
    names = list(variants)
    header = f"{'batch':>5}  {'transformers':>12}" + "".join(
        f"  {'tunesmith ' + n:>18}  {'ratio':>6}" for n in names
    )
    print(header + "   (tokens/s)")
    for batch in (int(b) for b in args.batches.split(",")):
        time_transformers(reference, batch, device)  # warm-up
        for generator in variants.values():
            time_tunesmith(generator, batch, device)
        rates: dict[str, list[float]] = {"transformers": [], **{n: [] for n in names}}
        for _ in range(args.repeats):  # interleaved, so load on the machine hits all alike
            rates["transformers"].append(time_transformers(reference, batch, device))
            for name, generator in variants.items():
                rates[name].append(time_tunesmith(generator, batch, device))
        hf = statistics.median(rates["transformers"])
        row = f"{batch:>5}  {hf:>12.1f}"
        for name in names:
            ts = statistics.median(rates[name])
            row += f"  {ts:>18.1f}  {ts / hf:>5.2f}x"
        print(row, flush=True)


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
