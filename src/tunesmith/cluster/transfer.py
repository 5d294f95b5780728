"""Moving files between this machine and a job's actor, in chunks, each file checked against
its sha256 and written atomically, so no reader (or second syncing process) sees half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tunesmith.cluster.connect import ClusterError
from tunesmith.runs.outputs import sha256_file

CHUNK = 8 << 20  # bytes per actor call: large enough to be quick, small enough for the object store


def upload_missing(ray, actor, shas: dict[str, tuple[Path, int]]) -> int:
    """Send the node the blobs it lacks; returns the bytes sent."""
    missing = ray.get(actor.missing.remote(sorted(shas)))
    sent = 0
    for sha in missing:
        path, size = shas[sha]
        with open(path, "rb") as f:
            offset = 0
            while True:
                data = f.read(CHUNK)
                last = offset + len(data) >= size
                ray.get(actor.put_blob.remote(sha, data, offset, last))
                offset += len(data)
                sent += len(data)
                if last:
                    break
    return sent


def fetch_file(ray, actor, rel: str, size: int, sha: str, dest: Path) -> int:
    """Copy the job's file `rel` to `dest`, verified; returns the bytes fetched (0 when `dest`
    already holds that content). Raises ClusterError when it no longer matches `sha`."""
    if dest.is_file() and dest.stat().st_size == size and sha256_file(dest) == sha:
        return 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            offset = 0
            while offset < size:
                data = ray.get(actor.read.remote(rel, offset, min(CHUNK, size - offset)))
                if not data:
                    break
                f.write(data)
                offset += len(data)
        if sha256_file(tmp) != sha:
            raise ClusterError(f"{rel} changed while it was copied back; sync again")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return size


def fetch_folder(ray, actor, files: list[dict[str, Any]], prefix: str, run_dir: Path) -> int:
    """Copy the files of a folder that is new here into place as a whole (written aside, then
    renamed), so that a checkpoint is complete or absent; returns the bytes fetched."""
    final = run_dir / prefix
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".pull-{final.name}.", dir=final.parent))
    fetched = 0
    try:
        for f in files:
            sha = ray.get(actor.digest.remote(f["path"]))
            if sha is None:
                return 0  # removed meanwhile (an old checkpoint rotated away)
            rel = Path(f["path"]).relative_to(prefix)
            fetched += fetch_file(ray, actor, f["path"], f["size"], sha, tmp / rel)
        if final.exists():  # a folder replaced there (the best checkpoint): swap it whole
            old = Path(tempfile.mkdtemp(prefix=f".old-{final.name}.", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return fetched
