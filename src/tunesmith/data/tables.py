"""Records with named fields (CSV/TSV rows, JSON/JSONL objects) and which one holds the text."""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tunesmith.data.examples import Example
from tunesmith.errors import DataError

# Column/field names that say "the text is here", most telling first.
TEXT_NAMES = (
    "text",
    "joke",
    "content",
    "body",
    "sentence",
    "message",
    "document",
    "story",
    "quote",
    "review",
    "comment",
    "line",
    "post",
    "tweet",
    "description",
    "passage",
    "paragraph",
)
SAMPLE_ROWS = 500


def parse_csv(
    open_lines: Callable[[], Iterator[str]], name: str, delimiter: str, column: str | None
) -> tuple[Iterator[Example], str]:
    """One example per data row from the chosen column (picked from the first rows), streamed;
    the first row is the header. `open_lines` gives the file's lines from the start."""
    _allow_fields_as_large_as_the_input()
    quoting = csv.QUOTE_MINIMAL
    if delimiter == "\t" and not _reads_cleanly(open_lines(), name, delimiter):
        # TSV files often hold bare quotes in their text (`"Hi," she said`): read them as text.
        quoting = csv.QUOTE_NONE
    rows = _read_rows(open_lines(), name, delimiter, quoting)
    header = next(rows, None)
    if header is None:
        raise DataError(f"{name} is empty; pass a file with a header row and data rows")
    names = [h.strip() for h in header[1]]
    sample = list(itertools.islice(rows, SAMPLE_ROWS))
    index = choose_field(names, [r for _, r in sample], column, name, "column")

    def examples() -> Iterator[Example]:
        for number, (line, row) in enumerate(itertools.chain(sample, rows), start=1):
            yield Example(row[index] if index < len(row) else "", name, number, line)

    return examples(), names[index]


def _allow_fields_as_large_as_the_input() -> None:
    # The csv module refuses fields over 128 KB by default, which a long quoted text can be;
    # the input is bounded already (--max-input-mb), and a quote left open is found at the end
    # of the file instead ("unexpected end of data").
    limit = 2**31 - 1
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)


def _reads_cleanly(lines: Iterator[str], name: str, delimiter: str) -> bool:
    try:
        for _ in _read_rows(lines, name, delimiter, csv.QUOTE_MINIMAL):
            pass
    except DataError:
        return False
    return True


def _read_rows(
    lines: Iterator[str], name: str, delimiter: str, quoting: int
) -> Iterator[tuple[int, list[str]]]:
    """The rows (the header first), each with the line it starts on; blank lines skipped."""
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise _csv_error(e, name, start, reader.line_num) from None
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        yield start, row


def _csv_error(e: csv.Error, name: str, start: int, end: int) -> DataError:
    message = str(e)
    if "unexpected end of data" in message or "EOF" in message:
        return DataError(
            f"unbalanced quote in {name}: the quoted field on line {start} is never closed; "
            'close it, or double the quotes inside it ("")'
        )
    if start < end:
        # A quoted field ran over line ends and broke on a later quote: most likely the quote
        # opened on `start` was never closed and paired with one further down.
        return DataError(
            f"unbalanced quote in {name}: the quoted field opened on line {start} runs on to "
            f"line {end} and breaks there ({message}); close the quote on line {start}, or "
            'double the quotes inside it ("")'
        )
    return DataError(
        f"bad quoting in {name} at line {start} ({message}); a quote that opens a field must close "
        'it, and quotes inside a quoted field must be doubled ("")'
    )


def parse_jsonl(
    lines: Iterable[str], name: str, field: str | None
) -> tuple[list[Example], str | None]:
    """One example per non-blank line, each a JSON string or object."""
    records: list[tuple[int, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(
                f"invalid JSON in {name} at line {number} ({e.msg}, column {e.colno}); "
                "JSONL needs one JSON value per line"
            ) from None
    if not records:
        raise DataError(f"{name} is empty; pass a file with one JSON record per line")
    return _from_records(records, name, field, by_line=True)


def parse_json(text: str, name: str, field: str | None) -> tuple[list[Example], str | None]:
    """A JSON list of strings or objects (or an object holding exactly one such list)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"invalid JSON in {name} at line {e.lineno} ({e.msg}, column {e.colno}); "
            "fix the file, or name it .jsonl if it has one record per line"
        ) from None
    if isinstance(data, dict):
        lists = [key for key, value in data.items() if isinstance(value, list)]
        if len(lists) == 1:
            data = data[lists[0]]
        elif lists:
            raise DataError(
                f"{name} holds several lists ({', '.join(lists)}); pass one list of records, "
                "or one record per line as JSONL"
            )
        else:
            data = [data]
    if not isinstance(data, list):
        raise DataError(f"{name} holds a single JSON value, not a list of records")
    return _from_records(list(enumerate(data, start=1)), name, field, by_line=False)


def parse_data_run(lines: Iterable[str], name: str) -> Iterator[Example]:
    """A data run's train.jsonl / val.jsonl, keeping where each example first came from."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            example = Example(
                record["text"],
                record.get("source") or name,
                record.get("row") or number,
                record.get("line"),
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise DataError(
                f"{name} line {number} is not a JSON object with a 'text' field; "
                "rerun `tunesmith data` to rebuild it"
            ) from None
        yield example


def _from_records(
    records: list[tuple[int, Any]], name: str, field: str | None, by_line: bool
) -> tuple[list[Example], str | None]:
    examples = []
    if all(isinstance(r, str) for _, r in records):
        for row, (number, record) in enumerate(records, start=1):
            examples.append(Example(record, name, row, number if by_line else None))
        return examples, None
    keys: dict[str, None] = {}
    for number, record in records:
        if not isinstance(record, (dict, str)):
            where = f"line {number}" if by_line else f"item {number}"
            raise DataError(
                f"{name} {where} is a JSON {type(record).__name__}; each record must be a "
                "string or an object with a text field"
            )
        if isinstance(record, dict):
            keys.update(dict.fromkeys(record))
    names = list(keys)
    if field is not None and field not in keys and "." in field:
        path = field.split(".")
        values = [_lookup(r, path) for _, r in records]
        if all(v is None for v in values):
            raise _missing(field, name, names, "field")
        chosen = field
    else:
        sample = [
            [_scalar(r.get(k)) if isinstance(r, dict) else "" for k in names]
            for _, r in records[:SAMPLE_ROWS]
        ]
        chosen = names[choose_field(names, sample, field, name, "field")]
        values = [r.get(chosen) if isinstance(r, dict) else r for _, r in records]
    for row, ((number, _), value) in enumerate(zip(records, values, strict=True), start=1):
        if isinstance(value, (dict, list)):
            where = f"line {number}" if by_line else f"item {number}"
            raise DataError(
                f"field {chosen!r} in {name} {where} is a JSON "
                f"{'object' if isinstance(value, dict) else 'list'}, not text; "
                "pick a text field with --field NAME (dotted for nested fields, e.g. a.b)"
            )
        text = "" if value is None else value if isinstance(value, str) else json.dumps(value)
        examples.append(Example(text, name, row, number if by_line else None))
    return examples, chosen


def _lookup(record: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else ""


def choose_field(
    names: list[str], rows: list[list[str]], wanted: str | None, source: str, kind: str
) -> int:
    """Index of the column/field holding the text: the one asked for, else one named like text,
    else the only one whose values read like prose; otherwise an error listing them."""
    if wanted is not None:
        if wanted in names:
            return names.index(wanted)
        folded = [i for i, n in enumerate(names) if n.casefold() == wanted.casefold()]
        if len(folded) == 1:
            return folded[0]
        raise _missing(wanted, source, names, kind)
    columns = [[r[i] for r in rows if i < len(r)] for i in range(len(names))]
    for tier in (_exact, _word):
        for text_name in TEXT_NAMES:
            hits = [
                i
                for i, n in enumerate(names)
                if tier(n, text_name) and not _mostly_numbers(columns[i])
            ]
            if hits:
                return hits[0]
    prose = [i for i, values in enumerate(columns) if _reads_like_prose(values)]
    if len(prose) == 1:
        return prose[0]
    listed = ", ".join(names) if names else "(none)"
    raise DataError(
        f"cannot tell which {kind} of {source} holds the text; {kind}s are: {listed} "
        f"(use --{kind} NAME)"
    )


def _missing(wanted: str, source: str, names: list[str], kind: str) -> DataError:
    listed = ", ".join(names) if names else "(none)"
    return DataError(
        f"{kind} {wanted!r} not found in {source}; {kind}s are: {listed} (use --{kind} NAME)"
    )


def _exact(name: str, text_name: str) -> bool:
    return name.casefold() in (text_name, text_name + "s")


def _word(name: str, text_name: str) -> bool:
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", name).casefold()
    return any(w in (text_name, text_name + "s") for w in re.split(r"[^a-z0-9]+", words))


def _reads_like_prose(values: list[str]) -> bool:
    """Mostly non-numeric, and at least half of them several words long."""
    values = [v.strip() for v in values if v.strip()]
    worded = sum(1 for v in values if len(v.split()) >= 3)
    return bool(values) and not _mostly_numbers(values) and worded >= len(values) * 0.5


def _mostly_numbers(values: list[str]) -> bool:
    values = [v.strip() for v in values if v.strip()]
    return bool(values) and sum(1 for v in values if _is_number(v)) > len(values) * 0.5


def _is_number(value: str) -> bool:
    try:
        float(value.replace(",", ""))
        return True
    except ValueError:
        return False
