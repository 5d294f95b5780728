"""Sealed outputs: a run's files changed, added or removed after it ended, or symlinks out of
it, are refused when the run is used or mounted, and reported by `tunesmith runs verify`."""

from __future__ import annotations

import pytest

from tunesmith.cli import main
from tunesmith.errors import RunError
from tunesmith.runs import open_workspace, recorded_run, resolve_reference


@pytest.fixture()
def data_run(workspace, capsys):
    """Run 1: data.txt and model/weights.bin, the kind of run later runs use."""
    with recorded_run(kind="data", params={}) as run:
        (run.dir / "data.txt").write_text("a joke\n")
        (run.dir / "model").mkdir()
        (run.dir / "model" / "weights.bin").write_bytes(b"\1\2\3")
    capsys.readouterr()
    return workspace


def _last_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("tunesmith: error:")][-1]


def test_another_run_writing_into_a_finished_run_is_caught_on_use(data_run, capsys):
    # The issue's attack: a command reaching out of its own folder into run 1's.
    assert main(["run", "--", "sh", "-c", "pwd; echo evil >> ../1/data.txt"]) == 0
    assert capsys.readouterr().out.strip() == str(data_run / "runs" / "2")  # its own folder
    with pytest.raises(RunError, match=r"runs/1/data.txt has changed since the run ended"):
        resolve_reference("runs/1")  # as --data runs/1 and tunesmith.load do
    with pytest.raises(RunError, match="runs/1/data.txt has changed"):
        with recorded_run(kind="finetune", params={}) as run:
            run.use("runs/1/data.txt")
    # What was not touched can still be used: only the files a reference names are checked.
    assert resolve_reference("runs/1/model") == data_run / "runs" / "1" / "model"

    assert main(["run", "-m", "runs/1", "--", "true"]) == 1
    error = _last_error(capsys)
    assert "runs/1/data.txt has changed since the run ended" in error
    assert "tunesmith runs verify 1" in error


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda d: (d / "model" / "extra.bin").write_bytes(b"x"), "model/extra.bin was added"),
        (lambda d: (d / "model" / "weights.bin").unlink(), "model/weights.bin is missing"),
        (lambda d: (d / "model" / "weights.bin").write_bytes(b"\1\2\4"), "has changed"),
    ],
)
def test_added_removed_and_changed_files_are_refused(data_run, tamper, message):
    tamper(data_run / "runs" / "1")
    with pytest.raises(RunError, match=message):
        resolve_reference("runs/1/model")


def test_runs_verify_reports_every_change_and_fails(data_run, capsys):
    assert main(["runs", "verify"]) == 0
    assert capsys.readouterr().out == "run 1: ok, 2 files as recorded\n"
    (data_run / "runs" / "1" / "data.txt").write_text("changed\n")
    (data_run / "runs" / "1" / "model" / "weights.bin").unlink()
    assert main(["runs", "verify", "1"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "run 1: data.txt has changed since the run ended",
        "run 1: model/weights.bin is missing",
    ]
    assert captured.err.strip() == "tunesmith: error: 1 of 1 runs changed"


def test_a_symlink_out_of_a_run_is_not_an_output_and_cannot_be_mounted(workspace, capsys):
    secret = workspace.parent / "secret.txt"
    secret.write_text("private\n")
    link_cmd = f"echo ok > ok.txt; ln -s {secret} leak; ln -s {workspace.parent} outside"
    assert main(["run", "--", "sh", "-c", link_cmd]) == 0
    ws = open_workspace()
    assert [o.path for o in ws.outputs(1)] == ["ok.txt"]  # the link's target is not the run's

    for mount, named in (("runs/1/leak", "leak"), ("runs/1/outside", "outside")):
        assert main(["run", "-m", mount, "--", "true"]) == 1
        error = _last_error(capsys)
        assert f"runs/1/{named} is a symlink to" in error and "outside run 1" in error
    assert main(["run", "-m", "runs/1", "--", "true"]) == 1
    assert "runs/1/leak is a symlink to" in _last_error(capsys)
    assert main(["runs", "verify", "1"]) == 1
    assert "run 1: leak is a symlink to" in capsys.readouterr().out


def test_mounted_copies_are_real_files_never_links(workspace, capsys):
    # A link inside the run (to its own file, to its own folder) is copied as the file's bytes;
    # a mounted folder therefore holds nothing a command could write through.
    make = "mkdir -p d/sub && echo x > d/sub/f && ln -s sub/f d/alias && ln -s sub d/subdir"
    assert main(["run", "--", "sh", "-c", make]) == 0
    check = (
        "test -f d/alias && ! test -L d/alias && test -f d/sub/f && ! test -e d/subdir "
        "&& find d -type l | wc -l"
    )
    assert main(["run", "-m", "runs/1/d", "--", "sh", "-c", check]) == 0
    assert capsys.readouterr().out.strip() == "0"


def test_mounting_a_symlinked_folder_is_one_line(workspace, capsys):
    # `ln -s /etc linkdir` used to fail the mount with a ValueError traceback.
    assert main(["run", "--", "sh", "-c", "mkdir real && echo a > real/a && ln -s /etc etc"]) == 0
    assert main(["run", "-m", "runs/1/etc", "--", "true"]) == 1
    assert "runs/1/etc is a symlink to /etc, outside run 1" in _last_error(capsys)


def test_a_mounted_folder_cannot_write_into_the_source_run(workspace, capsys):
    assert main(["run", "--", "sh", "-c", "mkdir d && echo a > d/a"]) == 0
    main(["run", "-m", "runs/1/d", "--", "sh", "-c", "echo b >> d/a"])  # read-only, but root
    assert (workspace / "runs" / "1" / "d" / "a").read_text() == "a\n"
    assert main(["runs", "verify", "1"]) == 0
