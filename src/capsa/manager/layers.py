"""Unpacking an image layer (a tar, maybe gzip-compressed) into a directory that overlayfs can
use as a lower layer, and the storage driver of a graph root (overlay or vfs).

With the overlay driver, OCI whiteouts become overlayfs's own: `.wh.NAME` a character device
0:0 named NAME, and `.wh..wh..opq` the xattr trusted.overlay.opaque=y on its directory. With
the vfs driver they stay as the tar has them (files named .wh.*): a graph root on overlayfs
(one reason for vfs) would take a 0:0 device for its own whiteout and refuses trusted.overlay.*
xattrs; storage.copy_layers applies them. No member may reach outside
the layer: absolute names and `..` are refused, and no path is followed through a symlink that
an earlier member made (each parent is checked with lstat, the directory is fresh and private).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import zlib

from capsa.manager.errors import ImageError, ManagerError

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
DRIVERS = ("overlay", "vfs")
SHORT = 16  # hex digits of a layer id in its l/ link name


# --- the storage driver of a graph root, and the l/ links of the overlay driver --------------------

def driver_name(paths) -> str:
    """The graph root's storage driver: "overlay" or "vfs" (decided on first use, then kept)."""
    record = os.path.join(paths.graph_root, "storage-driver")
    try:
        with open(record) as f:
            name = f.read().strip()
        if name in DRIVERS:
            return name
    except FileNotFoundError:
        pass
    wanted = os.environ.get("CAPSA_STORAGE_DRIVER", "")
    if wanted and wanted not in DRIVERS:
        raise ManagerError(f"CAPSA_STORAGE_DRIVER={wanted!r}: use overlay or vfs")
    name = wanted or ("overlay" if _overlay_works(paths) else "vfs")
    os.makedirs(paths.graph_root, mode=0o700, exist_ok=True)
    partial = f"{record}.{os.getpid()}"
    with open(partial, "w") as f:
        f.write(name + "\n")
    os.replace(partial, record)
    return name


def _overlay_works(paths) -> bool:
    """Whether an overlayfs with its upper directory on the graph root mounts."""
    import tempfile

    from capsa import linux

    os.makedirs(paths.tmp, mode=0o700, exist_ok=True)
    probe = tempfile.mkdtemp(prefix=f"probe-{os.getpid()}-", dir=paths.tmp)
    try:
        for name in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(probe, name))
        try:
            linux.mount("overlay", f"{probe}/merged", "overlay", 0,
                        f"lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work")
        except OSError:
            return False
        linux.umount2(f"{probe}/merged", 0)
        return True
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def short_link(paths, layer_id: str) -> str:
    """layers/l/<short>: a symlink to the layer's diff/, made when first needed."""
    link_dir = os.path.join(paths.layers, "l")
    link = os.path.join(link_dir, layer_id[:SHORT])
    target = os.path.join("..", layer_id, "diff")
    try:
        if os.readlink(link) == target:
            return link
        os.unlink(link)  # a link left by another layer of the same prefix, or a crash
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(link, ignore_errors=True)
    os.makedirs(link_dir, mode=0o700, exist_ok=True)
    try:
        os.symlink(target, link)
    except FileExistsError:  # a parallel mount made it
        pass
    if os.readlink(link) != target:
        raise ManagerError(f"two layers share the short name {layer_id[:SHORT]}: remove one of their images")
    return link


def remove_short_link(paths, layer_id: str) -> None:
    link = os.path.join(paths.layers, "l", layer_id[:SHORT])
    try:
        if os.readlink(link) == os.path.join("..", layer_id, "diff"):
            os.unlink(link)
    except OSError:
        pass





class HashingReader:
    """A file object that hashes what is read through it (the diff id of an uncompressed layer)."""

    def __init__(self, raw):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


def _safe_name(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ImageError(f"layer member {name!r} reaches outside the layer")
    return "/".join(parts)


def _check_parents(root: str, relative: str) -> str:
    """Make the parents of `relative` inside `root` as directories; refuse a symlink among them."""
    path = root
    for part in relative.split("/")[:-1]:
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ImageError(f"layer member {relative!r} goes through {part!r}, which is not a directory")
    return os.path.join(root, relative)


def _real_parents(root: str, relative: str) -> bool:
    """Whether every parent of `relative` inside `root` is a directory, not a symlink (a hard
    link's target is looked up without following any link a member made)."""
    path = root
    for part in relative.split("/")[:-1]:
        path = os.path.join(path, part)
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return False
        except FileNotFoundError:
            return False
    return True


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def unpack(fileobj, target: str, native_whiteouts: bool = True) -> tuple[str, int]:
    """Unpack the layer tar read from `fileobj` (compressed or not) into the empty directory
    `target`; return (diff id, size of the uncompressed tar: podman's layer size). Raises
    ImageError for a truncated or foreign tar."""
    hashing = HashingReader(_decompressed(fileobj))
    try:
        with tarfile.open(fileobj=hashing, mode="r|") as tar:
            for member in tar:
                _extract(tar, member, target, native_whiteouts)
            # Read to the end: the diff id covers the padding after the last member too.
            while hashing.read(1 << 16):
                pass
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        if isinstance(err, OSError) and err.errno:
            raise  # the store's disk (ENOSPC, ...): the caller says so
        raise ImageError(f"layer is not a valid tar archive or is truncated: {err}") from None
    return hashing.digest(), hashing.size


def _decompressed(fileobj):
    head = fileobj.peek(4)[:4] if hasattr(fileobj, "peek") else b""
    if head[:2] == b"\x1f\x8b":
        import gzip

        return gzip.GzipFile(fileobj=fileobj, mode="rb")
    if head == b"\x28\xb5\x2f\xfd":
        raise ImageError("zstd-compressed layers are not supported (no zstd in Python's standard library)")
    return fileobj


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, root: str, native_whiteouts: bool = True) -> int:
    name = _safe_name(member.name)
    if not name:
        return 0
    base = os.path.basename(name)
    if not native_whiteouts and base.startswith(WHITEOUT_PREFIX):
        path = _check_parents(root, name)
        _remove(path)
        with open(path, "xb"):  # kept as the marker it is; storage.copy_layers applies it
            pass
        return 0
    if base == OPAQUE:
        directory = _check_parents(root, name).rpartition("/")[0]
        os.setxattr(directory, "trusted.overlay.opaque", b"y")
        return 0
    if base.startswith(WHITEOUT_PREFIX):
        hidden = _check_parents(root, name[: -len(base)] + base[len(WHITEOUT_PREFIX):])
        _remove(hidden)
        os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        return 0
    path = _check_parents(root, name)
    if member.isdir():
        if not os.path.isdir(path) or os.path.islink(path):
            _remove(path)
            os.mkdir(path, 0o700)
    else:
        _remove(path)
        if member.isreg():
            source = tar.extractfile(member)
            with open(path, "xb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            link = _safe_name(member.linkname)
            source = os.path.join(root, link)
            if not link or not _real_parents(root, link) or not os.path.lexists(source) \
                    or os.path.isdir(source) and not os.path.islink(source):
                raise ImageError(f"layer member {name!r} is a hard link to {member.linkname!r}, not in the layer")
            os.link(source, path, follow_symlinks=False)
            return 0
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(path, kind | member.mode, os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            os.mkfifo(path, member.mode)
        else:
            return 0
    os.lchown(path, member.uid, member.gid)
    if not member.issym():
        os.chmod(path, member.mode & 0o7777)
        os.utime(path, (member.mtime, member.mtime))
    for key, value in (member.pax_headers or {}).items():
        if key.startswith("SCHILY.xattr."):
            if key.startswith("SCHILY.xattr.trusted.overlay."):
                continue  # overlayfs's own (redirect, metacopy, ...): a layer must not forge them
            try:
                os.setxattr(path, key[len("SCHILY.xattr."):], value.encode("utf-8", "surrogateescape"),
                            follow_symlinks=False)
            except OSError:
                pass  # an xattr namespace this file system refuses (security.*, ...)
    return member.size if member.isreg() else 0
