"""`--resume`: find the interrupted fine-tuning run, and merge its settings with those given.

    config = resume_config({"resume": "runs/3", "report_samples": 20})   # the run's settings
    finetune(config)                                                    # continues its training

A resumed run keeps the settings it was started with; only those that cannot change the weights
it ends with (`RESUMABLE_CHANGES`: devices, samples, checkpoints kept, ...) may differ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tunesmith.errors import RunError, UsageError
from tunesmith.runs.references import is_run_reference, resolve_reference
from tunesmith.train.config import CONFIG_FILE, MODEL_DIR, FinetuneConfig

# How a reference becomes a path: a recorded run's `run.use` (which records the lineage) or,
# outside a run (processes other than rank 0, library use), `resolve_quietly`.
Resolve = Callable[..., str]


def resolve_quietly(ref: str, allow_unfinished: bool = False) -> str:
    """The path a run reference names, recording nothing; anything else unchanged."""
    if is_run_reference(ref):
        return str(resolve_reference(ref, allow_unfinished=allow_unfinished))
    return ref


def run_folder(path: str | Path, ref: str) -> Path:
    """The fine-tuning run folder at `path` (a run's folder or its model/), named `ref`."""
    folder = Path(path)
    if folder.name == MODEL_DIR and (folder.parent / CONFIG_FILE).is_file():
        folder = folder.parent
    if not (folder / CONFIG_FILE).is_file():
        raise RunError(
            f"--resume {ref}: {folder} is not a fine-tuning run (no {CONFIG_FILE}); "
            "pass the runs/N of an interrupted `tunesmith finetune`"
        )
    return folder


def resume_config(given: Mapping[str, Any], use: Resolve = resolve_quietly) -> FinetuneConfig:
    """The config that resumes `given["resume"]`: its run's settings, with those in `given`
    (the options typed on the command line) over them; `resume` becomes the run's folder.
    A given setting that would change the weights is refused (UsageError)."""
    ref = given["resume"]
    folder = run_folder(use(ref, allow_unfinished=True), ref)
    started = FinetuneConfig.load(folder)
    config = FinetuneConfig.from_dict({**started.to_dict(), **given, "resume": str(folder)})
    check_resumable(config, started, ref)
    return config


def check_resumable(config: FinetuneConfig, started: FinetuneConfig, ref: str) -> None:
    """Refuse to resume a run started with `started` under settings that alter the result."""
    changed = config.differences(started)
    if changed:
        raise UsageError(
            f"--resume {ref}: that run was started with other settings: "
            + "; ".join(changed)
            + ". Resume with the same settings (or none), or start a new run"
        )
