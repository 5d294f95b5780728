"""Hostile and large input stays bounded: a gzip bomb stops at --max-input-mb with one line, a
long quoted CSV field is read while a quote left open is named, and rows stream through in
memory well under the file's size."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.data import DataConfig, prepare_data
from tunesmith.errors import DataError, UsageError

MB = 1024 * 1024


def no_outputs(out: Path) -> bool:
    return not out.exists() or not [p for p in out.iterdir() if p.name != "source"]


def test_a_gzip_bomb_stops_at_the_input_limit(tmp_path):
    bomb = tmp_path / "bomb.csv.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        f.write(b"id,text\n")
        for _ in range(40):
            f.write(b"1," + b"a" * (MB - 3) + b"\n")  # 40 MB of text, a few hundred KB packed
    assert bomb.stat().st_size < MB
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        prepare_data([str(bomb)], DataConfig(tokenizer=None, max_input_mb=4), out)
    message = str(info.value)
    assert "\n" not in message
    assert "expands to more than the input limit of 4 MB" in message
    assert "--max-input-mb" in message
    assert no_outputs(out)


def test_the_cli_names_the_limit_and_the_flag(tmp_path, capsys):
    big = tmp_path / "big.txt"
    big.write_text("a line of text\n" * 100_000)  # 1.4 MB
    code = main(["data", str(big), "--no-run", "--output-dir", str(tmp_path / "out"),
                 "--tokenizer", "none", "--max-input-mb", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "big.txt holds more than the input limit of 1 MB; raise --max-input-mb" in err


def test_within_the_limit_a_gzip_file_is_read_whole(tmp_path):
    source = tmp_path / "jokes.txt.gz"
    source.write_bytes(gzip.compress("".join(f"joke {i}\n" for i in range(50_000)).encode()))
    result = prepare_data([str(source)], DataConfig(tokenizer=None, max_input_mb=1), tmp_path)
    assert result.kept == 50_000


@pytest.mark.parametrize("value", [0, -1, float("nan")])
def test_the_input_limit_must_be_positive(value):
    with pytest.raises(UsageError, match="--max-input-mb"):
        DataConfig(max_input_mb=value)


def test_a_ten_megabyte_quoted_field_is_one_example(tmp_path):
    long_text = ("word, " * (10 * MB // 6)).strip()
    source = tmp_path / "long.csv"
    source.write_text(f'id,text\n1,"{long_text}"\n2,"short, and quoted"\n')
    result = prepare_data([str(source)], DataConfig(tokenizer=None), tmp_path / "out")
    assert result.kept == 2
    rows = (tmp_path / "out" / "train.jsonl").read_text().splitlines()
    rows += (tmp_path / "out" / "val.jsonl").read_text().splitlines()
    texts = sorted((json.loads(r)["text"] for r in rows), key=len)
    assert texts == ["short, and quoted", long_text]


def test_a_quote_left_open_is_named_with_the_line_it_opens_on(tmp_path):
    source = tmp_path / "open.csv"
    rows = "".join(f'{i},"joke {i}"\n' for i in range(1, 2000))
    source.write_text(f'id,text\n{rows}2000,"this one never closes\n{rows}')
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        prepare_data([str(source)], DataConfig(tokenizer=None), out)
    message = str(info.value)
    assert "unbalanced quote in" in message and "opened on line 2001 runs on to line" in message
    assert "most likely" not in message and "\n" not in message
    assert no_outputs(out)


def test_a_quote_left_open_to_the_end_is_named(tmp_path):
    source = tmp_path / "open.csv"
    source.write_text('id,text\n1,"fine"\n2,"open\n' + "3,plain\n" * 10_000)
    with pytest.raises(DataError, match=r"the quoted field on line 3 is never closed"):
        prepare_data([str(source)], DataConfig(tokenizer=None), tmp_path / "out")


def test_no_temporary_files_are_left_beside_the_outputs(tmp_path, seed_csv):
    out = tmp_path / "out"
    prepare_data([str(seed_csv)], DataConfig(tokenizer=None), out)
    assert sorted(p.name for p in out.iterdir()) == [
        "data.txt", "lengths.png", "stats.json", "train.jsonl", "val.jsonl",
    ]  # fmt: skip


# The child measures its own peak resident memory before and after reading a generated CSV;
# the growth, not the interpreter and its libraries, is what the file's size should bound.
MEASURE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    import matplotlib.backends.backend_agg, matplotlib.figure, numpy
    from tunesmith.data import DataConfig, prepare_data

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    before = peak()
    result = prepare_data([sys.argv[1]], DataConfig(tokenizer=None), Path(sys.argv[2]))
    print(peak() - before, result.kept)
    """
)


def test_a_large_csv_streams_in_memory_below_three_times_its_size(tmp_path):
    source = tmp_path / "big.csv"
    with open(source, "w", encoding="utf-8", newline="") as f:
        f.write("id,text\n")
        i = 0
        while f.tell() < 24 * MB:
            i += 1
            f.write(f'{i},"why did joke number {i} cross the road, asked the ""chicken"""\n')
    size = source.stat().st_size
    child = subprocess.run(
        [sys.executable, "-c", MEASURE, str(source), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=True,
    )
    growth, kept = map(int, child.stdout.split())
    assert kept == i
    assert growth < 3 * size, f"peak memory grew by {growth / size:.1f}x the file's size"
