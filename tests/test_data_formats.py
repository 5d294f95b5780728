"""Reading each format into examples: the seed CSV, CSV/TSV, JSON/JSONL, plain text, gzip."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tunesmith.data import DataConfig, prepare_data
from tunesmith.errors import DataError

NO_TOKENS = dict(tokenizer=None)


def prepare(tmp_path: Path, sources, **options):
    config = DataConfig(**{**NO_TOKENS, **options})
    out = tmp_path / "out"
    return prepare_data([str(s) for s in sources], config, out), out


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_seed_csv_gives_one_joke_per_line(tmp_path, seed_csv):
    raw = seed_csv.read_bytes()
    assert b"\r\n" in raw  # the seed has CRLF line endings
    result, out = prepare(tmp_path, [seed_csv], column="Joke")
    assert (result.read, result.kept, result.dropped["duplicate"]) == (2950, 2948, 2)
    assert result.sources[0].column == "Joke" and result.sources[0].format == "csv"
    lines = (out / "data.txt").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == 2948
    assert (
        lines[0] == "I just asked my husband if he remembers what today is... Scaring men is easy."
    )
    assert not any("\r" in line for line in lines)
    train, val = jsonl(out / "train.jsonl"), jsonl(out / "val.jsonl")
    assert len(train) + len(val) == 2948 and len(val) == round(2948 * 0.05)
    assert not {r["text"] for r in train} & {r["text"] for r in val}
    assert train[0] == {"text": lines[0], "source": str(seed_csv), "row": 1, "line": 2}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["examples"]["dropped"]["duplicate"] == 2
    assert stats["config"]["val_fraction"] == 0.05
    assert (out / "lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seed_csv_column_is_picked_automatically(tmp_path, seed_csv):
    result, out = prepare(tmp_path, [seed_csv])
    assert result.sources[0].column == "Joke" and result.kept == 2948


def test_quoted_newlines_stay_in_jsonl_and_become_spaces_in_data_txt(tmp_path):
    src = write(
        tmp_path / "q.csv", 'id,text\r\n1,"first line\r\nsecond, line"\r\n2,"say ""hi"""\r\n'
    )
    result, out = prepare(tmp_path, [src])
    assert (out / "data.txt").read_text() == 'first line second, line\nsay "hi"\n'
    rows = jsonl(out / "train.jsonl") + jsonl(out / "val.jsonl")
    assert sorted(r["text"] for r in rows) == ["first line\nsecond, line", 'say "hi"']
    assert {r["row"]: r["line"] for r in rows} == {1: 2, 2: 4}


def test_bom_and_sniffed_semicolons(tmp_path):
    src = write(tmp_path / "semi.csv", "\ufefftitle;body\nA;one two three\nB;four five six\n")
    result, out = prepare(tmp_path, [src])
    assert result.sources[0].column == "body"
    assert (out / "data.txt").read_text() == "one two three\nfour five six\n"


def test_tsv(tmp_path):
    src = write(tmp_path / "d.tsv", "label\tsentence\npos\tgood, very good\nneg\tbad\n")
    result, out = prepare(tmp_path, [src])
    assert result.sources[0].format == "tsv" and result.sources[0].column == "sentence"
    assert (out / "data.txt").read_text() == "good, very good\nbad\n"


def test_the_only_prose_column_is_chosen(tmp_path):
    src = write(
        tmp_path / "d.csv",
        "id,score,quip\n1,3,a cat walked in\n2,5,the dog walked out again\n3,4,x y z\n",
    )
    result, _ = prepare(tmp_path, [src])
    assert result.sources[0].column == "quip"


def test_jsonl_with_field_and_nested_field(tmp_path):
    src = write(
        tmp_path / "d.jsonl",
        '{"id": 1, "msg": {"body": "hello"}, "note": "x"}\n\n{"id": 2, "msg": {"body": "bye"}}\n',
    )
    result, out = prepare(tmp_path, [src], field="msg.body")
    assert (out / "data.txt").read_text() == "hello\nbye\n"
    rows = jsonl(out / "train.jsonl") + jsonl(out / "val.jsonl")
    assert sorted((r["row"], r["line"]) for r in rows) == [(1, 1), (2, 3)]
    result, out = prepare(tmp_path, [src], field="note")
    assert result.kept == 1 and result.dropped["empty"] == 1


def test_jsonl_picks_text_field_and_json_list(tmp_path):
    a = write(tmp_path / "a.jsonl", '{"id": 1, "text": "one"}\n{"id": 2, "text": "two"}\n')
    b = write(tmp_path / "b.json", json.dumps({"data": [{"content": "three"}, "four"]}))
    c = write(tmp_path / "c.json", json.dumps(["five", "six"]))
    result, out = prepare(tmp_path, [a, b, c])
    assert [s.column for s in result.sources] == ["text", "content", None]
    assert [s.format for s in result.sources] == ["jsonl", "json", "json"]
    assert (out / "data.txt").read_text() == "one\ntwo\nthree\nfour\nfive\nsix\n"


def test_json_file_holding_jsonl_is_read_as_jsonl(tmp_path):
    src = write(tmp_path / "d.json", '{"text": "a"}\n{"text": "b"}\n')
    result, _ = prepare(tmp_path, [src])
    assert result.sources[0].format == "jsonl" and result.kept == 2


@pytest.mark.parametrize(
    "split, expected",
    [
        ("lines", ["first", "second", "third", "fourth"]),
        ("paragraphs", ["first\nsecond", "third\nfourth"]),
        ("file", ["first\nsecond\n\n  \nthird\nfourth"]),
    ],
)
def test_plain_text_splits(tmp_path, split, expected):
    src = write(tmp_path / "d.txt", "first\r\nsecond\r\n\r\n  \r\nthird\r\nfourth\r\n")
    result, out = prepare(tmp_path, [src], split=split, val_fraction=0)
    assert [r["text"] for r in jsonl(out / "train.jsonl")] == expected
    assert result.dropped["empty"] == (2 if split == "lines" else 0)


def test_gzip_of_each_format(tmp_path):
    (tmp_path / "in").mkdir()
    for name, text in [
        ("a.csv.gz", "text\nalpha\n"),
        ("b.jsonl.gz", '{"text": "beta"}\n'),
        ("c.txt.gz", "gamma\n"),
    ]:
        (tmp_path / "in" / name).write_bytes(gzip.compress(text.encode()))
    result, out = prepare(tmp_path, [tmp_path / "in"])
    assert [s.format for s in result.sources] == ["csv", "jsonl", "text"]
    assert (out / "data.txt").read_text() == "alpha\nbeta\ngamma\n"


def test_folder_and_glob(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    write(folder / "a.txt", "one\n")
    write(folder / "sub" / "b.txt", "two\n")
    write(folder / "notes.png", "ignored: not a data extension\n")
    write(folder / ".hidden.txt", "ignored: hidden\n")
    result, out = prepare(tmp_path, [folder])
    assert (out / "data.txt").read_text() == "one\ntwo\n"
    result, out = prepare(tmp_path, [str(folder / "**" / "*.txt")])
    assert (out / "data.txt").read_text() == "one\ntwo\n"


def test_no_extension_table_is_detected(tmp_path):
    src = write(tmp_path / "export", "id,text\n1,hello there\n2,general kenobi\n3,so uncivilized\n")
    result, out = prepare(tmp_path, [src])
    assert result.sources[0].format == "csv" and result.kept == 3
    prose = write(tmp_path / "prose", "Hello, world.\nNo commas here\nOne, two, three.\n")
    result, out = prepare(tmp_path, [prose])
    assert result.sources[0].format == "text" and result.kept == 3


def test_forced_format(tmp_path):
    src = write(tmp_path / "d.dat", "a\tb\n")
    result, out = prepare(tmp_path, [src], format="text")
    assert (out / "data.txt").read_text() == "a\tb\n"


def test_missing_field_lists_fields(tmp_path):
    src = write(tmp_path / "d.jsonl", '{"a": "x", "b": "y"}\n')
    with pytest.raises(DataError, match=r"field 'c' not found in .*d.jsonl; fields are: a, b"):
        prepare(tmp_path, [src], field="c")


def test_one_column_csv_with_semicolons_in_the_text(tmp_path):
    src = write(tmp_path / "d.csv", "text\nhello; world\nfoo; bar\nbaz; qux\n")
    result, out = prepare(tmp_path, [src])
    assert (out / "data.txt").read_text() == "hello; world\nfoo; bar\nbaz; qux\n"


def test_column_and_field_stand_in_for_each_other(tmp_path):
    src = write(tmp_path / "d.jsonl", '{"a": "x", "b": "y"}\n')
    result, out = prepare(tmp_path, [src], column="b")
    assert (out / "data.txt").read_text() == "y\n"


def test_a_data_run_folder_keeps_the_original_rows(tmp_path):
    src = write(tmp_path / "d.csv", "id,text\n1,one\n2,two\n3,three\n")
    prepare_data([str(src)], DataConfig(tokenizer=None), tmp_path / "run1")
    result, out = prepare(tmp_path, [tmp_path / "run1"], val_fraction=0)
    assert result.kept == 3 and [s.column for s in result.sources] == ["text", "text"]
    rows = sorted((r["row"], r["line"], r["source"]) for r in jsonl(out / "train.jsonl"))
    assert rows == [(1, 2, str(src)), (2, 3, str(src)), (3, 4, str(src))]


def test_tsv_with_bare_quotes_in_the_text(tmp_path):
    src = write(tmp_path / "d.tsv", 'id\ttext\n1\t"Hi," she said\n2\tquoted "word" here\n')
    result, out = prepare(tmp_path, [src])
    assert (out / "data.txt").read_text() == '"Hi," she said\nquoted "word" here\n'
