"""Decode a source's bytes and split it into examples: detect the format, then CSV/TSV and
JSON/JSONL through `tables`, plain text here (by line, paragraph or whole file)."""

from __future__ import annotations

import codecs
import csv
import json
from dataclasses import dataclass

from tunesmith.data import tables
from tunesmith.data.config import DataConfig
from tunesmith.data.examples import Example
from tunesmith.data.sources import SourceFile
from tunesmith.errors import DataError

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
BINARY_HINT = "pass a CSV, TSV, JSON, JSONL or plain-text file (optionally gzip-compressed)"


@dataclass(frozen=True)
class SourceInfo:
    """What was read from one source file, for the report."""

    name: str
    format: str
    examples: int
    column: str | None = None  # the CSV column or JSON field the text came from
    kept: str | None = None  # where the downloaded original lies in the output folder


def parse_source(source: SourceFile, config: DataConfig) -> tuple[list[Example], SourceInfo]:
    text = decode(source.data, source.name, config.encoding, config.errors)
    if source.data_run:
        examples = tables.parse_data_run(text, source.name)
        return examples, SourceInfo(source.name, "jsonl", len(examples), "text")
    fmt = detect_format(source, text, config)
    column = None
    if fmt in ("csv", "tsv"):
        delimiter = "\t" if fmt == "tsv" else csv_delimiter(text)
        examples, column = tables.parse_csv(
            text, source.name, delimiter, config.column or config.field
        )
    elif fmt in ("json", "jsonl"):
        parse = tables.parse_jsonl if fmt == "jsonl" else tables.parse_json
        examples, column = parse(text, source.name, config.field or config.column)
    else:
        examples = split_text(text, source.name, config.split)
    return examples, SourceInfo(source.name, fmt, len(examples), column)


def decode(data: bytes, name: str, encoding: str = "utf-8", errors: str = "strict") -> str:
    """Text with \\n line endings; a clear error for binary files and undecodable bytes."""
    codec = codecs.lookup(encoding).name
    wide = codec.startswith(("utf-16", "utf-32"))
    if data[:4] == b"PK\x03\x04":
        raise DataError(f"{name} is a zip archive (or a spreadsheet); unzip or export it as CSV")
    if not wide and data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        raise DataError(f"{name} is UTF-16 text; pass --encoding utf-16")
    if not wide and b"\x00" in data[:1024]:
        raise DataError(f"{name} is not a text file (it holds binary data); {BINARY_HINT}")
    try:
        text = data.decode("utf-8-sig" if codec == "utf-8" else encoding, errors)
    except UnicodeDecodeError as e:
        if _looks_binary(data[:4096].decode(encoding, "replace")):
            raise DataError(
                f"{name} is not a text file (it holds binary data); {BINARY_HINT}"
            ) from None
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{name} is not valid {encoding} at line {line} (byte 0x{data[e.start]:02x}); "
            "pass --encoding for its real encoding (e.g. --encoding latin-1), "
            "or --errors replace to replace bad bytes"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if _looks_binary(text[:4096]):
        raise DataError(f"{name} is not a text file (it holds binary data); {BINARY_HINT}")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _looks_binary(sample: str) -> bool:
    if not sample:
        return False
    bad = sum(1 for c in sample if c == "\ufffd" or (ord(c) < 32 and c not in "\t\n\r\f"))
    return "\x00" in sample or bad / len(sample) > 0.3


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


def _json_or_jsonl(text: str) -> str:
    try:
        json.loads(text)
        return "json"
    except json.JSONDecodeError:
        pass
    first = text.lstrip().split("\n", 1)[0]
    try:
        json.loads(first)
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


def split_text(text: str, name: str, split: str) -> list[Example]:
    """Plain text as one example per line, per blank-line-separated paragraph, or per file."""
    if split == "file":
        return [Example(text, name, 1, 1)]
    if split == "paragraphs":
        examples: list[Example] = []
        paragraph: list[str] = []
        start = 1
        for i, line in enumerate([*text.split("\n"), ""], start=1):
            if line.strip():
                start = start if paragraph else i
                paragraph.append(line)
            elif paragraph:
                examples.append(Example("\n".join(paragraph), name, len(examples) + 1, start))
                paragraph = []
        return examples
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start another
    return [Example(line, name, i, i) for i, line in enumerate(lines, start=1)]
