"""`--git URL[@REF]`: a job's code, cloned into its run folder at a given ref."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tunesmith.errors import RunError
from tunesmith.jobs.process import stream_process
from tunesmith.runs.outputs import remove_tree
from tunesmith.runs.record import RunHandle


def split_git_url(text: str) -> tuple[str, str | None]:
    """`URL[@REF]` → (URL, REF). The `@` of `git@host:repo` is part of the URL, not a ref."""
    url, sep, ref = text.rpartition("@")
    if sep and ref and ":" not in ref and ("/" in url or ":" in url):
        return url, ref
    return text, None


def _git(args: list[str], cwd: Path, what: str, kill_after: float) -> None:
    code = stream_process(["git", *args], cwd=cwd, kill_after=kill_after, stdout_to_stderr=True)
    if code != 0:
        raise RunError(f"{what} failed (git exit code {code})")


def clone(run: RunHandle, spec: str, kill_after: float = 10.0) -> dict[str, str | None]:
    """Clone `URL[@REF]` into the run folder, checked out at REF."""
    url, ref = split_git_url(spec)
    if Path(url).expanduser().exists():  # a local repository, named relative to the user
        url = str(Path(url).expanduser().resolve())
    checkout = run.records_dir / "checkout"
    _git(["clone", "--quiet", url, str(checkout)], run.dir, f"git clone {url}", kill_after)
    try:
        if ref:
            _git(
                ["-c", "advice.detachedHead=false", "checkout", "--quiet", ref],
                checkout,
                f"checking out {ref!r} of {url}",
                kill_after,
            )
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True
        ).stdout.strip()
        for entry in sorted(checkout.iterdir()):
            target = run.dir / entry.name
            if target.exists():
                raise RunError(f"--git: {entry.name} already exists in the run folder")
            entry.rename(target)
    finally:
        if checkout.exists():
            remove_tree(checkout)
    run.exclude_from_outputs(".git")
    print(f"cloned {url} at {commit[:12]}", file=sys.stderr, flush=True)
    return {"url": url, "ref": ref, "commit": commit}
