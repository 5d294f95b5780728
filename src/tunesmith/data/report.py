"""Length statistics (characters and GPT-2 tokens), the histogram PNG and the printed report."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from tunesmith.tokenizer import GPT2_CONTEXT, GPT2Tokenizer, shipped_tokenizer_for

if TYPE_CHECKING:
    from tunesmith.data.prepare import DataResult

DEFAULT_CONTEXT = 1024
TOKENIZE_BATCH = 1000
PROGRESS_FROM = 20_000  # examples; fewer tokenize too fast to need a progress bar


@dataclass(frozen=True)
class LengthStats:
    total: int
    min: int
    median: float
    p95: float
    max: int
    mean: float

    @classmethod
    def of(cls, lengths: list[int]) -> LengthStats | None:
        if not lengths:
            return None
        import numpy as np

        a = np.asarray(lengths)
        return cls(
            total=int(a.sum()),
            min=int(a.min()),
            median=float(np.median(a)),
            p95=float(np.percentile(a, 95)),
            max=int(a.max()),
            mean=round(float(a.mean()), 2),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def load_tokenizer(name: str) -> tuple[GPT2Tokenizer, int | None]:
    """The tokenizer of a model (hub id, folder or run) and the model's context, if it says.

    Raises ModelNotFoundError / CheckpointError when it cannot be had (e.g. offline, no cache).
    """
    shipped = shipped_tokenizer_for(name)
    if shipped is not None:  # gpt2 and its family: the files inside tunesmith, no network
        return shipped, GPT2_CONTEXT
    folder = Path(name).expanduser()
    if not folder.is_dir():
        from tunesmith.checkpoint import resolve_model_dir

        folder = resolve_model_dir(name)
    tokenizer = GPT2Tokenizer.from_folder(folder)
    context = None
    config = folder / "config.json"
    if config.is_file():
        try:
            context = json.loads(config.read_text()).get("n_positions")
        except (OSError, json.JSONDecodeError, AttributeError):
            context = None
    return tokenizer, context if isinstance(context, int) else None


def token_lengths(tokenizer: GPT2Tokenizer, texts: list[str]) -> list[int]:
    """Tokens per text, encoded in batches (with a progress bar for long inputs)."""
    lengths: list[int] = []
    with tqdm(
        total=len(texts),
        unit="ex",
        desc="tokenizing",
        leave=False,
        disable=None if len(texts) >= PROGRESS_FROM else True,
    ) as bar:
        for start in range(0, len(texts), TOKENIZE_BATCH):
            batch = texts[start : start + TOKENIZE_BATCH]
            lengths.extend(len(ids) for ids in tokenizer.encode_batch(batch))
            bar.update(len(batch))
    return lengths


def write_histogram(path: Path, lengths: list[int], unit: str, context: int | None) -> None:
    """A histogram of example lengths; the context is marked when examples come near it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)  # render with Agg, without pyplot's global state
    ax = fig.add_subplot()
    ax.hist(lengths, bins=min(50, max(1, len(set(lengths)))), color="#4c72b0")
    if context is not None and lengths and max(lengths) >= 0.8 * context:
        ax.axvline(context, color="#c44e52", linestyle="--", label=f"context ({context})")
        ax.legend()
    ax.set_xlabel(f"{unit} per example")
    ax.set_ylabel("examples")
    ax.set_title(f"Example lengths ({len(lengths):,} examples)")
    fig.tight_layout()
    fig.savefig(path)


def format_report(result: DataResult, width: int = 100) -> str:
    """The report `tunesmith data` prints: counts, drops by reason, lengths, longest examples."""
    lines = []
    for source in result.sources:
        what = source.format
        if source.column:
            what += f", {_kind(source.format)} {source.column!r}"
        lines.append(f"Read {source.examples:,} examples from {source.name} ({what})")
    counts: list[tuple[str, int]] = [("read", result.read)]
    if result.dropped_total:
        counts.append(("dropped", result.dropped_total))
        counts += [("  " + r.replace("_", " "), n) for r, n in result.dropped.items() if n]
    counts += [("kept", result.kept), ("  train", result.train), ("  validation", result.val)]
    lines.append("Examples")
    lines += [f"  {label:<16}{value:>10,}" for label, value in counts]
    lines.append(f"  {'characters':<16}{_spread(result.chars)}")
    if result.tokens is not None:
        lines.append(f"Tokens ({result.tokenizer})")
        lines.append(f"  {'total':<16}{result.tokens.total:>10,}")
        lines.append(f"  {'per example':<16}{_spread(result.tokens)}")
        lines.append(
            f"  {'over context':<16}{result.over_context:>10,}  ({result.context:,} tokens)"
        )
    if result.longest:
        unit = "tokens" if result.tokens is not None else "chars"
        lines.append(f"Longest examples ({unit})")
        for item in result.longest:
            where = f"{Path(item['source']).name}:{item['row']}"
            prefix = f"  {item['length']:>8,}  {where}  "
            lines.append(prefix + _truncate(item["text"], max(20, width - len(prefix))))
    if result.files:
        lines.append(f"Wrote {', '.join(result.files)} to {result.output_dir}")
    return "\n".join(lines)


def _kind(fmt: str) -> str:
    return "column" if fmt in ("csv", "tsv") else "field"


def _spread(stats: LengthStats | None) -> str:
    if stats is None:
        return f"{'-':>10}"
    return (
        f"{f'min {stats.min:,}':>10}  median {stats.median:,.0f}  p95 {stats.p95:,.0f}  "
        f"max {stats.max:,}"
    )


def _truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
