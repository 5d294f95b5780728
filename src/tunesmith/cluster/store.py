"""The worker's content-addressed store: input files kept once per node under their sha256,
so a file the node already holds is never sent again, and copied out into a job's workspace.

Everything lives under `$TUNESMITH_CLUSTER_CACHE` (default `~/.cache/tunesmith/cluster`) on the
node: `blobs/<sha256>`, `envs/` (the `--pip` environments, shared by all jobs) and `jobs/<id>/`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath

from tunesmith.runs.outputs import sha256_file

CACHE_VARIABLE = "TUNESMITH_CLUSTER_CACHE"


def cache_root() -> Path:
    configured = os.environ.get(CACHE_VARIABLE)
    return Path(configured) if configured else Path.home() / ".cache" / "tunesmith" / "cluster"


def _valid_sha(sha: str) -> bool:
    return len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)


def safe_relative(path: str) -> PurePosixPath:
    """A relative path that stays inside its folder (paths come from the other side)."""
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"refusing path {path!r}: not inside the job's folder")
    return rel


class BlobStore:
    """Files by sha256 under one folder; a blob is complete or absent (written aside, verified,
    renamed into place)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha: str) -> Path:
        if not _valid_sha(sha):
            raise ValueError(f"not a sha256: {sha!r}")
        return self.root / sha

    def missing(self, shas: list[str]) -> list[str]:
        return sorted({s for s in shas if not self.path(s).is_file()})

    def put(self, sha: str, data: bytes, offset: int, last: bool) -> None:
        """Write one chunk of a blob; the last chunk checks the whole file's sha256."""
        partial = self.root / f".{sha}.{os.getpid()}.part"
        with open(partial, "r+b" if offset else "wb") as f:
            f.seek(offset)
            f.write(data)
        if not last:
            return
        if sha256_file(partial) != sha:
            partial.unlink()
            raise ValueError(f"blob {sha[:12]} arrived corrupted; send it again")
        os.replace(partial, self.path(sha))

    def copy_out(self, sha: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path(sha), dest)
