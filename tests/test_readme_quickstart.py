"""The README's first command, the offline quickstart, run as written with no network.

Training is shortened for CI (`--epochs N` becomes `--max-steps`, TUNESMITH_QUICKSTART_STEPS or
4); set TUNESMITH_QUICKSTART_FULL=1 to run it exactly as the README says.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

from tunesmith.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def first_command() -> str:
    """The first ```bash block of the README: one line of commands joined by &&."""
    block = re.search(r"```bash\n(.*?)\n```", README.read_text(encoding="utf-8"), re.S)
    assert block, "README.md has no ```bash block"
    return block.group(1).strip()


def tunesmith_commands(line: str) -> list[list[str]]:
    """The tunesmith commands of the line, in order (the install steps before them left out)."""
    commands = [shlex.split(part) for part in line.split(" && ")]
    return [c[1:] for c in commands if c and c[0] == "tunesmith"]


def shortened(args: list[str]) -> list[str]:
    if os.environ.get("TUNESMITH_QUICKSTART_FULL") == "1" or "--epochs" not in args:
        return args
    i = args.index("--epochs")
    steps = os.environ.get("TUNESMITH_QUICKSTART_STEPS", "4")
    return [*args[:i], "--max-steps", steps, *args[i + 2 :]]


def test_the_first_command_is_the_offline_workflow():
    line = first_command()
    assert line.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install")
    names = [c[0] for c in tunesmith_commands(line)]
    assert names == ["data", "finetune", "generate", "runs"]
    assert "--from-scratch" in line and "gpt2" not in line.replace("--from-scratch tiny", "")
    assert not re.search(r"runs/\d", line)  # runs/last: works whatever the workspace holds


def test_the_quickstart_runs_offline(tmp_path, monkeypatch, no_network, seed_csv, capsys):
    workspace = tmp_path / "repo"
    workspace.mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "onelinefun.csv").symlink_to(seed_csv)  # ../shared/data
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("TUNESMITH_HOME", raising=False)
    outputs = []
    for args in tunesmith_commands(first_command()):
        code = main(shortened(args))
        out, err = capsys.readouterr()
        assert code == 0, f"tunesmith {' '.join(args)}: {err}"
        assert "warning" not in err and "Retry" not in err
        outputs.append(out)
    data_out, finetune_out, generate_out, runs_out = outputs
    assert "Tokens (gpt2)" in data_out
    assert "validation perplexity" in finetune_out
    assert (workspace / "runs" / "2" / "model" / "model.safetensors").is_file()
    samples = (workspace / "runs" / "3" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 5
    records = [json.loads(s) for s in samples]
    assert all("<|endoftext|>" not in r["text"] for r in records)  # one text per sample
    if os.environ.get("TUNESMITH_QUICKSTART_FULL") == "1":  # trained: each ends as a joke does
        assert all(r["finish_reason"] == "eos" for r in records)
    assert all(kind in runs_out for kind in ("data", "finetune", "generate"))
    assert not any(no_network.iterdir())  # nothing downloaded
