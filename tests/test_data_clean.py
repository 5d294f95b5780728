"""Cleaning counts and the train/validation split."""

from __future__ import annotations

import pytest

from tunesmith.data.clean import clean, one_line, split_train_val
from tunesmith.data.examples import Example


def examples(*texts: str) -> list[Example]:
    return [Example(t, "src", i) for i, t in enumerate(texts, start=1)]


def test_clean_trims_and_counts_each_reason():
    result = clean(examples("  hi  ", "", " \t", "hi", "a", "x" * 20, "fine"), 2, 10)
    assert [e.text for e in result.kept] == ["hi", "fine"]
    assert [e.row for e in result.kept] == [1, 7]
    assert result.read == 7
    assert result.dropped == {"empty": 2, "duplicate": 1, "too_short": 1, "too_long": 1}


def test_split_is_deterministic_disjoint_and_ordered():
    data = examples(*(f"example {i}" for i in range(200)))
    train, val = split_train_val(data, 0.1, seed=7)
    assert (len(train), len(val)) == (180, 20)
    assert split_train_val(data, 0.1, seed=7) == (train, val)
    assert split_train_val(data, 0.1, seed=8)[1] != val
    assert not {e.text for e in train} & {e.text for e in val}
    assert [e.row for e in val] == sorted(e.row for e in val)


@pytest.mark.parametrize(
    "n, fraction, n_val", [(1, 0.05, 0), (2, 0.05, 1), (3, 0.3, 1), (10, 0.0, 0), (4, 0.9, 3)]
)
def test_small_datasets_keep_both_sides(n, fraction, n_val):
    train, val = split_train_val(examples(*map(str, range(n))), fraction, seed=0)
    assert len(val) == n_val and len(train) == n - n_val


def test_one_line_joins_every_kind_of_line_break():
    assert one_line("a\nb\r\nc \u2028 d\x0be") == "a b c d e"
    assert one_line("no breaks  here") == "no breaks  here"
