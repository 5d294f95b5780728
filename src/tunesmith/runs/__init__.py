"""The run store: every tunesmith command is a numbered, recorded run in a local workspace.

    with recorded_run(kind="generate", params={...}) as run:   # prints `run 3`
        model_path = run.use("runs/2")      # resolves the reference, records lineage
        ...write outputs into run.dir...    # runs/3/, kept with sizes and sha256

Records (meta.json, log.txt, metrics.jsonl) live in `runs/N/.tunesmith/`; everything else in
`runs/N/` is the run's output. `runs/N`, `runs/N/path` and `runs/last` name earlier outputs.
This package is the store only: executing commands as runs is `tunesmith.jobs`'s.
"""

from tunesmith.runs.context import FolderRun, RunContext
from tunesmith.runs.record import RunHandle, Terminated, recorded_run
from tunesmith.runs.references import (
    is_run_reference,
    parse_reference,
    pick_run,
    resolve_reference,
)
from tunesmith.runs.schema import Run
from tunesmith.runs.workspace import Workspace, open_workspace

__all__ = [
    "FolderRun",
    "Run",
    "RunContext",
    "RunHandle",
    "Terminated",
    "Workspace",
    "is_run_reference",
    "open_workspace",
    "parse_reference",
    "pick_run",
    "recorded_run",
    "resolve_reference",
]
