"""Every number flag refuses nan and infinity with one line (range checks alone let them
through: every comparison with nan is false), and a prompt that is not UTF-8 is named."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tunesmith.cli import main
from tunesmith.data import DataConfig
from tunesmith.errors import UsageError
from tunesmith.generate import GenerationConfig
from tunesmith.train.config import FinetuneConfig


@pytest.mark.parametrize(
    "args, flag",
    [
        (["generate", "--temperature", "nan"], "--temperature"),
        (["generate", "--temperature", "inf"], "--temperature"),
        (["generate", "--top-p", "nan"], "--top-p"),
        (["generate", "--repetition-penalty", "inf"], "--repetition-penalty"),
        (["generate", "--repetition-penalty=-inf"], "--repetition-penalty"),
        (["finetune", "--data", "x.csv", "--lr", "nan"], "--lr"),
        (["finetune", "--data", "x.csv", "--lr", "inf"], "--lr"),
        (["finetune", "--data", "x.csv", "--weight-decay", "inf"], "--weight-decay"),
        (["finetune", "--data", "x.csv", "--lora-alpha", "nan"], "--lora-alpha"),
        (["data", "x.csv", "--max-download-mb", "inf"], "--max-download-mb"),
        (["data", "x.csv", "--max-input-mb", "nan"], "--max-input-mb"),
        (["data", "x.csv", "--timeout", "nan"], "--timeout"),
        (["serve", "--timeout", "inf"], "--timeout"),
        (["run", "--kill-after", "nan", "--", "true"], "--kill-after"),
    ],
)
def test_nan_and_infinity_are_refused_in_one_line(args, flag, workspace, capsys):
    code = main(args if args[0] == "run" else [*args, "--no-run"])  # run has no --no-run
    err = capsys.readouterr().err
    assert code == 2
    assert f"{flag} must be a finite number, not" in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "make",
    [
        lambda: GenerationConfig(temperature=float("nan")),
        lambda: GenerationConfig(top_p=float("inf")),
        lambda: FinetuneConfig(data="x.csv", max_grad_norm=float("nan")),
        lambda: DataConfig(val_fraction=float("nan")),
    ],
)
def test_the_library_refuses_them_too(make):
    with pytest.raises(UsageError, match="must be a finite number"):
        make()


def test_a_prompt_that_is_not_utf8_is_named(tiny_model_dir, workspace):
    # Bytes in argv, as a shell in a Latin-1 terminal passes them.
    argv = [sys.executable, "-m", "tunesmith", "generate", "--model", str(tiny_model_dir),
            "--prompt", b"caf\xe9 au lait", "--length", "2", "--no-run"]  # fmt: skip
    result = subprocess.run(
        argv, capture_output=True, timeout=120, env={**os.environ, "PYTHONUTF8": "1"}
    )
    err = result.stderr.decode()
    assert result.returncode == 2
    assert "--prompt is not valid UTF-8 text (byte 0xe9 at character 4)" in err
    assert err.count("\n") == 1 and "Traceback" not in err
