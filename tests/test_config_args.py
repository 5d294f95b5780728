"""Flags built from config dataclasses: types, choices, defaults left to the dataclass."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from tunesmith.cli.config_args import add_config_arguments, add_config_groups, given_options
from tunesmith.options import option


@dataclass(frozen=True)
class Example:
    length: int = option(70, "new tokens per sample")
    top_p: float | None = option(None, "nucleus", default_help="off")
    mode: str = option("fast", "how", choices=("fast", "slow"))
    stop: tuple[str, ...] = option((), "stop text", repeat=True, metavar="TEXT")
    targets: tuple[str, ...] = option(("a", "b"), "layers")
    lora: bool = option(False, "adapters only")
    progress: bool = option(True, "show a bar")
    num: int = option(1, "samples", flags=("-n", "--num"))
    secret: str = option("", "not a flag", cli=False)
    plain: int = 3


def parse(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Example)
    return given_options(parser.parse_args(list(argv)), Example)


def test_only_given_values_come_back_typed():
    assert parse() == {}
    got = parse("--length", "5", "--top-p", "0.5", "--stop", "x", "--stop", "y", "-n", "2")
    assert got == {"length": 5, "top_p": 0.5, "stop": ("x", "y"), "num": 2}
    assert parse("--targets", "c", "d", "--lora", "--no-progress") == {
        "targets": ("c", "d"),
        "lora": True,
        "progress": False,
    }
    assert Example(**parse("--length", "9")).length == 9


def test_bad_values_and_unknown_flags_are_refused(capsys):
    for argv in (["--mode", "medium"], ["--length", "x"], ["--secret", "s"], ["--plain", "1"]):
        with pytest.raises(SystemExit) as e:
            parse(*argv)
        assert e.value.code == 2
    assert "invalid choice: 'medium'" in capsys.readouterr().err


def test_help_shows_defaults_from_the_dataclass(capsys):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Example)
    text = " ".join(parser.format_help().split())
    assert "new tokens per sample (default: 70)" in text
    assert "nucleus (default: off)" in text
    assert "layers (default: a b)" in text
    assert "--no-progress" in text and "--secret" not in text


def test_groups_put_flags_under_headings_and_numbers_read_n_or_x():
    parser = argparse.ArgumentParser()
    add_config_groups(parser, Example, {"sampling": "top_p stop", "switches": "lora progress"})
    text = parser.format_help().split("options:")[1]  # below the usage line
    assert text.index("--length N") < text.index("sampling:") < text.index("--top-p X")
    assert text.index("switches:") < text.index("--lora") and "--stop TEXT" in text
    assert parse("--num", "3") == {"num": 3}
    with pytest.raises(AssertionError, match="no fields"):
        add_config_groups(argparse.ArgumentParser(), Example, {"x": "lenght"})
