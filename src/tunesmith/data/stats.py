"""Length statistics of a data set (characters and GPT-2 tokens) and their histogram PNG."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from tunesmith.runs.references import resolve_reference
from tunesmith.tokenizer import GPT2_CONTEXT, GPT2Tokenizer, shipped_tokenizer_for

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
    folder = resolve_reference(name).expanduser()  # a run's model, else as given
    if not folder.is_dir():
        from tunesmith.checkpoint import resolve_model_dir  # imports torch: only when needed

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
