"""Split a source's text into examples: detect the format, then CSV/TSV and JSON/JSONL
through `tables`, plain text here (by line, paragraph or whole file), streaming where the
format allows."""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tunesmith.data import tables
from tunesmith.data.config import DataConfig
from tunesmith.data.examples import Example
from tunesmith.data.sources import SourceFile
from tunesmith.data.streams import HEAD, lines, open_bytes, text_chunks

EXTENSION_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonlines": "jsonl",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".markdown": "text",
    ".rst": "text",
}
CONTENT_TYPE_FORMATS = {
    "text/csv": "csv",
    "application/csv": "csv",
    "text/tab-separated-values": "tsv",
    "application/json": "json",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
    "text/plain": "text",
}


@dataclass(frozen=True)
class SourceInfo:
    """What was read from one source file, for the report."""

    name: str
    format: str
    examples: int
    column: str | None = None  # the CSV column or JSON field the text came from
    kept: str | None = None  # where the downloaded original lies in the output folder


@dataclass(frozen=True)
class ParsedSource:
    """A source being read: its format and text column, and its examples as they stream in."""

    format: str
    column: str | None
    examples: Iterator[Example]


def parse_source(source: SourceFile, config: DataConfig) -> ParsedSource:
    """Detect the source's format from its first 64 KB and stream its examples; only JSON
    (one document) is read whole."""
    head, chunks = _peek(_text(source, config), HEAD)
    opened = [chunks]

    def open_lines() -> Iterator[str]:
        # The stream already open first, then the file again (TSV is read twice).
        return lines(opened.pop() if opened else _text(source, config))

    if source.data_run:
        return ParsedSource("jsonl", "text", tables.parse_data_run(lines(chunks), source.name))
    fmt = detect_format(source, head, config)
    field = config.field or config.column  # each stands in for the other
    if fmt in ("csv", "tsv"):
        delimiter = "\t" if fmt == "tsv" else csv_delimiter(head)
        column = config.column or config.field
        examples, chosen = tables.parse_csv(open_lines, source.name, delimiter, column)
        return ParsedSource(fmt, chosen, examples)
    if fmt == "jsonl":
        found, chosen = tables.parse_jsonl(lines(chunks), source.name, field)
        return ParsedSource(fmt, chosen, iter(found))
    if fmt == "json":
        found, chosen = tables.parse_json("".join(chunks), source.name, field)
        return ParsedSource(fmt, chosen, iter(found))
    return ParsedSource(fmt, None, split_text(lines(chunks), source.name, config.split))


def _text(source: SourceFile, config: DataConfig) -> Iterator[str]:
    with open_bytes(source.path, source.name, config.max_input_mb) as stream:
        yield from text_chunks(stream, source.name, config.encoding, config.errors)


def _peek(chunks: Iterator[str], size: int) -> tuple[str, Iterator[str]]:
    """The first `size` characters (or all there are), and the chunks again from the start."""
    seen: list[str] = []
    total = 0
    for chunk in chunks:
        seen.append(chunk)
        total += len(chunk)
        if total >= size:
            break
    return "".join(seen)[:size], itertools.chain(seen, chunks)


def detect_format(source: SourceFile, text: str, config: DataConfig) -> str:
    """From --format, the file extension, the HTTP content type, then the content itself."""
    if config.format != "auto":
        return config.format
    suffix = "." + source.filename.rsplit(".", 1)[-1].lower() if "." in source.filename else ""
    fmt = EXTENSION_FORMATS.get(suffix)
    if fmt is None and source.content_type:
        fmt = CONTENT_TYPE_FORMATS.get(source.content_type)
    if fmt == "json" or (fmt is None and text.lstrip()[:1] in ("{", "[")):
        return _json_or_jsonl(text)
    if fmt is None or (fmt == "text" and suffix == "" and source.content_type == "text/plain"):
        # No telling extension: a file whose first lines have one consistent delimiter is a table.
        delimiter = sniff_delimiter(text, default=None, strict=True)
        if delimiter is not None:
            return "tsv" if delimiter == "\t" else "csv"
        return "text"
    return fmt


def _json_or_jsonl(head: str) -> str:
    """JSONL when the first line is a whole JSON value and another follows it: one JSON
    document cannot be that."""
    records = [line for line in head.split("\n") if line.strip()]
    if len(records) < 2:
        return "json"
    try:
        json.loads(records[0])
        return "jsonl"
    except json.JSONDecodeError:
        return "json"  # let the JSON parser report where it breaks


def csv_delimiter(text: str) -> str:
    """A comma when the header has several comma-separated names, else what the sniffer finds
    (so that prose with semicolons in a one-column file does not split it)."""
    header = next((line for line in text[:65536].split("\n") if line.strip()), "")
    sniffed = sniff_delimiter(text, default=None)
    for delimiter in dict.fromkeys([",", sniffed or ",", "\t", ";", "|"]):
        try:
            if len(next(csv.reader([header], delimiter=delimiter))) >= 2:
                return delimiter
        except (csv.Error, StopIteration):
            continue
    return ","


def sniff_delimiter(text: str, default: str | None, strict: bool = False) -> str | None:
    """The delimiter of a table, from its first lines; `default` when it can't tell.

    With `strict`, only a sample whose rows all have the same number (≥ 2) of fields counts, so
    that plain prose with commas is not mistaken for a table.
    """
    lines = [line for line in text[:65536].split("\n")[:50] if line.strip()]
    if len(lines) < 2:
        return default
    sample = "\n".join(lines[:-1] if len(lines) > 2 else lines)  # the last may be cut short
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
    except csv.Error:
        return default
    if strict:
        try:
            widths = {len(row) for row in csv.reader(sample.split("\n"), delimiter=delimiter)}
        except csv.Error:
            return default
        if len(widths) != 1 or widths.pop() < 2:
            return default
    return delimiter


def split_text(lines: Iterable[str], name: str, split: str) -> Iterator[Example]:
    """Plain text as one example per line, per blank-line-separated paragraph, or per file."""
    if split == "file":
        yield Example("".join(lines), name, 1, 1)
        return
    if split == "lines":
        for i, line in enumerate(lines, start=1):
            yield Example(line.removesuffix("\n"), name, i, i)
        return
    paragraph: list[str] = []
    start = count = 0
    for i, line in enumerate(itertools.chain(lines, [""]), start=1):
        if line.strip():
            start = start if paragraph else i
            paragraph.append(line.removesuffix("\n"))
        elif paragraph:
            count += 1
            yield Example("\n".join(paragraph), name, count, start)
            paragraph = []
