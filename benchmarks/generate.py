"""Generation speed: tunesmith against `transformers`' generate, measured in one run.

Same model (the GPT-2 124M shape, random weights), same prompt, 70 new tokens, same sampling
(temperature 1, top-p 0.9, no early stop), at batch 1 and batch 8. Prints tokens/s for both
and the ratio.

    python benchmarks/generate.py [--device cpu|cuda] [--dtype float32|bfloat16] [--repeats 3]
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
    from tunesmith.generate import GenerationConfig, Request

    config = GenerationConfig(
        length=NEW_TOKENS, temperature=1.0, top_p=0.9, ignore_eos=True, seed=0
    )
    requests = [Request(PROMPT_TOKENS, config, seed) for seed in range(batch)]
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
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()

    from tunesmith.devices import resolve_device
    from tunesmith.generate import TextGenerator
    from tunesmith.tokenizer import GPT2Tokenizer

    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    reference, ours = build_models(device, dtype)
    # The tokenizer only decodes text here; any GPT-2 vocabulary works, so build a tiny one.
    from tokenizers import Tokenizer, models

    vocab = {f"t{i}": i for i in range(50256)} | {"<|endoftext|>": 50256}
    generator = TextGenerator(ours, GPT2Tokenizer(Tokenizer(models.WordLevel(vocab, "t0"))))

    print(
        f"device {device}, {args.dtype}, threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}; GPT-2 124M shape, {len(PROMPT_TOKENS)}-token prompt, "
        f"{NEW_TOKENS} new tokens, top-p 0.9; median of {args.repeats}"
    )
    print(f"{'batch':>5}  {'transformers tok/s':>18}  {'tunesmith tok/s':>15}  {'ratio':>6}")
    for batch in (int(b) for b in args.batches.split(",")):
        time_transformers(reference, batch, device)  # warm-up
        time_tunesmith(generator, batch, device)
        hf, ts = [], []
        for _ in range(args.repeats):  # interleaved, so load on the machine hits both alike
            hf.append(time_transformers(reference, batch, device))
            ts.append(time_tunesmith(generator, batch, device))
        hf_rate, ts_rate = statistics.median(hf), statistics.median(ts)
        print(
            f"{batch:>5}  {hf_rate:>18.1f}  {ts_rate:>15.1f}  {ts_rate / hf_rate:>5.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
