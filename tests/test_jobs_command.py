"""`tunesmith run -- COMMAND`: exit codes, mounts, --env, --git, --pip, stopping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from importlib.util import find_spec
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.jobs.git import split_git_url
from tunesmith.runs import open_workspace
from tunesmith.runs.outputs import sha256_file

PY = sys.executable


def meta(workspace: Path, run_id: int) -> dict:
    return json.loads((workspace / "runs" / str(run_id) / ".tunesmith" / "meta.json").read_text())


def test_the_command_runs_in_the_run_folder_and_its_files_are_the_outputs(workspace, capsys):
    code = main(
        ["run", "--", PY, "-c", "import os; print(os.getcwd()); open('out.txt','w').write('x')"]
    )
    assert code == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(workspace / "runs" / "1")
    assert "run 1\n" in err and "run 1 succeeded in" in err
    m = meta(workspace, 1)
    assert m["status"] == "succeeded" and m["kind"] == "run" and m["exit_code"] == 0
    assert m["command"][:3] == ["tunesmith", "run", "--"]
    assert [o["path"] for o in m["outputs"]] == ["out.txt"]
    log = (workspace / "runs" / "1" / ".tunesmith" / "log.txt").read_text()
    assert str(workspace / "runs" / "1") in log


def test_the_exit_code_becomes_the_runs(workspace, capsys):
    assert (
        main(["run", "--", PY, "-c", "import sys; print('oops', file=sys.stderr); sys.exit(3)"])
        == 3
    )
    out, err = capsys.readouterr()
    assert "oops" in err and "run 1 failed (exit code 3)" in err
    m = meta(workspace, 1)
    assert m["status"] == "failed" and m["exit_code"] == 3
    assert "oops" in (workspace / "runs" / "1" / ".tunesmith" / "log.txt").read_text()


def test_a_single_argument_is_a_shell_command(workspace, capsys):
    assert main(["run", "echo one > a.txt && echo two"]) == 0
    assert capsys.readouterr().out == "two\n"
    assert (workspace / "runs" / "1" / "a.txt").read_text() == "one\n"


def test_missing_command_is_a_usage_error(workspace, capsys):
    assert main(["run"]) == 2
    assert "no command given" in capsys.readouterr().err
    assert main(["run", "--", "no-such-program-xyz", "arg"]) == 127
    assert "command not found: no-such-program-xyz" in capsys.readouterr().err
    assert main(["run", "no-such-program-xyz"]) == 127  # the same through the shell
    ws = open_workspace()
    assert [(r.status, r.exit_code) for r in ws.list_runs()] == [("failed", 127)] * 2


def test_env_variables_reach_the_command(workspace, capsys):
    script = "import os; print(os.environ['GREETING'], os.environ['TUNESMITH_RUN_ID'])"
    assert main(["run", "--env", "GREETING=hi there", "--", PY, "-c", script]) == 0
    assert capsys.readouterr().out == "hi there 1\n"
    assert main(["run", "--env", "NOEQUALS", "--", "true"]) == 2


def test_mounts_are_read_only_copies_that_resolve(workspace, capsys):
    assert main(["run", "mkdir d && echo data > data.txt && echo inner > d/x.txt"]) == 0
    source = workspace / "runs" / "1"
    before = {p: sha256_file(source / p) for p in ("data.txt", "d/x.txt")}
    attack = textwrap.dedent(
        """
        import os, pathlib
        print(open('data.txt').read().strip(), open('in/d/x.txt').read().strip())
        print(oct(os.stat('data.txt').st_mode & 0o222))
        for path in ('data.txt', 'in/d/x.txt'):
            try:
                os.chmod(path, 0o644)  # root ignores permissions: try hard to change it
                open(path, 'w').write('tampered')
            except OSError as e:
                print('refused', type(e).__name__)
        pathlib.Path('result.txt').write_text('done')
        """
    )
    code = main(["run", "-m", "runs/1/data.txt", "-m", "runs/last:in", "--", PY, "-c", attack])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["data inner", "0o0"]
    # Whatever the command did, the source run is unchanged.
    assert {p: sha256_file(source / p) for p in before} == before
    m = meta(workspace, 2)
    assert [o["path"] for o in m["outputs"]] == ["result.txt"]  # mounts are not outputs
    assert [u["ref"] for u in m["used"]] == ["runs/1", "runs/1/data.txt"]
    assert [(x["ref"], x["dest"]) for x in m["mounts"]] == [
        ("runs/1/data.txt", "data.txt"),
        ("runs/1", "in"),
    ]
    assert sorted(p.name for p in (workspace / "runs" / "2").iterdir()) == [
        ".tunesmith",
        "result.txt",
    ]
    assert open_workspace().used_by(1) == [2]


def test_a_mounted_run_folder_has_a_default_name(workspace, capsys):
    assert main(["run", "echo a > a.txt"]) == 0
    assert main(["run", "-m", "runs/1", "--", "cat", "run-1/a.txt"]) == 0
    assert capsys.readouterr().out == "a\n"


@pytest.mark.parametrize(
    "mount, message",
    [
        ("runs/5", "there is no run 5"),
        ("runs/1/missing.txt", "run 1 has no 'missing.txt'"),
        ("elsewhere/file.txt", "expected a run reference (runs/N, runs/NAME"),
        ("runs/1:../up", "DEST must name a file or folder inside the run folder"),
        ("runs/1:.", "DEST must name a file or folder inside the run folder"),
        ("runs/1:./", "DEST must name a file or folder inside the run folder"),
    ],
)
def test_bad_mounts_fail_clearly(workspace, capsys, mount, message):
    assert main(["run", "echo a > a.txt"]) == 0
    assert main(["run", "-m", mount, "--", "true"]) == 1
    assert message in capsys.readouterr().err


def test_a_failed_run_cannot_be_mounted(workspace, capsys):
    assert main(["run", "exit 1"]) == 1
    assert main(["run", "-m", "runs/1", "--", "true"]) == 1
    assert "run 1 failed" in capsys.readouterr().err


def git(*args, cwd):
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture()
def code_repo(tmp_path) -> tuple[Path, str]:
    """A local repository: train.py prints v1 at tag v1, v2 on the default branch."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    (repo / "train.py").write_text("print('v1')\n")
    git("add", "train.py", cwd=repo)
    git("commit", "-q", "-m", "v1", cwd=repo)
    git("tag", "v1", cwd=repo)
    v1 = git("rev-parse", "HEAD", cwd=repo)
    (repo / "train.py").write_text("print('v2')\n")
    git("commit", "-q", "-am", "v2", cwd=repo)
    return repo, v1


def test_git_clones_the_code_at_a_ref(workspace, capsys, code_repo):
    repo, v1 = code_repo
    assert main(["run", "--git", f"{repo}@v1", "--", PY, "train.py"]) == 0
    assert capsys.readouterr().out == "v1\n"
    m = meta(workspace, 1)
    assert m["git_commit"] == v1 and m["git"] == {"url": str(repo), "ref": "v1", "commit": v1}
    assert [o["path"] for o in m["outputs"]] == ["train.py"]  # .git is not an output
    assert main(["run", "--git", str(repo), "--", PY, "train.py"]) == 0
    assert capsys.readouterr().out == "v2\n"


def test_git_with_an_unknown_ref_fails_clearly(workspace, capsys, code_repo):
    repo, _ = code_repo
    assert main(["run", "--git", f"{repo}@nope", "--", "true"]) == 1
    assert "checking out 'nope'" in capsys.readouterr().err
    assert open_workspace().get(1).status == "failed"


@pytest.mark.parametrize(
    "text, url, ref",
    [
        ("https://github.com/u/r", "https://github.com/u/r", None),
        ("https://github.com/u/r@v1.0", "https://github.com/u/r", "v1.0"),
        ("git@github.com:u/r.git", "git@github.com:u/r.git", None),
        ("git@github.com:u/r.git@feature/x", "git@github.com:u/r.git", "feature/x"),
        ("/local/repo@abc123", "/local/repo", "abc123"),
    ],
)
def test_git_urls_split_into_url_and_ref(text, url, ref):
    assert split_git_url(text) == (url, ref)


def test_pip_installs_into_an_isolated_reused_environment(workspace, tmp_path, capsys, monkeypatch):
    package = tmp_path / "tinypkg"
    package.mkdir()
    (package / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "tunesmith-test-tinypkg"
            version = "0.1"

            [tool.setuptools]
            py-modules = ["tunesmith_test_tinypkg"]
            """
        )
    )
    (package / "tunesmith_test_tinypkg.py").write_text("VALUE = 42\n")
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no network: install from the folder as it is
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "0")
    script = "import tunesmith, tunesmith_test_tinypkg as t; print(t.VALUE)"

    assert main(["run", "--pip", str(package), "--", "python", "-c", script]) == 0
    out, err = capsys.readouterr()
    assert out == "42\n" and "building Python environment" in err  # pip's output: stderr
    assert main(["run", "--pip", str(package), "--", "python", "-c", script]) == 0
    out, err = capsys.readouterr()
    assert out == "42\n" and "using Python environment" in err  # built once, reused

    envs = [p for p in (workspace / ".tunesmith" / "envs").iterdir() if p.is_dir()]
    assert len(envs) == 1
    assert meta(workspace, 2)["python_env"] == str(envs[0])
    # The user's own environment never sees the package.
    assert find_spec("tunesmith_test_tinypkg") is None
    probe = subprocess.run([PY, "-c", "import tunesmith_test_tinypkg"], capture_output=True)
    assert probe.returncode != 0
    # Without --pip, commands run in the user's environment.
    assert main(["run", "--", "python", "-c", "import tunesmith_test_tinypkg"]) == 1
    capsys.readouterr()
    # A requirements file is another package set: another environment.
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{package}\n")
    assert main(["run", "--requirements", str(requirements), "--", "python", "-c", script]) == 0
    assert capsys.readouterr().out == "42\n"
    assert len([p for p in (workspace / ".tunesmith" / "envs").iterdir() if p.is_dir()]) == 2


def test_a_failing_install_fails_the_run(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    assert main(["run", "--pip", str(tmp_path / "no-such-package"), "--", "true"]) == 1
    assert "failed (pip exit code" in capsys.readouterr().err
    assert not any(p.is_dir() for p in (workspace / ".tunesmith" / "envs").iterdir())


def start_run(workspace: Path, *command: str) -> subprocess.Popen:
    """`tunesmith run` as a real process; returns once the command has printed 'started'."""
    proc = subprocess.Popen(
        [PY, "-m", "tunesmith", "run", "--kill-after", "1", "--", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "started"
    return proc


SLEEPER = textwrap.dedent(
    """
    import os, signal, sys, time
    if sys.argv[1:] == ['stubborn']:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open('pid', 'w').write(str(os.getpid()))
    print('started', flush=True)
    time.sleep(60)
    """
)


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"  # a zombie nobody has reaped yet is gone too


def test_killing_tunesmith_stops_its_command_and_the_run_is_marked_failed(workspace):
    proc = start_run(workspace, PY, "-c", SLEEPER)
    child = int((workspace / "runs" / "1" / "pid").read_text())
    proc.kill()  # kill -9: tunesmith cannot record anything
    proc.wait()
    deadline = time.monotonic() + 10
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(child)  # the command does not outlive the run that records it
    run = open_workspace().get(1)
    assert run.status == "failed" and run.error == "process died without finishing"


@pytest.mark.parametrize(
    "sig, code, extra",
    [(signal.SIGTERM, 143, []), (signal.SIGINT, 130, []), (signal.SIGTERM, 143, ["stubborn"])],
)
def test_stopping_tunesmith_stops_the_command_and_marks_the_run_interrupted(
    workspace, sig, code, extra
):
    proc = start_run(workspace, PY, "-c", SLEEPER, *extra)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code
    assert "run 1 interrupted" in err
    child = int((workspace / "runs" / "1" / "pid").read_text())
    assert gone(child)
    m = meta(workspace, 1)
    assert m["status"] == "interrupted" and m["exit_code"] == code
    assert [o["path"] for o in m["outputs"]] == ["pid"]


def test_workspace_option_and_nested_tunesmith_use_the_same_workspace(workspace, tmp_path, capsys):
    other = tmp_path / "other"
    script = "import os; print(os.environ['TUNESMITH_HOME'])"
    assert main(["run", "--workspace", str(other), "--", PY, "-c", script]) == 0
    assert capsys.readouterr().out == f"{other}\n"
    assert (other / "runs" / "1" / ".tunesmith" / "meta.json").is_file()
    assert not (workspace / "runs").exists()
