"""A source file as a stream of text lines: gunzipped on the fly, bounded, decoded.

Nothing here holds a whole file in memory: `open_bytes` caps the bytes a source may expand to
(`--max-input-mb`), so a small gzip bomb fails with one line instead of exhausting memory, and
`text_lines` decodes chunk by chunk, still naming the line of an undecodable byte.
"""

from __future__ import annotations

import codecs
import gzip
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from tunesmith.errors import DataError

CHUNK = 1024 * 1024
HEAD = 64 * 1024  # bytes the format checks look at
GZIP_MAGIC = b"\x1f\x8b"
BINARY_HINT = "pass a CSV, TSV, JSON, JSONL or plain-text file (optionally gzip-compressed)"


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


class BoundedReader:
    """Reads a binary stream and fails once more than `limit` bytes came out of it."""

    def __init__(self, raw: BinaryIO, name: str, limit: int, limit_mb: float, gzipped: bool):
        self.raw, self.name, self.limit = raw, name, limit
        self.limit_mb, self.gzipped, self.read_bytes = limit_mb, gzipped, 0

    def read(self, size: int = CHUNK) -> bytes:
        try:
            data = self.raw.read(size)
        except (OSError, EOFError, zlib.error) as e:
            if self.gzipped:
                raise DataError(
                    f"{self.name} is not a valid gzip file ({e}); re-download or decompress it"
                ) from None
            raise DataError(f"cannot read {self.name}: {e}; check the file") from None
        self.read_bytes += len(data)
        if self.read_bytes > self.limit:
            what = "expands to" if self.gzipped else "holds"
            raise DataError(
                f"{self.name} {what} more than the input limit of {self.limit_mb:g} MB; "
                "raise --max-input-mb if the data is meant to be that large"
            )
        return data

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> BoundedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_bytes(path: Path, name: str, limit_mb: float) -> BoundedReader:
    """The file's bytes (gunzipped when it is gzip), failing beyond `limit_mb` megabytes."""
    limit = int(limit_mb * 1024 * 1024)
    try:
        gzipped = is_gzip(path)
        raw: BinaryIO = gzip.open(path, "rb") if gzipped else open(path, "rb")  # noqa: SIM115
    except OSError as e:
        raise DataError(
            f"cannot read {name}: {e.strerror or e}; check the file's permissions"
        ) from None
    return BoundedReader(raw, name, limit, limit_mb, gzipped)


def text_chunks(
    stream: BoundedReader, name: str, encoding: str = "utf-8", errors: str = "strict"
) -> Iterator[str]:
    """The decoded text, chunk by chunk, with \\n line endings; a clear error for binary files
    and undecodable bytes (naming the line)."""
    codec = codecs.lookup(encoding).name
    decoder = codecs.getincrementaldecoder("utf-8-sig" if codec == "utf-8" else encoding)(errors)
    first, lines_before, carry = True, 0, ""
    while True:
        data = stream.read(CHUNK)
        if first:
            _check_head(data, name, codec)
        try:
            text = decoder.decode(data, final=not data)
        except UnicodeDecodeError as e:
            if _looks_binary(data[:4096].decode(encoding, "replace")):
                raise DataError(
                    f"{name} is not a text file (it holds binary data); {BINARY_HINT}"
                ) from None
            line = lines_before + data.count(b"\n", 0, max(e.start, 0)) + 1
            bad = e.object[e.start] if e.start < len(e.object) else 0
            raise DataError(
                f"{name} is not valid {encoding} at line {line} (byte 0x{bad:02x}); "
                "pass --encoding for its real encoding (e.g. --encoding latin-1), "
                "or --errors replace to replace bad bytes"
            ) from None
        if first:
            text = text.removeprefix("\ufeff")
            if _looks_binary(text[:4096]):
                raise DataError(f"{name} is not a text file (it holds binary data); {BINARY_HINT}")
            first = False
        lines_before += data.count(b"\n")
        text = carry + text
        # A \r at the end of a chunk may be the first half of \r\n: keep it for the next one.
        carry = "\r" if data and text.endswith("\r") else ""
        text = text[: len(text) - len(carry)]
        if text:
            yield text.replace("\r\n", "\n").replace("\r", "\n")
        if not data:
            return


def _check_head(data: bytes, name: str, codec: str) -> None:
    wide = codec.startswith(("utf-16", "utf-32"))
    if data[:4] == b"PK\x03\x04":
        raise DataError(f"{name} is a zip archive (or a spreadsheet); unzip or export it as CSV")
    if not wide and data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        raise DataError(f"{name} is UTF-16 text; pass --encoding utf-16")
    if not wide and b"\x00" in data[:1024]:
        raise DataError(f"{name} is not a text file (it holds binary data); {BINARY_HINT}")


def _looks_binary(sample: str) -> bool:
    if not sample:
        return False
    bad = sum(1 for c in sample if c == "\ufffd" or (ord(c) < 32 and c not in "\t\n\r\f"))
    return "\x00" in sample or bad / len(sample) > 0.3


def lines(chunks: Iterable[str]) -> Iterator[str]:
    """The text's lines, each with its \\n (the last one may lack it)."""
    pending: list[str] = []  # pieces of a line longer than a chunk
    for chunk in chunks:
        parts = chunk.split("\n")
        if len(parts) == 1:
            pending.append(chunk)
            continue
        pending.append(parts[0])
        yield "".join(pending) + "\n"
        for part in parts[1:-1]:
            yield part + "\n"
        pending = [parts[-1]] if parts[-1] else []
    if pending:
        yield "".join(pending)
