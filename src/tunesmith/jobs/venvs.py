"""Isolated Python environments for `tunesmith run --pip/--requirements`.

One virtual environment per package set, under `<workspace>/.tunesmith/envs/<hash>`, built once
and reused by later runs asking for the same set. It sees the packages of the interpreter
running tunesmith (so tunesmith and torch stay importable) but installs only into itself:
the user's own environment is never modified.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import site
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

from tunesmith.errors import RunError
from tunesmith.jobs.process import stream_process
from tunesmith.runs.outputs import remove_tree

COMPLETE_MARKER = ".tunesmith-complete"


def environment_key(packages: list[str], requirements: str | None) -> str:
    """The same packages (in any order) and requirements on the same Python share an env."""
    spec = {
        "python": sys.version,
        "base": os.path.realpath(sys.executable),
        "packages": sorted(set(packages)),
        "requirements": requirements,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def env_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """One process builds a given environment; the others wait for it and then reuse it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _parent_site_dirs() -> list[str]:
    """Site-packages folders of the running interpreter (a venv's own, when in one)."""
    dirs = [d for d in site.getsitepackages() if d in sys.path]
    user = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user and user in sys.path:
        dirs.append(user)
    return dirs


def _create(env_dir: Path, packages: list[str], requirements: Path | None) -> None:
    with_pip = find_spec("pip") is None  # else the parent's pip, seen through the .pth, serves
    cmd = [sys.executable, "-m", "venv", "--system-site-packages", str(env_dir)]
    if not with_pip:
        cmd.insert(4, "--without-pip")
    subprocess.run(cmd, check=True, capture_output=True)
    python = str(env_python(env_dir))
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Appended after the env's own site-packages: what the env installs takes precedence.
    lines = [f"import site; site.addsitedir({d!r})" for d in _parent_site_dirs()]
    Path(purelib, "_tunesmith_parent.pth").write_text("\n".join(lines) + "\n")
    install = [python, "-m", "pip", "install", "--disable-pip-version-check", *packages]
    if requirements is not None:
        install += ["-r", str(requirements)]
    code = stream_process(install, cwd=env_dir, stdout_to_stderr=True)
    if code != 0:
        raise RunError(
            f"installing {' '.join(packages) or requirements} failed (pip exit code {code})"
        )


def ensure_environment(
    workspace_root: Path, packages: list[str], requirements: Path | None = None
) -> Path:
    """The environment for this package set, built on first use. Returns its folder."""
    text = requirements.read_text() if requirements is not None else None
    key = environment_key(packages, text)
    envs = workspace_root / ".tunesmith" / "envs"
    env_dir = envs / key
    with _locked(envs / f"{key}.lock"):
        if (env_dir / COMPLETE_MARKER).exists():
            print(f"using Python environment {key} ({env_dir})", file=sys.stderr, flush=True)
            return env_dir
        remove_tree(env_dir)  # a build that was cut short
        print(f"building Python environment {key} ({env_dir})", file=sys.stderr, flush=True)
        try:
            _create(env_dir, packages, requirements)
        except BaseException:
            remove_tree(env_dir)
            raise
        spec = {"packages": sorted(set(packages)), "requirements": text}
        (env_dir / COMPLETE_MARKER).write_text(json.dumps(spec, indent=2) + "\n")
    return env_dir


def activated(env: dict[str, str], env_dir: Path) -> dict[str, str]:
    """A copy of `env` in which `python`, `pip` etc. are the environment's."""
    env = dict(env)
    env["VIRTUAL_ENV"] = str(env_dir)
    env["PATH"] = os.pathsep.join([str(env_dir / "bin"), env.get("PATH", os.defpath)])
    env.pop("PYTHONHOME", None)
    return env
