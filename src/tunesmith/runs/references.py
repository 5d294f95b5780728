"""Run references: `runs/N` (a run's main output), `runs/N/sub/path` (a file in it),
`runs/last` (the newest run), `runs/last-KIND` (the newest run of a kind, e.g. `runs/last-data`)
and `runs/NAME` (the newest run given `--name NAME`), relative to the workspace, so they read like
the paths they are. Run numbers are ASCII digits only: `runs/３` is not run 3.

This module is the one place that parses them: everything else asks `parse_reference`,
`is_run_reference`, `resolve_in`/`resolve_reference` (a path) or `pick_run` (a run id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tunesmith.errors import RunError
from tunesmith.runs.outputs import top_level_names
from tunesmith.runs.schema import Run
from tunesmith.runs.seal import check_sealed
from tunesmith.runs.workspace import Workspace, open_workspace

_REFERENCE = re.compile(r"^(?:\./)?runs/(?P<run>[^/]+)(?:/+(?P<sub>.*?))?/*$")
_NUMBER = re.compile(r"^[0-9]+$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
_LAST_KIND = re.compile(r"^last-(?P<kind>[a-z]+)$")
MAX_RUN_ID = 2**63 - 1  # SQLite's INTEGER


def check_run_name(name: str | None) -> str | None:
    """A valid `--name` (or None): a letter, then letters, digits, `.`, `_` or `-` (so never a
    run number, never a path), and not `last` or `last-KIND`, references of their own."""
    if name is None:
        return None
    if not _NAME.match(name) or name == "last" or name.startswith("last-"):
        raise RunError(
            f"--name {name!r}: a run name starts with a letter and has only letters, digits, "
            "'.', '_' and '-' (at most 64), and is not 'last' or 'last-…'"
        )
    return name


@dataclass(frozen=True)
class Reference:
    run: int | None  # None for `runs/last`, `runs/last-KIND` and `runs/NAME`
    subpath: str  # "" for the run's main output
    name: str = "last"  # when `run` is None: `last`, `last-KIND` or a run name

    def __str__(self) -> str:
        name = self.name if self.run is None else str(self.run)
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
    selector = match["run"]
    if not (_NUMBER.match(selector) or _NAME.match(selector)):
        return None  # `runs/３`, `runs/²`: not ours
    sub = PurePosixPath(match["sub"] or "")
    parts = [p for p in sub.parts if p not in ("", ".")]
    if ".." in parts:
        raise RunError(f"{text}: a run reference cannot point outside its run folder")
    if not _NUMBER.match(selector):
        return Reference(None, "/".join(parts), selector)
    if int(selector) > MAX_RUN_ID:
        raise RunError(f"{text}: there is no run {selector} (run numbers are far smaller)")
    return Reference(int(selector), "/".join(parts))


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
    _hops: int = 0,
) -> Resolved:
    """Resolve a reference in `workspace`, checking that what it names is still as the run
    left it (`seal.check_sealed`). `before` (the current run's id) keeps `runs/last` and
    names from naming the run that is asking. A run whose main output is another run's
    (`runs/7/model`, a sweep's best trial) resolves, as `runs/N`, to that one."""
    ref = parse_reference(text)
    if ref is None:
        raise RunError(
            f"{text!r} is not a run reference; expected runs/N, runs/N/path, runs/last, "
            "runs/last-KIND or runs/NAME"
        )
    run = _find_run(workspace, ref, text, before)
    if run.status != "succeeded" and not allow_unfinished:
        if run.status == "running":
            raise RunError(f"{text}: run {run.id} is still running; wait for it to finish")
        why = f" ({run.error})" if run.error else ""
        raise RunError(
            f"{text}: run {run.id} {run.status}{why}; only a succeeded run's outputs can be used"
        )
    folder = workspace.run_dir(run.id)
    if not folder.is_dir():
        raise RunError(
            f"{text}: the folder of run {run.id} ({folder}) is missing; "
            f"`tunesmith runs rm {run.id}` forgets the run"
        )
    if not ref.subpath and parse_reference(run.main_output) is not None:
        if _hops >= 4:
            raise RunError(f"{text}: run {run.id}'s main output leads through too many runs")
        return resolve_in(workspace, run.main_output, _hops=_hops + 1)
    relpath = ref.subpath or ("" if run.main_output in ("", ".") else run.main_output)
    path = folder / relpath
    if not path.exists():
        if ref.subpath:
            names = ", ".join(top_level_names(folder)) or "none"
            raise RunError(f"{text}: run {run.id} has no {ref.subpath!r} (it has: {names})")
        raise RunError(f"{text}: the main output of run {run.id} ({run.main_output!r}) is missing")
    real, root = path.resolve(), folder.resolve()
    if not real.is_relative_to(root):
        raise RunError(
            f"{text}: runs/{run.id}/{relpath} is a symlink to {real}, outside run {run.id}; "
            "only a run's own files can be used"
        )
    under = real.relative_to(root).as_posix()
    check_sealed(workspace, run, "" if under == "." else under, text)
    return Resolved(real, run.id, Reference(run.id, ref.subpath))


def _find_run(workspace: Workspace, ref: Reference, text: str, before: int | None) -> Run:
    if ref.run is not None:
        run = workspace.get(ref.run)
        if run is None:
            raise RunError(
                f"{text}: there is no run {ref.run} in {workspace.root} (see `tunesmith runs`)"
            )
        return run
    kind = _LAST_KIND.match(ref.name)
    if ref.name == "last":
        run = workspace.latest(before=before)
    elif kind:
        run = workspace.latest(before=before, kind=kind["kind"])
    else:
        run = workspace.latest(before=before, name=ref.name)
    if run is None:
        if ref.name == "last":
            raise RunError(f"{text}: there are no runs in {workspace.root} yet")
        what = f"no {kind['kind']} run" if kind else f"no run named {ref.name!r}"
        raise RunError(f"{text}: there is {what} in {workspace.root} (see `tunesmith runs`)")
    return run


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
    """`3`, `runs/3`, `last`, `last-KIND`, `NAME` or their `runs/` forms (as `tunesmith runs
    show` takes) → the id of a run in `workspace`."""
    name = text.strip().removeprefix("./")
    ref = parse_reference(name if name.startswith("runs/") else f"runs/{name}")
    if ref is None or ref.subpath:
        raise RunError(
            f"{text!r} is not a run; give its number (ASCII digits, e.g. 3 or runs/3), "
            "last, last-KIND or its name"
        )
    return _find_run(workspace, ref, text, before=None).id
