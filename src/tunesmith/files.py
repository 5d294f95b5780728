"""Writing result files and folders so that a reader never sees half of one.

Each is written under a temporary name beside its final one and renamed into place, which is
atomic on one filesystem: a crash or a full disk leaves the old version or none, never a mix.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) to write the file at a temporary path beside `path`, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the suffix last: writers such as matplotlib choose the format by it.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_folder_atomically(folder: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) to fill a temporary folder beside `folder`, then swap it into place
    (an existing `folder` is replaced whole). On failure the temporary folder is removed."""
    final = Path(folder)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier crash of this pid
    tmp.mkdir()
    try:
        write(tmp)
        if final.exists():
            # Two renames: the old folder is never deleted before the new one is in place.
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def link_or_copy(source: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Make `dest` a hard link to `source` (one file on disk, no bytes written), or a copy
    where a link cannot be made (another filesystem, or one without hard links)."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy(source, dest)  # the bytes and the permission bits
    return Path(dest)
