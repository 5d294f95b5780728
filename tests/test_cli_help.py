"""The command line as `--help` shows it: every flag explained, defaults from the configs, one
meaning per short flag, and a start that does not wait for torch."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from tunesmith.cli import build_parser, main
from tunesmith.cli._common import RefusedFlag


def parsers(parser: argparse.ArgumentParser, name: str = "tunesmith"):
    """(name, parser) for the command and every subcommand, its flags added."""
    parser.with_flags()
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from parsers(subparser, f"{name} {sub}")


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_every_flag_and_subcommand_has_help():
    seen = 0
    for name, parser in parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{name} {choice.dest} has no help"
            elif not isinstance(action, RefusedFlag):
                assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
                seen += 1
    assert seen > 80  # all subcommands were walked, their config flags included


def test_help_shows_defaults_from_the_config_classes(capsys):
    text = help_text(capsys, "finetune")
    assert "--epochs N passes over the data (default: 3)" in text
    assert "(default: 1e-4 full, 1e-3 LoRA, per size from scratch)" in text
    for heading in ("optimization:", "LoRA:", "devices:", "several processes (torchrun):"):
        assert heading in text
    text = help_text(capsys, "generate")
    assert "new tokens per sample (default: 70)" in text
    assert "-n N, --num-samples N samples to generate (default: 1)" in text
    assert "--batch-size N samples decoded together (default: 8)" in text
    assert "--format {text,jsonl}" in text and "sampling:" in text
    text = help_text(capsys, "data")
    assert "share held out for validation (default: 0.05)" in text
    assert "--workspace DIR" in text and "--output-dir DIR" in text


def test_short_flags_mean_one_thing():
    meanings: dict[str, set[str]] = {}
    for _, parser in parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, RefusedFlag):
                continue
            longs = tuple(s for s in action.option_strings if s.startswith("--"))
            for short in (s for s in action.option_strings if not s.startswith("--")):
                meanings.setdefault(short, set()).update(longs)
    assert meanings["-m"] == {"--mount"}
    assert all(len(longs) == 1 for short, longs in meanings.items() if short != "-h"), meanings


def test_finetune_dash_m_says_to_use_model(workspace, capsys):
    with pytest.raises(SystemExit) as e:
        main(["finetune", "-m", "gpt2", "--data", "x.csv"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tunesmith finetune: error: finetune has no -m: use --model")
    assert err.count("\n") == 1
    assert not (workspace / "runs").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "x.csv", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (["finetune", "--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
        (["runs", "show"], "the following arguments are required: N"),
    ],
)
def test_a_bad_command_line_is_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "--help" in err


def test_a_bad_launch_option_is_one_line(workspace, capsys):
    assert main(["finetune", "--data", "x.csv", "--nproc", "0"]) == 2
    assert capsys.readouterr().err.strip() == "tunesmith: error: --nproc must be at least 1, not 0"
    assert not (workspace / "runs").exists()


def test_listing_runs_does_not_import_torch(workspace):
    code = (
        "import sys; from tunesmith.cli import main; main(['runs']); print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip().splitlines()[-1] == "False"
