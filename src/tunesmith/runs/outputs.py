"""A run's outputs: every file in its folder but tunesmith's own records, with size and sha256."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

RECORDS_DIR = ".tunesmith"  # tunesmith's own records inside each run folder


@dataclass(frozen=True)
class Output:
    path: str  # relative to the run folder, with forward slashes
    size: int
    sha256: str

    def to_dict(self) -> dict:
        return asdict(self)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _excluded(rel: str, exclude: set[str]) -> bool:
    return any(rel == e or rel.startswith(e + "/") for e in exclude)


def scan_outputs(root: Path, exclude: Iterable[str] = ()) -> list[Output]:
    """The files under `root`, sorted by path, leaving out the records folder and `exclude`
    (relative paths of files or folders, e.g. mounted inputs)."""
    root = Path(root)
    skip = {RECORDS_DIR, *(e.strip("/") for e in exclude)}
    found: list[Output] = []
    for folder, dirs, files in os.walk(root):
        rel_folder = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel_folder == "." else rel_folder + "/"
        dirs[:] = sorted(d for d in dirs if not _excluded(prefix + d, skip))
        for name in files:
            rel = prefix + name
            if _excluded(rel, skip):
                continue
            path = Path(folder) / name
            try:
                if not path.is_file():  # broken link, socket, fifo
                    continue
                found.append(Output(rel, path.stat().st_size, sha256_file(path)))
            except OSError:
                continue  # vanished or unreadable: not an output we can vouch for
    return sorted(found, key=lambda o: o.path)


def top_level_names(root: Path, limit: int = 8) -> list[str]:
    """Names in a run folder a user could refer to, for error messages."""
    try:
        names = sorted(p.name for p in Path(root).iterdir() if p.name != RECORDS_DIR)
    except OSError:
        return []
    return names[:limit] + (["…"] if len(names) > limit else [])
