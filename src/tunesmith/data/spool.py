"""The kept examples of a data run, held on disk rather than in memory while they are counted,
split and measured, so that a large input streams through (`tunesmith data` on a 200 MB CSV)."""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from tunesmith.data.examples import Example


class Spool:
    """A hidden JSONL file of examples beside the outputs (each line as train.jsonl has it),
    with their lengths in characters; removed when the `with` block ends."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / f".examples-{os.getpid()}.jsonl.tmp"
        self.chars = array("q")
        self._out = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (closed in seal/exit)

    def __len__(self) -> int:
        return len(self.chars)

    def add(self, example: Example) -> None:
        self._out.write(to_jsonl(example))
        self.chars.append(len(example.text))

    def seal(self) -> None:
        """Every example is in: flush it, so it can be read back."""
        self._out.close()

    def lines(self) -> Iterator[str]:
        """The examples as train.jsonl lines, in order."""
        with open(self.path, encoding="utf-8") as f:
            yield from f

    def texts(self) -> Iterator[str]:
        for line in self.lines():
            yield json.loads(line)["text"]

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self, kind: type | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._out.close()
        self.path.unlink(missing_ok=True)


def to_jsonl(example: Example) -> str:
    """An example as one line of train.jsonl / val.jsonl."""
    record = {"text": example.text, "source": example.source, "row": example.row}
    record["line"] = example.line
    return json.dumps(record, ensure_ascii=False) + "\n"
