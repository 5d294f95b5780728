"""The names a job's inputs have on the worker, mapped back to the names they have here, so that
what a remote run records (its parameters, a fine-tune's saved config) reads as if it had run
here and `finetune --resume runs/N` finds the same inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def map_value(value: Any, mapping: dict[str, str]) -> Any:
    """`value` with every string that is, or starts with, a key (then `/`) renamed."""
    if isinstance(value, str):
        for theirs, ours in mapping.items():
            if value == theirs or value.startswith(theirs.rstrip("/") + "/"):
                return ours + value[len(theirs) :]
        return value
    if isinstance(value, list):
        return [map_value(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: map_value(v, mapping) for k, v in value.items()}
    return value


def map_json_file(path: Path, mapping: dict[str, str]) -> None:
    """Rename the inputs named in a small JSON record (e.g. finetune_config.json) in place."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    renamed = map_value(data, mapping)
    if renamed != data:
        tmp = path.with_name(f".{path.name}.mapped")
        tmp.write_text(json.dumps(renamed, indent=2) + "\n")
        tmp.replace(path)
