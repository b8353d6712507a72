"""Unpacking layers (capsa.manager.layers) from hand-made tars: hard links, whiteouts, opaque
directories, members that try to leave the layer, compression, truncation."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile

import pytest

from capsa.manager import layers
from capsa.manager.errors import ImageError

if os.geteuid() != 0:
    pytest.skip("unpacking makes device nodes and trusted.* xattrs: root only", allow_module_level=True)


def make_tar(*members) -> bytes:
    """members: (name, kind, extra) with kind file|dir|symlink|hardlink; extra: content or target."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra, *pax in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            if pax:
                info.pax_headers = pax[0]
            data = None
            if kind == "file":
                info.size = len(extra)
                data = io.BytesIO(extra)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, extra
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, extra
            tar.addfile(info, data)
    return out.getvalue()


class Peek(io.BytesIO):
    def peek(self, n: int) -> bytes:
        position = self.tell()
        data = self.read(n)
        self.seek(position)
        return data


def unpack(data: bytes, tmp_path) -> tuple[str, str]:
    target = tmp_path / "diff"
    target.mkdir()
    diff_id, size = layers.unpack(Peek(data), str(target))
    return diff_id, str(target)


def test_diff_id_and_size_are_the_uncompressed_tars(tmp_path):
    data = make_tar(("etc", "dir", None), ("etc/hostname", "file", b"box\n"))
    target = tmp_path / "diff"
    target.mkdir()
    diff_id, size = layers.unpack(Peek(gzip.compress(data)), str(target))
    assert diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert size == len(data)
    assert (target / "etc" / "hostname").read_bytes() == b"box\n"


def test_hard_links_share_an_inode(tmp_path):
    _, root = unpack(make_tar(("bin", "dir", None), ("bin/busybox", "file", b"\x7fELF"),
                              ("bin/sh", "hardlink", "bin/busybox"), ("./bin/ls", "hardlink", "./bin/busybox")),
                     tmp_path)
    inodes = {os.lstat(os.path.join(root, "bin", name)).st_ino for name in ("busybox", "sh", "ls")}
    assert len(inodes) == 1
    assert os.lstat(os.path.join(root, "bin", "busybox")).st_nlink == 3


def test_a_hard_link_to_nothing_or_through_a_symlink_is_refused(tmp_path):
    with pytest.raises(ImageError, match="hard link to 'missing'"):
        unpack(make_tar(("a", "hardlink", "missing")), tmp_path)
    # The host's /etc/passwd through a symlink the layer made, two levels up: refused, not linked.
    with pytest.raises(ImageError, match="hard link"):
        unpack(make_tar(("escape", "symlink", "/"), ("passwd", "hardlink", "escape/etc/passwd")), tmp_path / "x")


@pytest.fixture(autouse=True)
def _mkdir_x(tmp_path):
    (tmp_path / "x").mkdir()


def test_whiteouts_become_overlay_character_devices(tmp_path):
    _, root = unpack(make_tar(("etc", "dir", None), ("etc/.wh.motd", "file", b""), (".wh.tmp", "file", b"")),
                     tmp_path)
    for path in ("etc/motd", "tmp"):
        st = os.lstat(os.path.join(root, path))
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, path
    assert not os.path.lexists(os.path.join(root, "etc", ".wh.motd"))


def test_opaque_directories_get_the_overlay_xattr(tmp_path):
    _, root = unpack(make_tar(("var", "dir", None), ("var/cache", "dir", None), ("var/cache/.wh..wh..opq", "file", b""),
                              ("var/cache/new", "file", b"n")), tmp_path)
    assert os.getxattr(os.path.join(root, "var", "cache"), "trusted.overlay.opaque") == b"y"
    assert os.listdir(os.path.join(root, "var", "cache")) == ["new"]


def test_members_cannot_leave_the_layer(tmp_path):
    with pytest.raises(ImageError, match="reaches outside"):
        unpack(make_tar(("../evil", "file", b"x")), tmp_path)
    with pytest.raises(ImageError, match="not a directory"):
        unpack(make_tar(("link", "symlink", "/tmp"), ("link/evil", "file", b"x")), tmp_path / "x")
    # An absolute name is inside the layer (tar's convention), not the host's /.
    (tmp_path / "y").mkdir()
    _, root = unpack(make_tar(("/abs", "file", b"inside")), tmp_path / "y")
    assert open(os.path.join(root, "abs"), "rb").read() == b"inside"


def test_overlay_xattrs_of_the_tar_are_not_applied(tmp_path):
    _, root = unpack(make_tar(("d", "dir", None, {"SCHILY.xattr.trusted.overlay.redirect": "/etc",
                                                  "SCHILY.xattr.user.kept": "yes"})), tmp_path)
    assert os.getxattr(os.path.join(root, "d"), "user.kept") == b"yes"
    with pytest.raises(OSError):
        os.getxattr(os.path.join(root, "d"), "trusted.overlay.redirect")


def test_a_later_member_replaces_an_earlier_one(tmp_path):
    _, root = unpack(make_tar(("p", "dir", None), ("p/f", "file", b"1"), ("p", "file", b"now a file")), tmp_path)
    assert open(os.path.join(root, "p"), "rb").read() == b"now a file"


def test_truncated_and_foreign_data_are_image_errors(tmp_path):
    data = make_tar(("big", "file", os.urandom(100_000)))
    with pytest.raises(ImageError, match="truncated"):
        unpack(data[:50_000], tmp_path)
    with pytest.raises(ImageError, match="truncated"):
        unpack(gzip.compress(data)[:30_000], tmp_path / "x")
    (tmp_path / "y").mkdir()
    with pytest.raises(ImageError, match="not a valid tar"):
        unpack(b"hello, this is not a tar at all" * 40, tmp_path / "y")
