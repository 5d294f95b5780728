"""What a run page shows beyond the index: a fine-tune's samples and quality report, a data
run's report, and files inside a run's folder (never outside it)."""

from __future__ import annotations

import ast
import csv
import json
import re
from pathlib import Path
from typing import Any

from tunesmith.errors import RunError
from tunesmith.runs import Workspace

SAMPLES_FILE = "samples.jsonl"  # written by the training loop at each --sample-every
QUALITY_FILE = "report.txt"  # the fine-tune's quality report
DATA_STATS_FILE = "stats.json"  # a data run's counts and lengths
IMAGES = ("loss.png", "lengths.png")
SWEEP_RESULTS = "results.csv"  # a sweep's table (tunesmith.sweep.results), best trial first
SWEEP_PLOTS = ("metric_vs_params.png", "val_curves.png")
_REPORT_SAMPLE = re.compile(
    r"^\s*\d+\. (?P<text>(['\"]).*\2)(?P<copy> \[copies a training example\])?$"
)
MAX_SAMPLE_LINES = 200  # the newest sample lines a page shows


class FileRefused(RunError):
    """A path that leaves the run's folder (status 403), or names nothing in it (404)."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


def run_extras(workspace: Workspace, run_id: int) -> dict[str, Any]:
    """The run's samples, quality report, data report, sweep table and images, where it has
    them."""
    folder = workspace.run_dir(run_id)
    extras: dict[str, Any] = {
        "samples": _samples(folder / SAMPLES_FILE),
        "quality": _quality(folder / QUALITY_FILE),
        "data_report": _json(folder / DATA_STATS_FILE),
        "images": [name for name in IMAGES if (folder / name).is_file()],
        "sweep": _sweep(folder) if workspace.get(run_id).kind == "sweep" else None,
    }
    return extras


def _sweep(folder: Path) -> dict[str, Any] | None:
    """A sweep's table as rows of cells ({"header", "rows", "plots"}); the `run` column names
    each trial's run, which the page links."""
    try:
        with open(folder / SWEEP_RESULTS, newline="", encoding="utf-8") as f:
            table = list(csv.reader(f))
    except OSError:
        return None
    if not table:
        return None
    plots = [name for name in SWEEP_PLOTS if (folder / name).is_file()]
    return {"header": table[0], "rows": table[1:], "plots": plots}


def _samples(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines[-MAX_SAMPLE_LINES:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            found.append({"step": record.get("step"), "samples": record.get("samples", [])})
    return found


def _quality(path: Path) -> dict[str, Any] | None:
    """The report's text, and its samples with the copied-from-training flag."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    samples = []
    for line in text.splitlines():
        match = _REPORT_SAMPLE.match(line)
        if match:
            try:
                sample = ast.literal_eval(match["text"])  # a string literal, never code
            except (ValueError, SyntaxError):
                continue
            samples.append({"text": str(sample), "copied": bool(match["copy"])})
    return {"text": text, "samples": samples}


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def file_in_run(workspace: Workspace, run_id: int, relpath: str) -> Path:
    """The file `relpath` names inside run `run_id`'s folder. Refused: absolute paths, `..`,
    and anything (a symlink included) that resolves outside the folder."""
    folder = workspace.run_dir(run_id).resolve()
    parts = Path(relpath).parts
    if not relpath or Path(relpath).is_absolute() or ".." in parts or "\\" in relpath:
        raise FileRefused(f"{relpath!r} is not a path inside run {run_id}'s folder")
    target = (folder / relpath).resolve()
    if not target.is_relative_to(folder):
        raise FileRefused(f"{relpath!r} leads outside run {run_id}'s folder")
    if not target.is_file():
        raise FileRefused(f"run {run_id} has no file {relpath!r}", status=404)
    return target
