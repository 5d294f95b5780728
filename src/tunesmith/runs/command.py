"""`tunesmith run -- COMMAND`: any command as a recorded run, like `spell run` was.

The command runs in the run's folder, after the code was cloned there (`--git`), earlier
outputs were mounted read-only (`--mount`) and an isolated environment was prepared (`--pip`,
`--requirements`). Its exit code becomes the run's; whatever it leaves is the run's output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import RunError, UsageError
from tunesmith.runs.mounts import Mount, place_mount, remove_mount
from tunesmith.runs.process import stream_process
from tunesmith.runs.record import RunHandle, recorded_run
from tunesmith.runs.venvs import activated, ensure_environment
from tunesmith.runs.workspace import remove_tree

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_env(pairs: list[str]) -> dict[str, str]:
    """`KEY=VALUE` strings → a dict."""
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _ENV_KEY.match(key):
            raise UsageError(f"--env {pair}: expected KEY=VALUE")
        env[key] = value
    return env


def split_git_url(text: str) -> tuple[str, str | None]:
    """`URL[@REF]` → (URL, REF). The `@` of `git@host:repo` is part of the URL, not a ref."""
    url, sep, ref = text.rpartition("@")
    if sep and ref and ":" not in ref and ("/" in url or ":" in url):
        return url, ref
    return text, None


@dataclass
class CommandConfig:
    """What `tunesmith run` executes, and how."""

    command: list[str]
    mounts: list[str] = field(default_factory=list)
    pip: list[str] = field(default_factory=list)
    requirements: str | None = None
    git: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    kill_after: float = 10.0  # seconds between SIGTERM and SIGKILL when stopping

    def __post_init__(self) -> None:
        if not self.command:
            raise UsageError(
                "no command given: put it after --, e.g. tunesmith run -- python train.py"
            )
        if self.requirements is not None:
            path = Path(self.requirements).expanduser().resolve()
            if not path.is_file():
                raise UsageError(f"--requirements {self.requirements}: no such file")
            self.requirements = str(path)  # the command runs elsewhere: keep it absolute
        if self.kill_after <= 0:
            raise UsageError("--kill-after must be positive")
        for key in self.env:
            if not _ENV_KEY.match(key):
                raise UsageError(f"--env {key}: not a valid variable name")

    def argv(self) -> list[str]:
        """A single argument is a shell command line (`tunesmith run "python a.py && ls"`)."""
        if len(self.command) == 1:
            return ["/bin/sh", "-c", self.command[0]]
        return list(self.command)

    def to_params(self) -> dict[str, Any]:
        return asdict(self)


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


def execute(config: CommandConfig, run: RunHandle) -> int:
    """Prepare the run folder and run the command in it; returns its exit code."""
    if config.git:
        git = clone(run, config.git, config.kill_after)
        run.info["git"] = git
        run.info["git_commit"] = git["commit"]  # the code this run ran
    mounts: list[Mount] = []
    try:
        for text in config.mounts:
            mount = place_mount(run, text)
            mounts.append(mount)
            print(f"mounted {mount.ref} at {mount.dest} (read-only)", file=sys.stderr, flush=True)
        run.info["mounts"] = [m.to_dict() for m in mounts]
        env = dict(os.environ)
        env.pop("TUNESMITH_RUN_ID", None)
        env["TUNESMITH_HOME"] = str(run.workspace.root)  # tunesmith inside uses this workspace
        if run.id is not None:
            env["TUNESMITH_RUN_ID"] = str(run.id)
        env.setdefault("PYTHONUNBUFFERED", "1")  # stream Python's output as it is printed
        if config.pip or config.requirements:
            requirements = Path(config.requirements) if config.requirements else None
            env_dir = ensure_environment(run.workspace.root, config.pip, requirements)
            run.info["python_env"] = str(env_dir)
            env = activated(env, env_dir)
        env.update(config.env)
        return stream_process(config.argv(), cwd=run.dir, env=env, kill_after=config.kill_after)
    finally:
        for mount in reversed(mounts):
            remove_mount(run, mount)


def run_command(
    config: CommandConfig, workspace: str | Path | None = None, argv: list[str] | None = None
) -> int:
    """Run `config` as a recorded run of kind `run`; returns the command's exit code."""
    with recorded_run(kind="run", params=config.to_params(), workspace=workspace, argv=argv) as run:
        code = execute(config, run)
        run.exit_code = code
        if code != 0:
            run.error = f"command exited with code {code}"
    return code
