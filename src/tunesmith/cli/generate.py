"""`tunesmith generate`: sample text from a model (hub id, folder or run)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tunesmith.cli._common import add_run_options, run_for
from tunesmith.errors import UsageError
from tunesmith.files import write_text_atomically


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate text from a model",
        description="Generate text from a GPT-2-family model.",
    )
    p.add_argument(
        "--model",
        default="gpt2",
        help="hub id (gpt2, distilgpt2, ...), model folder, or run (runs/N)",
    )
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument(
        "--prompt", default="", help="text to continue (default: unconditional, from <|endoftext|>)"
    )
    prompt.add_argument("--prompt-file", metavar="FILE", help="read the prompt from FILE")
    p.add_argument("--length", type=int, default=70, help="new tokens per sample (default 70)")
    p.add_argument("-n", "--num-samples", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8, help="samples decoded together")
    p.add_argument("--temperature", type=float, default=1.0, help="0 means greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 means off")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling (1 = off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="end a sample where TEXT appears (repeatable)",
    )
    p.add_argument(
        "--ignore-eos",
        action="store_true",
        help="keep going past <|endoftext|> (the seed script's behaviour)",
    )
    p.add_argument("--seed", type=int, help="same seed and settings give the same output")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--format", choices=["text", "jsonl"], default="text")
    p.add_argument("--output", metavar="FILE", help="also write the samples to FILE")
    add_run_options(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from tunesmith.generate import GenerationConfig, TextGenerator

    prompt = _read_prompt(args)
    config = GenerationConfig(
        length=args.length,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        stop=tuple(args.stop),
        ignore_eos=args.ignore_eos,
        seed=args.seed,
    )
    if args.num_samples < 1 or args.batch_size < 1:
        raise UsageError("--num-samples and --batch-size must be at least 1")
    params = {k: v for k, v in vars(args).items() if k not in ("handler", "command_line")}
    with run_for(args, "generate", params) as run:
        model_source = run.use(args.model)
        generator = TextGenerator.load(model_source, device=args.device, dtype=args.dtype)
        if args.num_samples == 1 and args.format == "text":
            samples = [_stream_one(generator, prompt, config)]
        else:
            samples = _generate_many(
                generator, prompt, args.num_samples, config, args.batch_size, args.format
            )
        records = [_record(s) for s in samples]
        if run.id is not None:
            write_text_atomically(run.dir / "samples.jsonl", _jsonl(records))
        if args.output:
            text = _jsonl(records) if args.format == "jsonl" else _plain(samples)
            write_text_atomically(Path(args.output), text)
        run.final_metrics.update(
            samples=len(samples), tokens=sum(len(s.token_ids) for s in samples)
        )
        run.set_summary(f"{len(samples)} sample{'s' * (len(samples) != 1)} from {args.model}")
    return 0


def _read_prompt(args: argparse.Namespace) -> str:
    for flag, value in [("--prompt", args.prompt), *(("--stop", s) for s in args.stop)]:
        _require_utf8(flag, value)
    if not args.prompt_file:
        return args.prompt
    try:
        return Path(args.prompt_file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"prompt file {args.prompt_file} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read prompt file {args.prompt_file}: {e}") from None


def _require_utf8(flag: str, value: str) -> None:
    """Python hands over an argument that is not valid UTF-8 with its bytes escaped as lone
    surrogates (U+DC80..U+DCFF), which no tokenizer accepts: name the byte instead."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        char = ord(value[e.start])
        byte = f"byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else f"U+{char:04X}"
        raise UsageError(
            f"{flag} is not valid UTF-8 text ({byte} at character {e.start + 1}); pass UTF-8 "
            "text (check the terminal's encoding), or put the prompt in a file for --prompt-file"
        ) from None


def _stream_one(generator, prompt: str, config):
    """Print one sample token by token as it is produced."""
    out = sys.stdout
    out.write(prompt)
    out.flush()
    sample = None
    for _, delta, done in generator.stream_batch([generator.request(prompt, config)]):
        out.write(delta)
        out.flush()
        sample = done or sample
    out.write("\n")
    sample.prompt = prompt
    return sample


def _generate_many(generator, prompt, num_samples, config, batch_size, fmt):
    """Samples in batches, each printed (in order) as soon as it and those before it end."""
    from tunesmith.progress import progress_bar

    pending, printed = {}, 0
    with progress_bar(num_samples, "generating", "sample", leave=False) as bar:

        def on_sample(sample):
            nonlocal printed
            bar.update(1)
            pending[sample.index] = sample
            while printed in pending:
                s = pending.pop(printed)
                bar.clear()
                if fmt == "jsonl":
                    print(json.dumps(_record(s), ensure_ascii=False), flush=True)
                else:
                    print(f"=== sample {s.index + 1}/{num_samples} ===", flush=True)
                    print(s.prompt + s.text, flush=True)
                printed += 1

        return generator.generate(prompt, num_samples, config, batch_size, on_sample=on_sample)


def _record(sample) -> dict:
    return {
        "index": sample.index,
        "prompt": sample.prompt,
        "text": sample.text,
        "finish_reason": sample.finish_reason,
        "tokens": len(sample.token_ids),
    }


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _plain(samples) -> str:
    return "".join(
        f"=== sample {s.index + 1}/{len(samples)} ===\n{s.prompt}{s.text}\n" for s in samples
    )
