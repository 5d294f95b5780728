"""Run references: `runs/N` (a run's main output), `runs/N/sub/path` (a file in it) and
`runs/last` (the newest run), relative to the workspace, so they read like the paths they are.

This module is the one place that parses them: everything else asks `parse_reference`,
`is_run_reference`, `resolve_in`/`resolve_reference` (a path) or `pick_run` (a run id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tunesmith.errors import RunError
from tunesmith.runs.outputs import top_level_names
from tunesmith.runs.workspace import Workspace, open_workspace

_REFERENCE = re.compile(r"^(?:\./)?runs/(?P<run>\d+|last)(?:/+(?P<sub>.*?))?/*$")


@dataclass(frozen=True)
class Reference:
    run: int | None  # None for `runs/last`
    subpath: str  # "" for the run's main output

    def __str__(self) -> str:
        name = "last" if self.run is None else str(self.run)
        return f"runs/{name}" + (f"/{self.subpath}" if self.subpath else "")


@dataclass(frozen=True)
class Resolved:
    path: Path
    run_id: int
    reference: Reference


def parse_reference(text: str) -> Reference | None:
    """The reference `text` spells, or None when it is something else (a hub id, a path)."""
    match = _REFERENCE.match(str(text).strip())
    if not match:
        return None
    sub = PurePosixPath(match["sub"] or "")
    parts = [p for p in sub.parts if p not in ("", ".")]
    if ".." in parts:
        raise RunError(f"{text}: a run reference cannot point outside its run folder")
    run = None if match["run"] == "last" else int(match["run"])
    return Reference(run, "/".join(parts))


def is_run_reference(text: str) -> bool:
    try:
        return parse_reference(text) is not None
    except RunError:
        return True  # it is one, just an invalid one: resolving it gives the error


def resolve_in(
    workspace: Workspace,
    text: str,
    allow_unfinished: bool = False,
    before: int | None = None,
) -> Resolved:
    """Resolve a reference in `workspace`. `before` (the current run's id) keeps `runs/last`
    from naming the run that is asking."""
    ref = parse_reference(text)
    if ref is None:
        raise RunError(
            f"{text!r} is not a run reference; expected runs/N, runs/N/path or runs/last"
        )
    if ref.run is None:
        run = workspace.latest(before=before)
        if run is None:
            raise RunError(f"{text}: there are no runs in {workspace.root} yet")
    else:
        run = workspace.get(ref.run)
        if run is None:
            raise RunError(
                f"{text}: there is no run {ref.run} in {workspace.root} (see `tunesmith runs`)"
            )
    if run.status != "succeeded" and not allow_unfinished:
        if run.status == "running":
            raise RunError(f"{text}: run {run.id} is still running; wait for it to finish")
        why = f" ({run.error})" if run.error else ""
        raise RunError(
            f"{text}: run {run.id} {run.status}{why}; only a succeeded run's outputs can be used"
        )
    folder = workspace.run_dir(run.id)
    if not folder.is_dir():
        raise RunError(f"{text}: the folder of run {run.id} ({folder}) is missing")
    if ref.subpath:
        path = folder / ref.subpath
        if not path.exists():
            names = ", ".join(top_level_names(folder)) or "none"
            raise RunError(f"{text}: run {run.id} has no {ref.subpath!r} (it has: {names})")
    else:
        path = folder if run.main_output in ("", ".") else folder / run.main_output
        if not path.exists():
            raise RunError(
                f"{text}: the main output of run {run.id} ({run.main_output!r}) is missing"
            )
    return Resolved(path.resolve(), run.id, Reference(run.id, ref.subpath))


def resolve_reference(
    ref: str, workspace: str | Path | Workspace | None = None, allow_unfinished: bool = False
) -> Path:
    """The path a run reference names, outside any run (e.g. `tunesmith.load("runs/3")`).
    Anything that is not a run reference comes back unchanged, as a Path."""
    if not is_run_reference(ref):
        return Path(ref)
    ws = workspace if isinstance(workspace, Workspace) else open_workspace(workspace)
    return resolve_in(ws, ref, allow_unfinished=allow_unfinished).path


def pick_run(workspace: Workspace, text: str) -> int:
    """`3`, `runs/3`, `last` or `runs/last` (as `tunesmith runs show` takes) → a run id that
    exists in `workspace`."""
    name = text.strip().removeprefix("./")
    ref = parse_reference(name if name.startswith("runs/") else f"runs/{name}")
    if ref is None or ref.subpath:
        raise RunError(f"{text!r} is not a run; give its number, e.g. 3 or runs/3")
    if ref.run is None:
        latest = workspace.latest()
        if latest is None:
            raise RunError(f"there are no runs in {workspace.root} yet")
        return latest.id
    if workspace.get(ref.run) is None:
        raise RunError(f"there is no run {ref.run} in {workspace.root} (see `tunesmith runs`)")
    return ref.run
