"""`RunContext`: what library code (e.g. `finetune`) needs of the run it executes in, whether a
recorded run (`recorded_run`'s `RunHandle`) or a plain folder (`FolderRun`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from tunesmith.runs.references import is_run_reference, resolve_reference


class RunContext(Protocol):
    dir: Path  # where outputs go
    final_metrics: dict[str, Any]  # the metrics to keep when the run ends

    def use(self, ref: str, allow_unfinished: bool = False) -> str:
        """The path a run reference names (recording the lineage, where recorded)."""
        ...

    def set_main_output(self, relpath: str) -> None: ...

    def log_metrics(self, values: dict[str, Any], step: int | None = None) -> None: ...

    def set_summary(self, text: str) -> None: ...


class FolderRun:
    """A plain output folder standing in for a run, for library use without the run store:
    metrics go to `metrics.jsonl` in the folder, run references resolve without being recorded,
    and what only a recorded run keeps (main output, summary) stays in memory."""

    def __init__(self, folder: str | Path):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.final_metrics: dict[str, Any] = {}
        self.summary: str | None = None
        self.main_output = "."

    def use(self, ref: str, allow_unfinished: bool = False) -> str:
        if not is_run_reference(ref):
            return ref
        return str(resolve_reference(ref, allow_unfinished=allow_unfinished))

    def set_main_output(self, relpath: str) -> None:
        self.main_output = relpath

    def log_metrics(self, values: dict[str, Any], step: int | None = None) -> None:
        record = ({} if step is None else {"step": step}) | dict(values)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def set_summary(self, text: str) -> None:
        self.summary = text
