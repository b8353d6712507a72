"""The cgroups package's os-free path helpers must behave as os.path's and os.walk."""

import itertools
import os
import posixpath

import pytest

from capsa.cgroups.common import commonpath, exists, relpath, walk_dirs

PARTS = ["", "/", "a", "/a", "a/", "..", ".", "//", "///b", "b/../c", "./d", "e//f/", "../..", "/.."]


def test_commonpath_matches_posixpath():
    for paths in itertools.product(PARTS, repeat=2):
        try:
            expected = posixpath.commonpath(paths)
        except ValueError:
            with pytest.raises(ValueError):
                commonpath(list(paths))
            continue
        assert commonpath(list(paths)) == expected, paths
    with pytest.raises(ValueError):
        commonpath([])


def test_relpath_matches_posixpath():
    for path, start in itertools.product(PARTS[1:] + ["/sys/fs/cgroup/a/b", "/sys/fs/cgroup"], repeat=2):
        assert relpath(path, start) == posixpath.relpath(path, start), (path, start)
    with pytest.raises(ValueError):
        relpath("", "/")


def test_exists(tmp_path):
    (tmp_path / "file").write_text("x")
    os.symlink("missing", tmp_path / "dangling")
    assert exists(str(tmp_path / "file")) and exists(str(tmp_path))
    assert not exists(str(tmp_path / "dangling")) and not exists("bad\0path")
    assert not exists(str(tmp_path / "missing"))


def test_walk_dirs_matches_os_walk(tmp_path):
    for sub in ("a/b/c", "a/d", "e"):
        os.makedirs(tmp_path / sub)
    (tmp_path / "a" / "file").write_text("x")
    os.symlink(str(tmp_path / "a"), tmp_path / "link")  # listed by os.walk, never entered
    assert list(walk_dirs(str(tmp_path))) == [top for top, _, _ in os.walk(str(tmp_path))]
    assert list(walk_dirs(str(tmp_path / "missing"))) == []
