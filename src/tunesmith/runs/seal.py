"""Sealed outputs: a finished run's files must still be the ones recorded when it ended.

A run's outputs are recorded with sizes and sha256 when it ends. Before a run's output is used
(`--model runs/3`, `--data runs/2`, a mount) the files it names are hashed again and compared
with that record; `tunesmith runs verify` does it for whole runs. A file changed, removed or
added since, or a symlink that leads out of the run, refuses the use with one line naming it.
This detects changes; it cannot prevent them: a command runs as the user, who can write there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import RunError
from tunesmith.runs.outputs import Output, escapes, sha256_file, walk_entries
from tunesmith.runs.schema import Run
from tunesmith.runs.workspace import Workspace


@dataclass(frozen=True)
class Change:
    path: str  # relative to the run folder
    what: str  # e.g. "changed since the run ended"

    def __str__(self) -> str:
        return f"{self.path} {self.what}"


def _under(path: str, under: str) -> bool:
    return not under or path == under or path.startswith(under.rstrip("/") + "/")


def find_changes(workspace: Workspace, run: Run, under: str = "") -> list[Change]:
    """How the run's folder (only `under`, a relative path, when given) differs from the
    outputs recorded when the run ended; empty when it is intact."""
    folder = workspace.run_dir(run.id)
    recorded = {o.path: o for o in workspace.outputs(run.id) if _under(o.path, under)}
    changes: list[Change] = []
    seen: set[str] = set()
    for rel, path in walk_entries(folder, run.info.get("excluded", []), under):
        try:
            if path.is_symlink() and escapes(path, folder):
                changes.append(Change(rel, f"is a symlink to {path.resolve()}, outside the run"))
                continue
            if not path.is_file():
                continue  # a link to a folder of the run, a broken link: not an output
            output = recorded.get(rel)
            if output is None:
                changes.append(Change(rel, "was added after the run ended"))
            elif not _same(path, output):
                changes.append(Change(rel, "has changed since the run ended"))
            seen.add(rel)
        except OSError as e:
            changes.append(Change(rel, f"cannot be read ({e.strerror or e})"))
            seen.add(rel)
    changes += [Change(p, "is missing") for p in sorted(recorded.keys() - seen)]
    return sorted(changes, key=lambda c: c.path)


def _same(path: Path, output: Output) -> bool:
    return path.stat().st_size == output.size and sha256_file(path) == output.sha256


def check_sealed(workspace: Workspace, run: Run, under: str = "", what: str = "") -> None:
    """Raise a one-line RunError naming the first change under `under`, if any. A run still
    running has no record to check against yet."""
    if run.status == "running":
        return
    changes = find_changes(workspace, run, under)
    if changes:
        more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
        raise RunError(
            f"{what or f'runs/{run.id}'}: runs/{run.id}/{changes[0]}{more}; a run's outputs are "
            f"sealed when it ends, so it is not used (see `tunesmith runs verify {run.id}`)"
        )
