"""The report `tunesmith data` prints about a prepared data set."""

from __future__ import annotations

from pathlib import Path

from tunesmith.data.formats import SourceInfo
from tunesmith.data.prepare import DataResult
from tunesmith.data.stats import LengthStats

SOURCES_LISTED = 5  # sources named one per line; beyond, the first few and a count


def format_report(result: DataResult, width: int = 100) -> str:
    """The report `tunesmith data` prints: counts, drops by reason, lengths, longest examples."""
    lines = _source_lines(result.sources)
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


def _source_lines(sources: list[SourceInfo]) -> list[str]:
    """A line per source, or for many (a folder of 5,000 files) the first few and a count."""
    shown = sources if len(sources) <= SOURCES_LISTED else sources[: SOURCES_LISTED - 1]
    lines = []
    for source in shown:
        what = source.format
        if source.column:
            what += f", {_kind(source.format)} {source.column!r}"
        lines.append(f"Read {source.examples:,} examples from {source.name} ({what})")
    rest = sources[len(shown) :]
    if rest:
        formats = ", ".join(sorted({s.format for s in rest}))
        examples = sum(s.examples for s in rest)
        lines.append(
            f"Read {examples:,} examples from {len(rest):,} more files ({formats}); "
            "stats.json lists every file"
        )
    return lines


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
