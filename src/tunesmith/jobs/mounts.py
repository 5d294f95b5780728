"""Mounts: an earlier run's output placed, read-only, in a new run's working directory.

The mounted output is a copy, made read-only, of exactly the files the earlier run recorded
(checked against their sha256 first), as real files: never a symlink, so a command can neither
change another run's results through it nor reach outside. It is left out of the new run's
outputs, recorded as lineage, and removed when the command ends.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from tunesmith.errors import RunError
from tunesmith.runs.outputs import RECORDS_DIR, remove_tree, walk_entries
from tunesmith.runs.record import RunHandle
from tunesmith.runs.references import is_run_reference
from tunesmith.runs.schema import Run


@dataclass(frozen=True)
class Mount:
    ref: str  # as resolved, e.g. runs/2/data.txt
    run: int
    dest: str  # relative to the run folder

    def to_dict(self) -> dict:
        return asdict(self)


def parse_mount(text: str) -> tuple[str, str | None]:
    """`runs/N[/path][:DEST]` → (reference, DEST or None)."""
    ref, dest = text, None
    if ":" in text:
        ref, dest = text.rsplit(":", 1)
    if not is_run_reference(ref):
        raise RunError(
            f"--mount {text}: expected a run reference (runs/N, runs/NAME, runs/last or "
            "runs/last-KIND, optionally /path), optionally with :DEST"
        )
    if dest is not None:
        parts = [p for p in PurePosixPath(dest).parts if p != "."]
        if not parts or PurePosixPath(dest).is_absolute() or ".." in parts:
            raise RunError(
                f"--mount {text}: DEST must name a file or folder inside the run folder, "
                "e.g. runs/1:data"
            )
        if parts[0] == RECORDS_DIR:
            raise RunError(f"--mount {text}: {RECORDS_DIR}/ is reserved for tunesmith's records")
    return ref, dest


def _make_read_only(path: Path) -> None:
    paths = [path]
    if path.is_dir() and not path.is_symlink():
        paths += [Path(folder) / n for folder, dirs, files in os.walk(path) for n in dirs + files]
    for p in paths:
        if not p.is_symlink():
            mode = p.stat().st_mode
            p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _copy_outputs(run: RunHandle, source_run: Run, under: str, target: Path) -> None:
    """Copy the source run's recorded outputs at or below `under` (with its folders) to
    `target`, as real files. `resolve_use` has just checked that they are as recorded."""
    root = run.workspace.run_dir(source_run.id)
    recorded = {o.path for o in run.workspace.outputs(source_run.id)}
    excluded = source_run.info.get("excluded", [])
    if (root / under).is_dir():
        target.mkdir()
    for rel, path in walk_entries(root, excluded, under, folders=True):
        dest = target / rel[len(under) :].lstrip("/") if under else target / rel
        if path.is_dir() and not path.is_symlink():
            dest.mkdir(exist_ok=True)
        elif rel in recorded:
            shutil.copy2(path, dest)  # the file's bytes, never a link


def place_mount(run: RunHandle, text: str) -> Mount:
    """Resolve a --mount and copy the output, read-only, into the run folder."""
    ref, dest = parse_mount(text)
    resolved = run.resolve_use(ref)
    source = resolved.path
    source_run_dir = run.workspace.run_dir(resolved.run_id).resolve()
    if dest is None:
        dest = f"run-{resolved.run_id}" if source == source_run_dir else source.name
    target = run.dir / dest
    if target.exists() or target.is_symlink():
        raise RunError(f"--mount {text}: {dest} already exists in the run folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    under = source.relative_to(source_run_dir).as_posix()
    source_run = run.workspace.get(resolved.run_id)
    assert source_run is not None  # it resolved a moment ago
    _copy_outputs(run, source_run, "" if under == "." else under, target)
    _make_read_only(target)
    run.exclude_from_outputs(dest)
    return Mount(str(resolved.reference), resolved.run_id, dest)


def remove_mount(run: RunHandle, mount: Mount) -> None:
    """Take a mounted copy out of the run folder again, with any folders made to hold it."""
    target = run.dir / mount.dest
    if target.is_dir() and not target.is_symlink():
        remove_tree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    for parent in PurePosixPath(mount.dest).parents:
        if str(parent) == ".":
            break
        try:
            (run.dir / parent).rmdir()  # only if empty: the command may have written there
        except OSError:
            break
