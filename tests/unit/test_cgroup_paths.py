"""The cgroups package's os-free path arithmetic (used at create) must behave as posixpath's."""

import itertools
import posixpath

import pytest

from capsa.cgroups.common import commonpath, relpath

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
