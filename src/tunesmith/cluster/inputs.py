"""What a remote run needs from this machine, found in its command line.

Run references (`runs/N[/path]`, `runs/last`, mounts `runs/N:DEST`) become runs imported into
the job's workspace on the worker; existing local files and folders become files placed beside
it. Each file is named by its sha256, so the worker asks only for what its node lacks. The
command line is rewritten to name the worker's copies; cluster options and `--workspace` are
dropped (they mean something here, not there).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import UsageError
from tunesmith.runs.outputs import scan_outputs, sha256_file
from tunesmith.runs.references import is_run_reference, parse_reference, resolve_in
from tunesmith.runs.workspace import Workspace

# Flags of this side only: (flag, takes a value).
LOCAL_FLAGS = {
    "--cluster": True,
    "--gpus": True,
    "--cpus": True,
    "--memory": True,
    "--nodes": True,
    "--detach": False,
    "--workspace": True,
}
# Flags whose run reference may name an unfinished run (resuming a failed fine-tune).
UNFINISHED_OK = {"--resume"}
# A resumed fine-tune reads its inputs from the run's saved config (tunesmith.train.config's
# CONFIG_FILE; not imported: that loads torch): they travel too, renamed in the worker's copy.
RESUMED_CONFIG = "finetune_config.json"
RESUMED_INPUTS = ("model", "data")


@dataclass
class Inputs:
    """The job's inputs and its command line; `{run:I}`/`{path:I}` mark what the worker fills."""

    argv: list[str]
    runs: list[dict[str, Any]] = field(default_factory=list)  # imported in this order
    paths: list[dict[str, Any]] = field(default_factory=list)
    uses: list[tuple[int, str]] = field(default_factory=list)  # lineage: (run id, reference)

    def shas(self) -> dict[str, tuple[Path, int]]:
        """sha256 → (a local file with that content, its size)."""
        found = {}
        for item in [*self.runs, *self.paths]:
            for f in item["files"]:
                found[f["sha256"]] = (Path(f["local"]), f["size"])
        return found

    def command(self, run_numbers: list[int], places: list[str]) -> list[str]:
        """The command line with the worker's run numbers and paths filled in."""
        return [fill(arg, run_numbers, places) for arg in self.argv]


def fill(text: str, run_numbers: list[int], places: list[str]) -> str:
    """`text` with `{run:I}` and `{path:I}` replaced by the worker's run numbers and paths."""
    for i, number in enumerate(run_numbers):
        text = text.replace(f"{{run:{i}}}", str(number))
    for i, place in enumerate(places):
        text = text.replace(f"{{path:{i}}}", place)
    return text


def strip_local_flags(argv: list[str]) -> list[str]:
    """Drop LOCAL_FLAGS (with their values) up to a `--`."""
    out, skip, passthrough = [], False, False
    for arg in argv:
        if passthrough or arg == "--":
            passthrough = True
            out.append(arg)
        elif skip:
            skip = False
        elif arg.split("=", 1)[0] in LOCAL_FLAGS:
            skip = LOCAL_FLAGS[arg.split("=", 1)[0]] and "=" not in arg
        else:
            out.append(arg)
    return out


def collect(workspace: Workspace, argv: list[str]) -> Inputs:
    """Find the inputs in `argv` (the arguments after `tunesmith`)."""
    inputs = Inputs(argv=[])
    run_index: dict[int, int] = {}
    previous = ""
    for position, arg in enumerate(strip_local_flags(argv)):
        if arg == "--":
            inputs.argv += strip_local_flags(argv)[position:]
            break
        flag, sep, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if arg.startswith("-") and not sep:
            inputs.argv.append(arg)
            previous = arg
            continue
        owner = flag or previous
        value = _rewrite(workspace, inputs, run_index, value, owner in UNFINISHED_OK)
        if owner == "--resume":
            _resumed_inputs(workspace, inputs, run_index, value)
        inputs.argv.append(f"{flag}={value}" if sep else value)
        previous = ""
    return inputs


def _rewrite(
    workspace: Workspace, inputs: Inputs, run_index: dict[int, int], value: str, unfinished: bool
) -> str:
    ref, dest = value, ""
    if not is_run_reference(ref) and ":" in value and is_run_reference(value.rsplit(":", 1)[0]):
        ref, dest = value.rsplit(":", 1)  # a mount, runs/N:DEST
        dest = ":" + dest
    if is_run_reference(ref):
        resolved = resolve_in(workspace, ref, allow_unfinished=unfinished)
        if resolved.run_id not in run_index:
            run_index[resolved.run_id] = len(inputs.runs)
            inputs.runs.append(_run_record(workspace, resolved.run_id))
        inputs.uses.append((resolved.run_id, str(resolved.reference)))
        sub = parse_reference(ref).subpath
        name = f"runs/{{run:{run_index[resolved.run_id]}}}" + (f"/{sub}" if sub else "")
        return name + dest
    path = Path(value).expanduser()
    known = [p["local"] for p in inputs.paths]
    if value and os.path.exists(path) and str(path.resolve()) in known:
        return f"{{path:{known.index(str(path.resolve()))}}}"
    if value and os.path.exists(path):
        dest = f"{len(inputs.paths)}/{path.resolve().name}"
        inputs.paths.append({"dest": dest, "local": str(path.resolve()), **_files(path)})
        return f"{{path:{len(inputs.paths) - 1}}}"
    return value


def _resumed_inputs(
    workspace: Workspace, inputs: Inputs, run_index: dict[int, int], placeholder: str
) -> None:
    """Send the model and data a resumed fine-tune's saved config names, and have the worker's
    copy of that config name them as they are called there."""
    record = next(
        r for r in inputs.runs if placeholder.startswith(f"runs/{{run:{run_index[r['id']]}}}")
    )
    saved = workspace.run_dir(record["id"]) / RESUMED_CONFIG
    try:
        config = json.loads(saved.read_text())
    except (OSError, ValueError):
        return  # not a fine-tune: the worker's tunesmith says so
    renames = {}
    for key in RESUMED_INPUTS:
        if isinstance(config.get(key), str):
            renames[config[key]] = _rewrite(workspace, inputs, run_index, config[key], False)
    record["renames"] = {k: v for k, v in renames.items() if k != v}


def _run_record(workspace: Workspace, run_id: int) -> dict[str, Any]:
    run = workspace.get(run_id)
    folder = workspace.run_dir(run_id)
    files = [
        {"path": o.path, "size": o.size, "sha256": o.sha256, "local": str(folder / o.path)}
        for o in workspace.outputs(run_id)
    ]
    if run.status == "running":
        raise UsageError(f"runs/{run_id} is still running; wait for it (or `tunesmith runs sync`)")
    return {
        "id": run_id,
        "kind": run.kind,
        "status": run.status,
        "main_output": run.main_output,
        "files": files,
    }


def _files(path: Path) -> dict[str, Any]:
    if path.is_file():
        local = str(path.resolve())
        size = path.stat().st_size
        return {"files": [{"path": ".", "size": size, "sha256": sha256_file(path), "local": local}]}
    files = [
        {"path": o.path, "size": o.size, "sha256": o.sha256, "local": str(path / o.path)}
        for o in scan_outputs(path)
    ]
    return {"files": files}
