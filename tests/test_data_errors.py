"""Bad input: one-line DataErrors that say what is wrong and what to do, and no data.txt."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.data import DataConfig, prepare_data
from tunesmith.errors import DataError, UsageError


def fails(tmp_path: Path, sources, match: str, **options) -> str:
    out = tmp_path / "out"
    with pytest.raises(DataError, match=match) as info:
        prepare_data([str(s) for s in sources], DataConfig(tokenizer=None, **options), out)
    message = str(info.value)
    assert "\n" not in message
    assert not (out / "data.txt").exists() and not (out / "train.jsonl").exists()
    return message


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_missing_file(tmp_path):
    fails(tmp_path, [tmp_path / "nope.csv"], r"nope.csv does not exist; check the path")


def test_glob_matching_nothing(tmp_path):
    fails(tmp_path, [tmp_path / "*.csv"], r"no files match .*\*.csv")


def test_folder_without_data_files(tmp_path):
    (tmp_path / "empty").mkdir()
    fails(tmp_path, [tmp_path / "empty"], r"no data files in folder .*empty")


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4,
        bytes(range(128, 256)) * 20,  # no NUL bytes, but nothing like text either
    ],
)
def test_binary_file(tmp_path, data):
    src = write(tmp_path / "pic.txt", data)
    fails(tmp_path, [src], r"pic.txt is not a text file .*; pass a CSV, TSV, JSON, JSONL")


def test_zip_archive(tmp_path):
    src = write(tmp_path / "d.csv", b"PK\x03\x04" + b"\x00" * 40)
    fails(tmp_path, [src], r"d.csv is a zip archive .*unzip or export it as CSV")


def test_invalid_utf8_names_the_line_and_the_way_out(tmp_path):
    src = write(tmp_path / "d.txt", "caf\u00e9 ok\nfine\n".encode() + b"na\xefve\nmore\n")
    message = fails(tmp_path, [src], r"d.txt is not valid utf-8 at line 3 \(byte 0xef\)")
    assert "--encoding" in message and "--errors replace" in message
    config = DataConfig(tokenizer=None, errors="replace")
    result = prepare_data([str(src)], config, tmp_path / "replaced")
    assert result.kept == 4
    assert "na\ufffdve" in (tmp_path / "replaced" / "data.txt").read_text()
    config = DataConfig(tokenizer=None, encoding="latin-1", val_fraction=0)
    prepare_data([str(write(tmp_path / "l.txt", b"na\xefve\n"))], config, tmp_path / "latin")
    assert (tmp_path / "latin" / "data.txt").read_text() == "na\u00efve\n"


def test_utf16_is_named(tmp_path):
    src = write(tmp_path / "d.txt", "hello\n".encode("utf-16"))
    fails(tmp_path, [src], r"d.txt is UTF-16 text; pass --encoding utf-16")
    result = prepare_data([str(src)], DataConfig(tokenizer=None, encoding="utf-16"), tmp_path / "o")
    assert result.kept == 1


@pytest.mark.parametrize(
    "text, line",
    [
        ('id,text\n1,"fine"\n2,"never closed\n3,"fine"\n4,"fine"\n', 3),  # closes on a later quote
        ('id,text\n1,"fine"\n2,"fine"\n3,"never closed\n4,plain\n', 4),  # runs to the end
        ('id,text\r\n1,"ok\r\nstill ok"\r\n2,"open\r\n', 4),  # after a quoted newline
    ],
)
def test_unbalanced_quotes_name_the_line(tmp_path, text, line):
    src = write(tmp_path / "bad.csv", text)
    fails(tmp_path, [src], rf"(quote|quoting) in .*bad.csv.* line {line}\b")


def test_missing_column_lists_columns(tmp_path, seed_csv):
    message = fails(tmp_path, [seed_csv], r"column 'Jokes' not found in", column="Jokes")
    assert message.endswith("onelinefun.csv; columns are: ID, Joke (use --column NAME)")


def test_column_match_ignores_case(tmp_path, seed_csv):
    config = DataConfig(tokenizer=None, column="joke")
    assert prepare_data([str(seed_csv)], config, tmp_path / "o").kept == 2948


def test_ambiguous_columns_are_listed(tmp_path):
    src = write(tmp_path / "qa.csv", "question,answer\nwhy is it so,because it is so\n")
    fails(
        tmp_path,
        [src],
        r"cannot tell which column of .*qa.csv holds the text; "
        r"columns are: question, answer \(use --column NAME\)",
    )


def test_nothing_left_after_filtering(tmp_path):
    src = write(tmp_path / "d.txt", "a\nbb\n\n   \nbb\n")
    fails(
        tmp_path,
        [src],
        r"no examples left in .*d.txt: 5 read, all dropped "
        r"\(empty 2, too short 3\)",
        min_chars=3,
    )


def test_empty_csv(tmp_path):
    fails(tmp_path, [write(tmp_path / "e.csv", "")], r"e.csv is empty")


def test_header_only_csv(tmp_path):
    fails(tmp_path, [write(tmp_path / "h.csv", "text\n")], r"no examples left in .*h.csv: 0 read")


def test_invalid_json_names_the_line(tmp_path):
    fails(
        tmp_path,
        [write(tmp_path / "d.jsonl", '{"text": "a"}\n{"text": \n')],
        r"invalid JSON in .*d.jsonl at line 2",
    )
    fails(
        tmp_path,
        [write(tmp_path / "d.json", '[\n  {"text": "a"},\n  oops\n]')],
        r"invalid JSON in .*d.json at line 3",
    )


def test_non_text_json_field(tmp_path):
    src = write(tmp_path / "d.jsonl", '{"text": {"nested": 1}}\n')
    fails(tmp_path, [src], r"field 'text' in .*d.jsonl line 1 is a JSON object, not text")


def test_broken_gzip(tmp_path):
    src = write(tmp_path / "d.txt.gz", b"\x1f\x8b\x08\x00broken")
    fails(tmp_path, [src], r"d.txt.gz is not a valid gzip file")


@pytest.mark.parametrize(
    "options",
    [
        dict(val_fraction=1.0),
        dict(val_fraction=-0.1),
        dict(min_chars=-1),
        dict(min_chars=10, max_chars=5),
        dict(split="sentences"),
        dict(format="xml"),
        dict(errors="skip"),
        dict(encoding="klingon"),
        dict(context=0),
        dict(max_download_mb=0),
    ],
)
def test_bad_config_values(options):
    with pytest.raises(UsageError):
        DataConfig(**options)
