"""Filesystem calls: mounts (mount, umount2, pivot_root, open_tree, move_mount, mount_setattr),
path resolution inside a root (openat2), a filesystem's type (fstatfs) and inotify."""

from __future__ import annotations

import _struct
import posix

from capsa.linux._abi import c_long, c_uint, check, fsencode, get_errno, libc, syscall

# Mount flags live with the pure option parser; re-exported here for the callers of mount().
from capsa.mountopts import (  # noqa: F401
    MS_BIND,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SLAVE,
    MS_UNBINDABLE,
)

MS_MOVE = 8192
MNT_DETACH = 2

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = posix.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_IDMAP = 0x00100000

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

PROC_SUPER_MAGIC = 0x9FA0

# The file type in st_mode (sys/stat.h); the stat module would cost 0.39M instructions to import.
S_IFMT = 0o170000
S_IFIFO = 0o010000
S_IFCHR = 0o020000
S_IFDIR = 0o040000
S_IFBLK = 0o060000
S_IFREG = 0o100000

IN_MODIFY = 0x00000002
IN_NONBLOCK = posix.O_NONBLOCK
IN_CLOEXEC = posix.O_CLOEXEC


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    # c_long, not c_ulong: the same 64-bit register, and one C type less to make (see _abi).
    check(libc.mount(fsencode(source), fsencode(target), fsencode(fstype), c_long(flags), fsencode(data)), "mount", target)


RENAME_EXCHANGE = 2
_NOT_EXCHANGED = (2, 22, 38, 95)  # ENOENT, EINVAL, ENOSYS, EOPNOTSUPP


def exchange(path: str, other: str) -> bool:
    """Swap two names in one step (renameat2 RENAME_EXCHANGE): True if done; False, having done
    nothing, where either is missing or the filesystem or kernel cannot."""
    if libc.renameat2(AT_FDCWD, fsencode(path), AT_FDCWD, fsencode(other), RENAME_EXCHANGE) == 0:
        return True
    error = get_errno()
    if error in _NOT_EXCHANGED:
        return False
    raise OSError(error, f"renameat2: {posix.strerror(error)}", other)


def umount2(target: str, flags: int = 0) -> None:
    check(libc.umount2(fsencode(target), flags), "umount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    check(syscall("pivot_root", fsencode(new_root), fsencode(put_old)), "pivot_root", new_root)


_EAGAIN = 11
_OPENAT2_TRIES = 32


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2), close-on-exec; `resolve` is RESOLVE_* (RESOLVE_IN_ROOT: inside dirfd as a root)."""
    how = _struct.pack("QQQ", flags | posix.O_CLOEXEC, mode, resolve)  # struct open_how, read by the kernel
    encoded = fsencode(path)
    for _ in range(_OPENAT2_TRIES - 1):
        result = syscall("openat2", dirfd, encoded, how, len(how))
        # EAGAIN: a ".." was resolved (RESOLVE_IN_ROOT, RESOLVE_BENEATH) while something was
        # renamed or mounted anywhere on the host; the kernel asks to try again. Bounded: a
        # rootfs whose owner renames without end gets the error.
        if result >= 0 or get_errno() != _EAGAIN:
            return check(result, "openat2", path)
    return check(syscall("openat2", dirfd, encoded, how, len(how)), "openat2", path)


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int, attr_clr: int, propagation: int = 0) -> None:
    attr = _struct.pack("QQQQ", attr_set, attr_clr, propagation, 0)  # struct mount_attr, read by the kernel
    check(syscall("mount_setattr", dirfd, fsencode(path), flags, attr, len(attr)), "mount_setattr", path)


def mount_setattr_idmap(tree_fd: int, userns_fd: int, recursive: bool) -> None:
    """Give the detached mount `tree_fd` (and its submounts if `recursive`) the id mapping of the
    user namespace `userns_fd`."""
    attr = _struct.pack("QQQQ", MOUNT_ATTR_IDMAP, 0, 0, userns_fd)  # struct mount_attr
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    check(syscall("mount_setattr", tree_fd, b"", flags, attr, len(attr)), "mount_setattr")


def open_tree(dirfd: int, path: str, flags: int) -> int:
    """open_tree(2): with OPEN_TREE_CLONE, a detached copy of the mount (tree, with AT_RECURSIVE)
    at `path`, as an fd that move_mount() can attach anywhere later."""
    return check(syscall("open_tree", dirfd, fsencode(path), c_uint(flags)), "open_tree", path)


def move_mount(from_dirfd: int, from_path: str, to_dirfd: int, to_path: str, flags: int) -> None:
    """move_mount(2): attach the mount at from_dirfd/from_path (a detached tree from open_tree
    with MOVE_MOUNT_F_EMPTY_PATH) on to_dirfd/to_path (MOVE_MOUNT_T_EMPTY_PATH: the fd itself)."""
    check(syscall("move_mount", from_dirfd, fsencode(from_path), to_dirfd, fsencode(to_path), c_uint(flags)),
          "move_mount", to_path or from_path)


def file_type(mode: int) -> int:
    """The S_IF* file type of an st_mode."""
    return mode & S_IFMT


def fstatfs_type(fd: int) -> int:
    """The f_type (filesystem magic) of the filesystem fd is on."""
    buf = (c_long * 15)()  # struct statfs is 120 bytes on x86-64 and aarch64; f_type, a long, comes first
    check(libc.fstatfs(fd, buf), "fstatfs")
    return buf[0]


def inotify_watch(path: str, mask: int = IN_MODIFY) -> int:
    """An inotify fd (non-blocking, close-on-exec) watching `path` for `mask`."""
    fd = check(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")
    try:
        check(libc.inotify_add_watch(fd, fsencode(path), mask), "inotify_add_watch", path)
    except OSError:
        posix.close(fd)
        raise
    return fd
