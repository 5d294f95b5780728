"""Trim, filter and deduplicate examples, then split them into train and validation sets."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from tunesmith.data.examples import Example

DROP_REASONS = ("empty", "duplicate", "too_short", "too_long")
# Everything str.splitlines() breaks on, so that one example is one line of data.txt.
LINE_BREAKS = re.compile(r"[ \t]*[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+[ \t]*")


@dataclass
class Cleaned:
    kept: list[Example]
    read: int
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))


class Cleaner:
    """Cleans examples one at a time, remembering only a short digest of each text kept (so a
    large data set streams through in little memory) and counting why each was dropped."""

    def __init__(self, min_chars: int = 1, max_chars: int | None = None) -> None:
        self.min_chars, self.max_chars = min_chars, max_chars
        self.read = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self._seen: set[bytes] = set()

    def keep(self, example: Example) -> Example | None:
        """The example trimmed, or None when it is dropped."""
        self.read += 1
        text = example.text.strip()
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).digest()
        if not text:
            reason = "empty"
        elif digest in self._seen:
            reason = "duplicate"
        elif len(text) < self.min_chars:
            reason = "too_short"
        elif self.max_chars is not None and len(text) > self.max_chars:
            reason = "too_long"
        else:
            self._seen.add(digest)
            return replace(example, text=text) if text != example.text else example
        self.dropped[reason] += 1
        return None


def clean(examples: Iterable[Example], min_chars: int = 1, max_chars: int | None = None) -> Cleaned:
    """Trim whitespace; drop empty examples, exact duplicates (first kept), and examples outside
    [min_chars, max_chars]; count each reason."""
    cleaner = Cleaner(min_chars, max_chars)
    kept = [e for e in map(cleaner.keep, examples) if e is not None]
    return Cleaned(kept=kept, read=cleaner.read, dropped=cleaner.dropped)


def val_indices(n: int, val_fraction: float, seed: int) -> set[int]:
    """Which of n examples form the validation set: a seeded random round(n * val_fraction)
    of them (at least one when there are two or more and the fraction is above zero)."""
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return set(random.Random(seed).sample(range(n), n_val))


def split_train_val(
    examples: list[Example], val_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """The examples split by `val_indices`; both keep the input order."""
    chosen = val_indices(len(examples), val_fraction, seed)
    train = [e for i, e in enumerate(examples) if i not in chosen]
    val = [e for i, e in enumerate(examples) if i in chosen]
    return train, val


def one_line(text: str) -> str:
    """The example as one line of data.txt: its line breaks become single spaces."""
    return LINE_BREAKS.sub(" ", text)
