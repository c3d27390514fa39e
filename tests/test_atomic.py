"""The final rename of a finished file, on each of its paths: renameat2 where the kernel
has it, link then unlink where it does not, check then rename without hard links."""

from __future__ import annotations

import errno
import os

import pytest

from muxserver import atomic

WAYS = ["renameat2", "link", "no links"]


@pytest.fixture(params=WAYS)
def way(request, monkeypatch):
    if request.param == "renameat2" and atomic._renameat2 is None:
        pytest.skip("this C library has no renameat2")
    if request.param != "renameat2":
        monkeypatch.setattr(atomic, "_renameat2", None)
    if request.param == "no links":
        def no_links(*args, **kwargs):
            raise OSError(errno.EPERM, "no hard links on this file system")
        monkeypatch.setattr(atomic.os, "link", no_links)
    return request.param


@pytest.mark.parametrize("by_dir_fd", [True, False], ids=["dir fd", "paths"])
def test_publish_gives_the_new_name_and_leaves_no_temporary(tmp_path, way, by_dir_fd,
                                                            monkeypatch):
    (tmp_path / "tmp").write_bytes(b"new")
    if by_dir_fd:
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            atomic.publish("tmp", "final", overwrite=False, dir_fd=fd)
        finally:
            os.close(fd)
    else:
        monkeypatch.chdir(tmp_path)
        atomic.publish("tmp", "final", overwrite=False)
    assert sorted(os.listdir(tmp_path)) == ["final"]
    assert (tmp_path / "final").read_bytes() == b"new"


def test_publish_never_replaces_a_name_that_appeared_meanwhile(tmp_path, way):
    (tmp_path / "tmp").write_bytes(b"new")
    (tmp_path / "final").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        atomic.publish(str(tmp_path / "tmp"), str(tmp_path / "final"), overwrite=False)
    assert (tmp_path / "final").read_bytes() == b"someone else's"
    assert (tmp_path / "tmp").read_bytes() == b"new"  # the caller decides what to do


def test_publish_with_overwrite_replaces(tmp_path, way):
    (tmp_path / "tmp").write_bytes(b"new")
    (tmp_path / "final").write_bytes(b"old")
    atomic.publish(str(tmp_path / "tmp"), str(tmp_path / "final"), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["final"]
    assert (tmp_path / "final").read_bytes() == b"new"


def test_rename_new_refuses_an_existing_name(tmp_path, way):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").write_bytes(b"b")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileExistsError):
            atomic.rename_new("a", "b", src_dir_fd=fd, dst_dir_fd=fd)
        atomic.rename_new("a", "c", src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["b", "c"]
