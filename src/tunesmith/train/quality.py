"""What a fine-tuning run shows of itself: samples, loss.png and the quality report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tunesmith.decoding import DecodingSequence, SamplingSettings, decode
from tunesmith.files import write_atomically

MIN_COPY_CHARS = 30  # a shorter training example inside a sample is not counted as a copy


def sample_ids(
    model, eos_id: int, n: int, max_new_tokens: int, seed: int, top_p: float = 0.95
) -> list[list[int]]:
    """n unconditional samples (each started from `<|endoftext|>`), stopping at the next one."""
    if n == 0:
        return []
    max_new_tokens = min(max_new_tokens, model.config.n_positions - 1)
    settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=1.0, top_p=top_p)
    seqs = [DecodingSequence.start([eos_id], settings, seed + i) for i in range(n)]
    was_training = model.training
    model.eval()
    try:
        for _ in decode(model, seqs, eos_id):
            pass
    finally:
        model.train(was_training)
    return [[t for t in s.new_ids if t != eos_id] for s in seqs]


def sample_texts(model, tokenizer, n: int, max_new_tokens: int, seed: int) -> list[str]:
    ids = sample_ids(model, tokenizer.eos_id, n, max_new_tokens, seed)
    return [tokenizer.decode(x).strip() for x in ids]


def copies_training_example(sample: str, train_set: set[str], long_examples: list[str]) -> bool:
    text = " ".join(sample.split())
    if not text:
        return False
    return text in train_set or any(ex in text for ex in long_examples)


def quality_report(
    samples: list[str],
    sample_lengths: list[int],
    train_texts: list[str],
    train_mean_tokens: float,
    ppl_before: float | None,
    ppl_after: float | None,
) -> tuple[str, dict[str, Any]]:
    """Perplexity before → after and the samples, each marked if it copies a training example."""
    normalized = [" ".join(t.split()) for t in train_texts]
    train_set = set(normalized)
    long_examples = [t for t in normalized if len(t) >= MIN_COPY_CHARS]
    copied = [copies_training_example(s, train_set, long_examples) for s in samples]
    share = sum(copied) / len(samples) if samples else 0.0
    mean_len = sum(sample_lengths) / len(sample_lengths) if sample_lengths else 0.0
    lines = ["Quality report"]
    if ppl_before is not None and ppl_after is not None:
        lines.append(f"  validation perplexity: {ppl_before:.2f} -> {ppl_after:.2f}")
    lines.append(
        f"  samples: {len(samples)}, mean length {mean_len:.1f} tokens "
        f"(training examples: {train_mean_tokens:.1f} tokens)"
    )
    lines.append(f"  copies of a training example: {sum(copied)} ({share:.0%})")
    for i, (text, copy) in enumerate(zip(samples, copied, strict=True), 1):
        mark = " [copies a training example]" if copy else ""
        lines.append(f"  {i:2d}. {text!r}{mark}")
    values = {
        "val_ppl_before": ppl_before,
        "val_ppl_after": ppl_after,
        "sample_copy_share": share,
        "sample_mean_tokens": mean_len,
        "train_mean_tokens": train_mean_tokens,
    }
    return "\n".join(lines), values


def perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(min(loss, 50.0))


def plot_losses(history: list[dict[str, Any]], path: Path) -> Path:
    """loss.png: training loss per step and validation loss at each evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["train_loss"]) for r in history if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in history if r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train", linewidth=1, alpha=0.8)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_atomically(path, fig.savefig)
    plt.close(fig)
    return path
