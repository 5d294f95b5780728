"""Atomic writes: a failed write leaves the old file or folder whole and no temporary behind;
a file shared under a second name is a hard link, or a copy where a link cannot be made."""

import errno
import os

import pytest

from tunesmith import files
from tunesmith.files import (
    link_or_copy,
    write_atomically,
    write_folder_atomically,
    write_text_atomically,
)


def test_text_is_written_and_replaced(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    write_text_atomically(path, "first")
    write_text_atomically(path, "second ✓")
    assert path.read_text(encoding="utf-8") == "second ✓"
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "loss.png"
    path.write_bytes(b"old")

    def half_then_fail(tmp):
        assert tmp.suffix == ".png"  # writers that pick the format by suffix still can
        tmp.write_bytes(b"ha")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomically(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]


def test_a_folder_is_replaced_whole(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "stale.bin").write_text("x")
    write_folder_atomically(folder, lambda tmp: (tmp / "weights.bin").write_text("new"))
    assert [p.name for p in folder.iterdir()] == ["weights.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_failed_folder_write_keeps_the_old_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_text("old")

    def fail(tmp):
        (tmp / "weights.bin").write_text("ha")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_folder_atomically(folder, fail)
    assert (folder / "weights.bin").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_file_is_linked_where_it_can_be_and_copied_where_not(tmp_path, monkeypatch):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"weights")
    source.chmod(0o644)
    link_or_copy(source, tmp_path / "linked.bin")
    assert os.path.samefile(source, tmp_path / "linked.bin")

    def across_filesystems(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(files.os, "link", across_filesystems)
    copy = link_or_copy(source, tmp_path / "copied.bin")
    assert copy.read_bytes() == b"weights" and not os.path.samefile(source, copy)
    assert copy.stat().st_mode & 0o777 == 0o644
