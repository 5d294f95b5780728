"""Trim, filter and deduplicate examples, then split them into train and validation sets."""

from __future__ import annotations

import random
import re
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


def clean(examples: list[Example], min_chars: int = 1, max_chars: int | None = None) -> Cleaned:
    """Trim whitespace; drop empty examples, exact duplicates (first kept), and examples outside
    [min_chars, max_chars]; count each reason."""
    result = Cleaned(kept=[], read=len(examples))
    seen: set[str] = set()
    for example in examples:
        text = example.text.strip()
        if not text:
            reason = "empty"
        elif text in seen:
            reason = "duplicate"
        elif len(text) < min_chars:
            reason = "too_short"
        elif max_chars is not None and len(text) > max_chars:
            reason = "too_long"
        else:
            seen.add(text)
            result.kept.append(replace(example, text=text) if text != example.text else example)
            continue
        result.dropped[reason] += 1
    return result


def split_train_val(
    examples: list[Example], val_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """A seeded random validation set of round(n * val_fraction) examples (at least one when
    there are two or more and the fraction is above zero); both keep the input order."""
    n = len(examples)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    val_indices = set(random.Random(seed).sample(range(n), n_val))
    train = [e for i, e in enumerate(examples) if i not in val_indices]
    val = [e for i, e in enumerate(examples) if i in val_indices]
    return train, val


def one_line(text: str) -> str:
    """The example as one line of data.txt: its line breaks become single spaces."""
    return LINE_BREAKS.sub(" ", text)
