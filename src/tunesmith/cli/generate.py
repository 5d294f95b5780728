"""`tunesmith generate`: sample text from a model (hub id, folder or run).

`GenerateJob` holds its options besides the sampling settings (GenerationConfig)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tunesmith.cli._common import add_run_options, run_for
from tunesmith.cli.config_args import add_config_arguments, given_options
from tunesmith.cli.remote import add_cluster_arguments, cluster_config, run_remote
from tunesmith.errors import UsageError
from tunesmith.files import write_text_atomically
from tunesmith.options import option


@dataclass(frozen=True)
class GenerateJob:
    """Which model, which prompt, how many samples, where they go."""

    model: str = option(
        "gpt2", "hub id (gpt2, distilgpt2, ...), model folder, or run (runs/N)", metavar="M"
    )
    prompt: str = option(
        "", "text to continue", metavar="TEXT", default_help="unconditional, from <|endoftext|>"
    )
    prompt_file: str | None = option(None, "read the prompt from FILE", metavar="FILE")
    num_samples: int = option(1, "samples to generate", flags=("-n", "--num-samples"))
    batch_size: int = option(8, "samples decoded together")
    device: str = option("auto", "auto, cpu or cuda")
    dtype: str = option("auto", "auto, float32, bfloat16 or float16")
    # Checked by tunesmith.quantize (which imports torch, kept out of the CLI's start).
    quantize: str = option(
        "none", "none, or int8: weight-only int8 linear layers and LM head (faster on CPU)"
    )
    format: str = option(
        "text", "text, or jsonl: a JSON object per sample", choices=("text", "jsonl")
    )
    output: str | None = option(None, "also write the samples to FILE", metavar="FILE")

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.batch_size < 1:
            raise UsageError("--num-samples and --batch-size must be at least 1")
        if self.prompt and self.prompt_file:
            raise UsageError("give --prompt or --prompt-file, not both")


def register(subparsers) -> None:
    description = "Generate text from a GPT-2-family model (hub id, folder or run)."
    p = subparsers.add_parser(
        "generate", help="generate text from a model", description=description, flags=_flags
    )
    p.set_defaults(handler=handle)


def _flags(p: argparse.ArgumentParser) -> None:
    from tunesmith.generate import GenerationConfig

    add_config_arguments(p, GenerateJob)
    add_config_arguments(p.add_argument_group("sampling"), GenerationConfig)
    add_run_options(p)
    add_cluster_arguments(p)


def handle(args: argparse.Namespace) -> int:
    if (cluster := cluster_config(args)) is not None:
        return run_remote(args, "generate", cluster)
    from tunesmith.generate import GenerationConfig, TextGenerator
    from tunesmith.quantize import check_quantization

    job = GenerateJob(**given_options(args, GenerateJob))
    check_quantization(job.quantize)  # before a run is recorded
    config = GenerationConfig(**given_options(args, GenerationConfig))
    prompt = _read_prompt(job, config)
    with run_for(args, "generate", {**asdict(job), **asdict(config)}) as run:
        generator = TextGenerator.load(
            run.use(job.model), device=job.device, dtype=job.dtype, quantize=job.quantize
        )
        if job.num_samples == 1 and job.format == "text":
            samples = [_stream_one(generator, prompt, config)]
        else:
            samples = _generate_many(generator, prompt, config, job)
        if run.id is not None:
            write_text_atomically(run.dir / "samples.jsonl", _text(samples, "jsonl"))
        if job.output:
            write_text_atomically(Path(job.output), _text(samples, job.format))
        tokens = sum(len(s.token_ids) for s in samples)
        run.final_metrics.update(samples=len(samples), tokens=tokens)
        run.set_summary(f"{len(samples)} sample{'s' * (len(samples) != 1)} from {job.model}")
    return 0


def _read_prompt(job: GenerateJob, config) -> str:
    for flag, value in [("--prompt", job.prompt), *(("--stop", s) for s in config.stop)]:
        _require_utf8(flag, value)
    if not job.prompt_file:
        return job.prompt
    try:
        return Path(job.prompt_file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"prompt file {job.prompt_file} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read prompt file {job.prompt_file}: {e}") from None


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
    print(prompt, end="", flush=True)
    sample = None
    for _, delta, done in generator.stream_batch([generator.request(prompt, config)]):
        print(delta, end="", flush=True)
        sample = done or sample
    print()
    sample.prompt = prompt
    return sample


def _generate_many(generator, prompt: str, config, job: GenerateJob):
    """Samples in batches, each printed (in order) as soon as it and those before it end."""
    from tunesmith.progress import progress_bar

    n, pending, printed = job.num_samples, {}, 0
    bar = progress_bar(n, "generating", "sample", leave=False)

    def on_sample(sample) -> None:
        nonlocal printed
        bar.update(1)
        pending[sample.index] = sample
        while printed in pending:
            bar.clear()
            print(_text([pending.pop(printed)], job.format, n), end="", flush=True)
            printed += 1

    with bar:
        return generator.generate(prompt, n, config, job.batch_size, on_sample=on_sample)


def _text(samples: list, fmt: str, total: int | None = None) -> str:
    """Samples as printed and written: JSON lines, or plain text under headings."""
    if fmt == "jsonl":
        fields = ("index", "prompt", "text", "finish_reason")
        records = [
            {**{k: getattr(s, k) for k in fields}, "tokens": len(s.token_ids)} for s in samples
        ]
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    total = total or len(samples)
    return "".join(f"=== sample {s.index + 1}/{total} ===\n{s.prompt}{s.text}\n" for s in samples)
