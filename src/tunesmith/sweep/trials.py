"""A sweep's trials and what it knows of them, kept in the sweep run's `sweep.json` after every
change, so that an interrupted sweep can resume (`--resume runs/N`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import RunError

STATE_FILE = "sweep.json"
FINISHED = ("succeeded", "stopped", "failed")  # kept as they are by --resume


@dataclass
class Trial:
    """One finetune run of the sweep (several runs when it was resumed: `runs`, oldest first)."""

    index: int
    params: dict[str, Any]
    status: str = "pending"  # pending, running, succeeded, stopped, failed, interrupted
    runs: list[int] = field(default_factory=list)
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, metric) evaluations
    note: str = ""
    trained: int = 0  # the last step its metrics recorded (a stopped trial trains on a moment)

    @property
    def name(self) -> str:
        return f"t{self.index}"

    @property
    def run(self) -> int | None:
        return self.runs[-1] if self.runs else None

    @property
    def steps(self) -> int:
        """Steps trained."""
        return max(self.trained, max((s for s, _ in self.curve), default=0))

    def best(self, mode: str) -> float | None:
        values = [v for s, v in self.curve if s > 0]  # step 0 is the untrained model
        if not values:
            return None
        return min(values) if mode == "min" else max(values)


@dataclass
class SweepState:
    """Everything a sweep needs to resume: its settings, command and trials."""

    settings: dict[str, Any]
    space: dict[str, str]
    command: list[str]
    trials: list[Trial]

    def run_name(self, trial: Trial) -> str:
        """The name of the trial's runs: `sweepN-tK` (`runs/sweepN-tK` names the newest)."""
        return f"{self.settings['trial_prefix']}-{trial.name}"

    def save(self, folder: Path) -> None:
        path = folder / STATE_FILE
        tmp = path.with_name(f"{STATE_FILE}.{os.getpid()}.tmp")
        data = asdict(self)
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, folder: Path, ref: str) -> SweepState:
        path = folder / STATE_FILE
        if not path.is_file():
            raise RunError(f"--resume {ref}: not a sweep (no {STATE_FILE} in {folder})")
        data = json.loads(path.read_text())
        trials = [
            Trial(**{**t, "curve": [tuple(p) for p in t["curve"]]}) for t in data.pop("trials")
        ]
        return cls(**data, trials=trials)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a trial's run left a complete checkpoint to resume from: finetune's
    `checkpoints/step-N/trainer_state.json` (tunesmith.train.resume_state, which this layer
    does not import)."""
    return any((run_dir / "checkpoints").glob("step-*/trainer_state.json"))


def trial_argv(command: list[str], trial: Trial, resume: bool) -> list[str]:
    """The trial's `finetune ...` arguments: the sweep's command with the trial's values, or
    with `resume`, continuing its last run from its checkpoints (with the settings it started
    with)."""
    if resume:
        return [*command, "--resume", f"runs/{trial.run}"]
    argv = list(command)
    for name, value in trial.params.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    return argv


def first_evaluation(command: list[str], trials: list[Trial]) -> int | None:
    """The step of the trials' first evaluation, when `--eval-every` fixes it (in the command,
    or swept: the smallest value); None when they evaluate at epoch ends only."""
    values = [t.params["eval_every"] for t in trials if t.params.get("eval_every")]
    for i, arg in enumerate(command):
        if arg == "--eval-every" and i + 1 < len(command):
            values.append(command[i + 1])
        elif arg.startswith("--eval-every="):
            values.append(arg.partition("=")[2])
    steps = [int(v) for v in values if str(v).isdigit() and int(v) > 0]
    return min(steps) if steps else None


def read_progress(metrics_path: Path, metric: str) -> tuple[list[tuple[int, float]], int]:
    """(step, value) of each evaluation in a run's metrics.jsonl, and the last step it
    recorded (a line still being written is left for the next look)."""
    try:
        lines = metrics_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return [], 0
    return parse_progress(lines, metric)


def parse_progress(lines: list[str], metric: str) -> tuple[list[tuple[int, float]], int]:
    """`read_progress` of metrics.jsonl lines."""
    curve, last = [], 0
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            continue
        last = max(last, record["step"])
        value = record.get(metric)
        if isinstance(value, (int, float)):
            curve.append((record["step"], float(value)))
    return curve, last
