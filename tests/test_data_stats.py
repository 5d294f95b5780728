"""Token statistics with GPT-2's tokenizer, the histogram, stats.json and the printed report."""

from __future__ import annotations

import json

import pytest
from conftest import install_in_hf_cache

from tunesmith.data import DataConfig, format_report, prepare_data
from tunesmith.data.stats import LengthStats, token_lengths
from tunesmith.tokenizer import GPT2Tokenizer


def test_token_lengths_match_encode(gpt2_vocab_dir):
    tok = GPT2Tokenizer.from_folder(gpt2_vocab_dir)
    texts = ["Hello world", "A much longer sentence, with punctuation!", "x"] * 700
    assert list(token_lengths(tok, texts)) == [len(tok.encode(t)) for t in texts]
    assert tok.encode("Hello world") == [15496, 995]  # GPT-2's ids


def test_length_stats():
    stats = LengthStats.of(list(range(1, 101)))
    assert (stats.total, stats.min, stats.median, stats.max) == (5050, 1, 50.5, 100)
    assert stats.p95 == pytest.approx(95.05)
    assert LengthStats.of([]) is None


def test_seed_token_stats_with_a_tokenizer_folder(tmp_path, seed_csv, gpt2_vocab_dir):
    config = DataConfig(tokenizer=str(gpt2_vocab_dir), context=30)
    result = prepare_data([str(seed_csv)], config, tmp_path)
    tok = GPT2Tokenizer.from_folder(gpt2_vocab_dir)
    kept = (tmp_path / "data.txt").read_text().splitlines()
    lengths = [len(tok.encode(t)) for t in kept]
    assert result.tokens.total == sum(lengths) and result.tokens.max == max(lengths)
    assert result.over_context == sum(n > 30 for n in lengths) > 0
    assert result.longest[0]["length"] == max(lengths) and result.longest[0]["unit"] == "tokens"
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["tokens"]["total"] == sum(lengths) and stats["over_context"] > 0
    report = format_report(result)
    assert f"{sum(lengths):,}" in report and "(30 tokens)" in report and "p95" in report
    assert report.count("onelinefun.csv:") == 3  # the three longest examples


def test_tokenizer_gpt2_is_the_shipped_one_without_network(tmp_path, no_network):
    src = tmp_path / "d.txt"
    src.write_text("Hello world\nsecond line here\n")
    result = prepare_data([str(src)], DataConfig(), tmp_path / "out")
    assert result.warnings == []
    assert result.tokenizer == "gpt2" and result.tokens.total == 2 + 3
    assert result.context == 1024  # GPT-2's context
    assert not any(no_network.iterdir())  # nothing downloaded, nothing cached
    assert DataConfig(context=64).context == 64


def test_tokenizer_from_the_hub_cache_sets_the_context(tmp_path, offline_hub, tiny_model_dir):
    install_in_hf_cache(offline_hub, "someone/tiny-gpt2", tiny_model_dir)
    src = tmp_path / "d.txt"
    src.write_text("Hello world\nsecond line here\n")
    result = prepare_data([str(src)], DataConfig(tokenizer="someone/tiny-gpt2"), tmp_path / "out")
    assert result.warnings == []
    assert result.tokens.total == 2 + 3
    assert result.context == 128  # the tiny model's n_positions


def test_without_a_tokenizer_the_run_still_succeeds(tmp_path):
    src = tmp_path / "d.txt"
    src.write_text("alpha\nbeta gamma\n")
    config = DataConfig(tokenizer=str(tmp_path / "no-such-model"))
    result = prepare_data([str(src)], config, tmp_path / "out")
    assert len(result.warnings) == 1 and "token statistics left out" in result.warnings[0]
    assert result.tokens is None and result.over_context is None
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["tokens"] is None and stats["chars"]["max"] == 10
    report = format_report(result)
    assert "Tokens" not in report and "Longest examples (chars)" in report
    assert (tmp_path / "out" / "lengths.png").stat().st_size > 1000


def test_report_is_aligned_and_lists_drop_reasons(tmp_path):
    src = tmp_path / "d.txt"
    src.write_text("one\none\n\nthree three three\n" + "long " * 50 + "\n")
    config = DataConfig(tokenizer=None, max_chars=100)
    report = format_report(prepare_data([str(src)], config, tmp_path / "out"))
    labels = ("read", "dropped", "empty", "duplicate", "too long", "kept", "train", "validation")
    rows = {
        label: line
        for line in report.splitlines()
        for label in labels
        if line.strip().rsplit(" ", 1)[0].strip() == label
    }
    assert set(rows) == set(labels)
    assert rows["read"].split()[-1] == "5" and rows["kept"].split()[-1] == "2"
    assert rows["duplicate"].split()[-1] == "1" and rows["too long"].split()[-1] == "1"
    assert len({len(line) for line in rows.values()}) == 1  # counts right-aligned in one column


def test_a_folder_of_many_files_is_summarized(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(5000):
        (folder / f"{i:04d}.txt").write_text(f"joke {i}\nanother joke {i}\n")
    result = prepare_data([str(folder)], DataConfig(tokenizer=None), tmp_path / "out")
    report = format_report(result)
    read_lines = [line for line in report.splitlines() if line.startswith("Read ")]
    assert read_lines[:4] == [
        f"Read 2 examples from {folder / f'{i:04d}.txt'} (text)" for i in range(4)
    ]
    assert read_lines[4:] == [
        "Read 9,992 examples from 4,996 more files (text); stats.json lists every file"
    ]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert len(stats["sources"]) == 5000 and result.kept == 10_000


def test_a_few_files_are_each_named(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.txt").write_text(f"joke {i}\n")
    result = prepare_data([str(tmp_path / "*.txt")], DataConfig(tokenizer=None), tmp_path / "o")
    assert format_report(result).count("Read 1 examples from") == 5
