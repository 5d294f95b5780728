"""What a job is: the command, its inputs (mounts, packages, code, environment) and what it
needs (resources), independent of where it executes."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tunesmith.errors import UsageError
from tunesmith.options import require_finite

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


@dataclass
class Resources:
    """What a job asks of the machine it runs on; None asks nothing."""

    cpus: int | None = None
    gpus: int | None = None
    memory_gb: float | None = None

    def __post_init__(self) -> None:
        require_finite(self)
        for name, value in asdict(self).items():
            if value is not None and value < 0:
                raise UsageError(f"--{name.replace('_gb', '')} must not be negative")

    def requested(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class JobSpec:
    """A command to execute as a recorded run, and everything it needs to run."""

    command: list[str]
    mounts: list[str] = field(default_factory=list)
    pip: list[str] = field(default_factory=list)
    requirements: str | None = None
    git: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    kill_after: float = 10.0  # seconds between SIGTERM and SIGKILL when stopping
    workdir: str = "."  # where the command starts, relative to the run folder
    resources: Resources = field(default_factory=Resources)

    def __post_init__(self) -> None:
        require_finite(self)
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
        workdir = PurePosixPath(self.workdir)
        if workdir.is_absolute() or ".." in workdir.parts:
            raise UsageError(f"workdir {self.workdir}: must be a relative path inside the run")

    def argv(self) -> list[str]:
        """A single argument is a shell command line (`tunesmith run "python a.py && ls"`)."""
        if len(self.command) == 1:
            return ["/bin/sh", "-c", self.command[0]]
        return list(self.command)

    def to_params(self) -> dict[str, Any]:
        """The run's recorded parameters; workdir and resources only when they were asked for."""
        params = asdict(self)
        if self.workdir == ".":
            del params["workdir"]
        if not self.resources.requested():
            del params["resources"]
        else:
            params["resources"] = self.resources.requested()
        return params
