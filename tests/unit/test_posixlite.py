"""posixlite must behave as the os functions it stands in for on the hot path."""

import itertools
import os
import posixpath

import pytest

from capsa import posixlite

PARTS = ["", "/", "a", "/a", "a/", "..", ".", "//", "///b", "b/../c", "./d", "e//f/", "../..", "/.."]


def test_normpath_matches_posixpath():
    for path in ["/".join(p) for p in itertools.product(PARTS, repeat=3)] + PARTS:
        assert posixlite.normpath(path) == posixpath.normpath(path), path


def test_join_matches_posixpath():
    for parts in itertools.product(PARTS, repeat=3):
        assert posixlite.join(*parts) == posixpath.join(*parts), parts


@pytest.mark.parametrize("path", ["x", "x/../y", "/run/capsa", "../..", "./a//b/"])
def test_abspath_matches_os(path):
    assert posixlite.abspath(path) == os.path.abspath(path)


def test_basename_isdir_isfile(tmp_path):
    (tmp_path / "file").write_text("x")
    os.symlink("file", tmp_path / "link")
    assert posixlite.basename(str(tmp_path / "file")) == "file"
    assert posixlite.isdir(str(tmp_path)) and not posixlite.isdir(str(tmp_path / "file"))
    assert posixlite.isfile(str(tmp_path / "file")) and posixlite.isfile(str(tmp_path / "link"))
    assert not posixlite.isfile(str(tmp_path / "missing")) and not posixlite.isdir("bad\0path")


def test_makedirs(tmp_path):
    deep = str(tmp_path / "a" / "b" / "c")
    posixlite.makedirs(deep, 0o700)
    assert os.path.isdir(deep) and os.stat(deep).st_mode & 0o777 == 0o700
    posixlite.makedirs(deep, exist_ok=True)
    with pytest.raises(FileExistsError):
        posixlite.makedirs(deep)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        posixlite.makedirs(str(tmp_path / "file"), exist_ok=True)


def test_getenv(monkeypatch):
    monkeypatch.setenv("CAPSA_POSIXLITE_TEST", "v\u00e9")
    # os.environ writes through to posix.environ, which posixlite reads.
    assert posixlite.getenv("CAPSA_POSIXLITE_TEST") == "v\u00e9"
    assert posixlite.getenv("CAPSA_NO_SUCH_VARIABLE", "d") == "d"


def test_split_and_dirname_match_posixpath():
    for path in ["/".join(p) for p in itertools.product(PARTS, repeat=3)] + PARTS:
        assert posixlite.split(path) == posixpath.split(path), path
        assert posixlite.dirname(path) == posixpath.dirname(path), path


def test_realpath_matches_os(tmp_path, monkeypatch):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name, target in [("rel", "a/b"), ("abs", str(tmp_path / "a")), ("up", ".."), ("loop1", "loop2"),
                         ("loop2", "loop1"), ("self", "self"), ("dangling", "missing/x"), ("chain", "rel/../b")]:
        os.symlink(target, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    paths = ["", ".", "..", "/", "//", "///x", "rel", "rel/", "rel/..", "abs/b/../b", "up/" + tmp_path.name + "/rel",
             "loop1", "loop1/x", "self/y", "dangling", "dangling/z", "chain", "missing/../rel", "a//b/./"]
    for path in paths + [str(tmp_path / p) for p in paths]:
        assert posixlite.realpath(path) == os.path.realpath(path), path
