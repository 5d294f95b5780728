"""Length statistics of a data set (characters and GPT-2 tokens) and their histogram PNG."""

from __future__ import annotations

import itertools
import json
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tunesmith.progress import progress_bar
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
    def of(cls, lengths: Sequence[int]) -> LengthStats | None:
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


def token_lengths(
    tokenizer: GPT2Tokenizer, texts: Iterable[str], total: int | None = None
) -> array[int]:
    """Tokens per text, encoded in batches (with a progress bar for long inputs); `texts` may
    be a stream, `total` says how many it holds."""
    texts = iter(texts)
    if total is None:
        texts = list(texts)
        total = len(texts)
        texts = iter(texts)
    lengths: array[int] = array("q")
    with progress_bar(
        total, "tokenizing", "ex", enabled=total >= PROGRESS_FROM, leave=False
    ) as bar:
        while batch := list(itertools.islice(texts, TOKENIZE_BATCH)):
            lengths.extend(len(ids) for ids in tokenizer.encode_batch(batch))
            bar.update(len(batch))
    return lengths


def write_histogram(path: Path, lengths: Sequence[int], unit: str, context: int | None) -> None:
    """A histogram of example lengths; the context is marked when examples come near it."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # One numpy array: matplotlib would turn a list or array.array into Python objects
    # (about 250 bytes per example).
    values = np.asarray(lengths, dtype=np.int64)
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)  # render with Agg, without pyplot's global state
    ax = fig.add_subplot()
    distinct = len(np.unique(values)) if values.size else 0
    ax.hist(values, bins=min(50, max(1, distinct)), color="#4c72b0")
    if context is not None and values.size and values.max() >= 0.8 * context:
        ax.axvline(context, color="#c44e52", linestyle="--", label=f"context ({context})")
        ax.legend()
    ax.set_xlabel(f"{unit} per example")
    ax.set_ylabel("examples")
    ax.set_title(f"Example lengths ({len(lengths):,} examples)")
    fig.tight_layout()
    fig.savefig(path)
