"""Rootfs.mkdir_all: directories made inside the rootfs, whatever symlinks the image holds.

openat2(RESOLVE_IN_ROOT) needs no privilege, so these run on a plain temporary directory.
"""

from __future__ import annotations

import os

import pytest

from capsa.rootfs import Rootfs


@pytest.fixture
def root(tmp_path):
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    r = Rootfs(str(rootfs))
    yield rootfs
    r.close()


def made(rootfs, path: str) -> str:
    """mkdir_all(path); the real path of the directory it returns."""
    r = Rootfs(str(rootfs))
    try:
        fd = r.mkdir_all(path)
    finally:
        r.close()
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def test_existing_and_missing_levels(root):
    (root / "a").mkdir()
    assert made(root, "/a") == str(root / "a")
    assert made(root, "/a/b") == str(root / "a" / "b")  # only the last level missing
    assert made(root, "/x/y/z") == str(root / "x" / "y" / "z")  # several missing


def test_absolute_symlink_stays_in_the_rootfs(root, tmp_path):
    (root / "link").symlink_to("/target")
    outside = tmp_path / "target"
    assert made(root, "/link/sub") == str(root / "target" / "sub")
    assert not outside.exists()


def test_dangling_symlink_as_last_component_is_created_inside(root, tmp_path):
    (root / "dangling").symlink_to("/elsewhere/deep")
    assert made(root, "/dangling") == str(root / "elsewhere" / "deep")
    assert not (tmp_path / "elsewhere").exists()


def test_dot_dot_stops_at_the_rootfs(root, tmp_path):
    assert made(root, "/../../escape") == str(root / "escape")
    assert not (tmp_path / "escape").exists()


def test_a_file_on_the_way_is_an_error(root):
    (root / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        made(root, "/file")
    with pytest.raises(OSError):
        made(root, "/file/sub")
