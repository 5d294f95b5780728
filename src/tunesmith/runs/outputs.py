"""A run's outputs: every file in its folder but tunesmith's own records, with size and sha256;
and removing a run folder, read-only copies included."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
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


def escapes(path: Path, root: Path) -> bool:
    """Whether `path`, its symlinks followed, lies outside `root`."""
    return not Path(path).resolve().is_relative_to(Path(root).resolve())


def walk_entries(
    root: Path, exclude: Iterable[str] = (), under: str = "", folders: bool = False
) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every file and symlink under `root` (or only under its
    subpath `under`), leaving out the records folder and `exclude`. Symlinks to folders are
    listed, never followed; with `folders`, real folders are listed too, before their files."""
    root = Path(root)
    skip = {RECORDS_DIR, *(e.strip("/") for e in exclude)}
    start = root / under if under else root
    if under and _excluded(under, skip):
        return
    if start.is_symlink() or not start.is_dir():
        if start.is_symlink() or start.exists():
            yield under, start
        return
    for folder, dirs, files in os.walk(start):
        rel_folder = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel_folder == "." else rel_folder + "/"
        links = [d for d in dirs if Path(folder, d).is_symlink()]
        dirs[:] = sorted(d for d in dirs if d not in links and not _excluded(prefix + d, skip))
        if folders:
            yield from ((prefix + d, Path(folder) / d) for d in dirs)
        for name in sorted(files + links):
            if not _excluded(prefix + name, skip):
                yield prefix + name, Path(folder) / name


def scan_outputs(root: Path, exclude: Iterable[str] = ()) -> list[Output]:
    """The files under `root`, sorted by path, leaving out the records folder and `exclude`
    (relative paths of files or folders, e.g. mounted inputs). A symlink out of `root` is not
    an output: the run does not own what it points to."""
    root = Path(root)
    found: list[Output] = []
    for rel, path in walk_entries(root, exclude):
        try:
            if not path.is_file() or escapes(path, root):  # broken link, socket, fifo, escape
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


def remove_tree(path: Path) -> None:
    """rmtree that also removes read-only files and folders (mounted inputs are made read-only)."""

    def make_writable_and_retry(func, failed_path, _exc_info):
        parent = os.path.dirname(failed_path)
        for p in (parent, failed_path):
            try:
                os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR | stat.S_IXUSR)
            except OSError:
                pass
        func(failed_path)

    if path.exists():
        shutil.rmtree(path, onerror=make_writable_and_retry)
