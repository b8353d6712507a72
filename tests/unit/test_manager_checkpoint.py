"""capsa.manager.checkpoint's pure rules: the archive's manifest, the paths rewritten for another
store, the members an archive may hold."""

from __future__ import annotations

import io
import tarfile

import pytest

from capsa.manager import checkpoint
from capsa.manager.errors import ManagerError


def test_manifest_of_this_host_is_accepted():
    checkpoint.check_manifest(checkpoint.manifest())


def test_manifest_of_another_architecture_is_refused_naming_both():
    value = dict(checkpoint.manifest(), architecture="arm64")
    with pytest.raises(ManagerError, match="made on 'arm64', this host is 'amd64'"):
        checkpoint.check_manifest(value, architecture="amd64")


def test_manifest_of_another_format_is_refused():
    with pytest.raises(ManagerError, match="format 7 is not one this capsa reads"):
        checkpoint.check_manifest({"format": 7, "architecture": "amd64"}, architecture="amd64")
    with pytest.raises(ManagerError, match="not an object"):
        checkpoint.check_manifest([], architecture="amd64")


def test_architecture_names_are_oci_names(monkeypatch):
    import os

    class Uname:
        machine = "aarch64"

    monkeypatch.setattr(os, "uname", lambda: Uname)
    assert checkpoint.host_architecture() == "arm64"


def test_rewrite_paths_moves_roots_and_id():
    old = {"graph": "/var/lib/capsa", "run": "/run/capsa/@manager", "state": "/run/capsa/@manager/runtime", "id": "a" * 64}
    new = {"graph": "/tmp/g", "run": "/tmp/r", "state": "/tmp/r/runtime", "id": "b" * 64}
    text = ('{"root": "/var/lib/capsa/containers/' + "a" * 64 + '/merged", "cgroupsPath": "capsactl/' + "a" * 64
            + '", "bind": "/var/lib/capsa-other/x", "hosts": "/run/capsa/@manager/x"}')
    assert checkpoint.rewrite_paths(text, old, new) == (
        '{"root": "/tmp/g/containers/' + "b" * 64 + '/merged", "cgroupsPath": "capsactl/' + "b" * 64
        + '", "bind": "/var/lib/capsa-other/x", "hosts": "/tmp/r/x"}')


def _tar(*members: tarfile.TarInfo) -> tarfile.TarFile:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"") if member.isfile() else None)
    data.seek(0)
    return tarfile.open(fileobj=data)


def _member(name: str, kind=tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize("members, error", [
    ([_member("/etc/passwd")], "outside the archive"),
    ([_member("a/../../x")], "outside the archive"),
    ([_member("a", tarfile.SYMTYPE, "/"), _member("a/etc/passwd")], "below a symbolic link"),
    ([_member("h", tarfile.LNKTYPE, "../x")], "links outside"),
])
def test_members_that_leave_the_destination_are_refused(members, error):
    with pytest.raises(ManagerError, match=error):
        list(checkpoint.checked_members(_tar(*members)))


def test_rootfs_members_keep_whiteouts_links_and_modes():
    whiteout = _member("./gone", tarfile.CHRTYPE)
    setuid = _member("./bin/su")
    setuid.mode = 0o4755
    kept = list(checkpoint.checked_members(_tar(whiteout, setuid, _member("./l", tarfile.SYMTYPE, "/etc"))))
    assert [m.name for m in kept] == ["./gone", "./bin/su", "./l"] and kept[1].mode == 0o4755


def test_plain_archives_hold_only_files_and_directories():
    with pytest.raises(ManagerError, match="not a file or directory"):
        list(checkpoint.checked_members(_tar(_member("l", tarfile.SYMTYPE, "x")), plain=True))
