"""`Example`: one training example as read from a source, the unit every data step passes on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One example as read, with where it came from."""

    text: str
    source: str
    row: int  # 1-based: CSV data row, JSONL record, JSON list item, text line or paragraph
    line: int | None = None  # 1-based line of the file where it starts, where that exists
