"""The data pipeline: read sources, clean, split, measure, and write the outputs of a data run."""

from __future__ import annotations

import heapq
import json
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data.clean import Cleaner, clean, one_line, split_train_val, val_indices
from tunesmith.data.config import DataConfig
from tunesmith.data.examples import Example
from tunesmith.data.formats import SourceInfo, parse_source
from tunesmith.data.sources import is_data_run_folder, read_sources
from tunesmith.data.spool import Spool
from tunesmith.data.stats import (
    DEFAULT_CONTEXT,
    LengthStats,
    load_tokenizer,
    token_lengths,
    write_histogram,
)
from tunesmith.data.tables import parse_data_run
from tunesmith.errors import DataError, TunesmithError
from tunesmith.files import write_atomically, write_text_atomically

DATA_TXT = "data.txt"
TRAIN_JSONL = "train.jsonl"
VAL_JSONL = "val.jsonl"
STATS_JSON = "stats.json"
HISTOGRAM_PNG = "lengths.png"
SOURCE_DIR = "source"  # downloaded originals
LONGEST_SHOWN = 3


@dataclass
class DataResult:
    """What a data run read, kept and measured; `to_dict()` is stats.json."""

    output_dir: Path
    sources: list[SourceInfo]
    read: int
    dropped: dict[str, int]
    kept: int
    train: int
    val: int
    chars: LengthStats | None
    tokens: LengthStats | None = None
    tokenizer: str | None = None
    context: int = DEFAULT_CONTEXT
    over_context: int | None = None
    longest: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # written into output_dir

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def summary(self) -> str:
        text = f"{self.kept:,} examples ({self.train:,} train, {self.val:,} val)"
        if self.tokens is not None:
            text += f", {_short(self.tokens.total)} tokens"
        return text

    def metrics(self) -> dict[str, Any]:
        metrics = {
            "examples_read": self.read,
            "examples_kept": self.kept,
            "train_examples": self.train,
            "val_examples": self.val,
        }
        if self.tokens is not None:
            metrics["tokens"] = self.tokens.total
        return metrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": [vars(s) for s in self.sources],
            "examples": {
                "read": self.read,
                "dropped": dict(self.dropped),
                "kept": self.kept,
                "train": self.train,
                "val": self.val,
            },
            "chars": self.chars.to_dict() if self.chars else None,
            "tokenizer": self.tokenizer,
            "tokens": self.tokens.to_dict() if self.tokens else None,
            "context": self.context,
            "over_context": self.over_context,
            "longest": self.longest,
            "warnings": self.warnings,
        }


def _short(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e4 else f"{n:,}"


def iter_examples(
    sources: list[str], config: DataConfig, download_dir: Path, infos: list[SourceInfo]
) -> Iterator[Example]:
    """Every example of every source as read (before cleaning), streamed; what each source
    gave is appended to `infos` once it has been read."""
    for source in read_sources([str(s) for s in sources], config, download_dir):
        parsed = parse_source(source, config)
        count = 0
        for example in parsed.examples:
            count += 1
            yield example
        kept = f"{download_dir.name}/{source.kept.name}" if source.kept is not None else None
        infos.append(SourceInfo(source.name, parsed.format, count, parsed.column, kept))


def read_examples(
    sources: list[str], config: DataConfig, download_dir: Path
) -> tuple[list[Example], list[SourceInfo]]:
    """Every example of every source, as read (before cleaning), and what each source gave."""
    infos: list[SourceInfo] = []
    examples = list(iter_examples(sources, config, download_dir, infos))
    return examples, infos


def _nothing_left(read: int, dropped: dict[str, int], sources: list[str]) -> DataError:
    why = ", ".join(f"{r.replace('_', ' ')} {n:,}" for r, n in dropped.items() if n)
    names = ", ".join(str(s) for s in sources)
    return DataError(
        f"no examples left in {names}: {read:,} read"
        + (f", all dropped ({why})" if why else "")
        + "; check --column/--field/--split and loosen --min-chars/--max-chars"
    )


def prepare_data(sources: list[str], config: DataConfig | None, output_dir: Path) -> DataResult:
    """Read, clean, split and measure `sources`; write data.txt, train.jsonl, val.jsonl,
    stats.json and lengths.png into `output_dir` (downloads under source/).

    The examples stream through: what is kept waits in a hidden file beside the outputs, not
    in memory. Raises DataError on bad input; nothing but downloads is written until all
    succeeded, and data.txt is written last.
    """
    config = config or DataConfig()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    infos: list[SourceInfo] = []
    cleaner = Cleaner(config.min_chars, config.max_chars)
    with Spool(output_dir) as spool:
        for example in iter_examples(sources, config, output_dir / SOURCE_DIR, infos):
            kept = cleaner.keep(example)
            if kept is not None:
                spool.add(kept)
        spool.seal()
        if not len(spool):
            raise _nothing_left(cleaner.read, cleaner.dropped, sources)
        val = val_indices(len(spool), config.val_fraction, config.seed)
        result = DataResult(
            output_dir=output_dir,
            sources=infos,
            read=cleaner.read,
            dropped=cleaner.dropped,
            kept=len(spool),
            train=len(spool) - len(val),
            val=len(val),
            chars=LengthStats.of(spool.chars),
            context=config.context or DEFAULT_CONTEXT,
        )
        lengths, unit = _count_tokens(result, spool, config) or (spool.chars, "characters")
        result.longest = _longest(spool, lengths, unit)
        write_histogram(output_dir / HISTOGRAM_PNG, lengths, unit, result.context)
        _write_split(output_dir / TRAIN_JSONL, spool, val, want_val=False)
        _write_split(output_dir / VAL_JSONL, spool, val, want_val=True)
        stats = {**result.to_dict(), "config": config.to_dict()}
        write_text_atomically(
            output_dir / STATS_JSON, json.dumps(stats, indent=2, ensure_ascii=False) + "\n"
        )
        write_atomically(output_dir / DATA_TXT, lambda tmp: _write_data_txt(tmp, spool))
    result.files = [DATA_TXT, TRAIN_JSONL, VAL_JSONL, STATS_JSON, HISTOGRAM_PNG]
    result.files += [info.kept for info in infos if info.kept]
    return result


def _longest(spool: Spool, lengths: Sequence[int], unit: str) -> list[dict[str, Any]]:
    """The longest examples (the first of equals first), for the report."""
    chosen = heapq.nlargest(LONGEST_SHOWN, range(len(lengths)), key=lengths.__getitem__)
    records = {i: json.loads(line) for i, line in enumerate(spool.lines()) if i in chosen}
    return [
        {
            "length": lengths[i],
            "unit": unit,
            "source": records[i]["source"],
            "row": records[i]["row"],
            "text": records[i]["text"][:200],
        }
        for i in chosen
    ]


def _write_split(path: Path, spool: Spool, val: set[int], want_val: bool) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as out:
            out.writelines(line for i, line in enumerate(spool.lines()) if (i in val) == want_val)

    write_atomically(path, write)


def _write_data_txt(tmp: Path, spool: Spool) -> None:
    with open(tmp, "w", encoding="utf-8") as out:
        out.writelines(one_line(text) + "\n" for text in spool.texts())


def _count_tokens(
    result: DataResult, spool: Spool, config: DataConfig
) -> tuple[Sequence[int], str] | None:
    """Token lengths, with the token statistics filled in on `result`; None (and a warning on
    `result`) when no tokenizer is asked for or it cannot be had."""
    if config.tokenizer is None:
        return None
    try:
        tokenizer, model_context = load_tokenizer(config.tokenizer)
    except TunesmithError as e:
        result.warnings.append(f"token statistics left out: {e}")
        return None
    lengths = token_lengths(tokenizer, spool.texts(), total=len(spool))
    result.tokenizer = config.tokenizer
    result.context = config.context or model_context or DEFAULT_CONTEXT
    result.tokens = LengthStats.of(lengths)
    result.over_context = sum(1 for n in lengths if n > result.context)
    return lengths, "tokens"


def load_training_examples(
    source: str | Path, config: DataConfig | None = None
) -> tuple[list[str], list[str]]:
    """(train, val) texts from a data run's folder, or from any SOURCE `tunesmith data` reads,
    cleaned and split the same way (with `config`, else the same defaults)."""
    folder = Path(source)
    if folder.is_dir() and is_data_run_folder(folder):
        return _read_texts(folder / TRAIN_JSONL), _read_texts(folder / VAL_JSONL)
    config = config or DataConfig()
    with tempfile.TemporaryDirectory(prefix="tunesmith-data-") as tmp:
        infos: list[SourceInfo] = []
        cleaned = clean(iter_examples([str(source)], config, Path(tmp), infos))
    if not cleaned.kept:
        raise _nothing_left(cleaned.read, cleaned.dropped, [str(source)])
    train, val = split_train_val(cleaned.kept, config.val_fraction, config.seed)
    return [e.text for e in train], [e.text for e in val]


def _read_texts(path: Path) -> list[str]:
    if not path.is_file():
        return []
    try:
        with open(path, encoding="utf-8") as f:
            return [e.text for e in parse_data_run(f, str(path))]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path} ({e}); rerun `tunesmith data` to rebuild it") from None
