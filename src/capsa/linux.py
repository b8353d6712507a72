"""The kernel calls capsa needs that the os module does not have, through ctypes.

This is the only module that touches ctypes. It is imported only by the code paths that set up a
container (create, run, exec); state, kill, start and delete never load it.
"""

from __future__ import annotations

import ctypes
import errno
import os

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# x86_64 syscall numbers for calls glibc has no wrapper for.
SYS_CAPGET = 125
SYS_CAPSET = 126
SYS_PIVOT_ROOT = 155
SYS_KEYCTL = 250
SYS_PIDFD_OPEN = 434
SYS_CLOSE_RANGE = 436
SYS_OPENAT2 = 437
SYS_MOUNT_SETATTR = 442

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# Mount flags and attributes live with the pure option parser; re-exported here for the callers
# of mount() and mount_setattr().
from capsa.mountopts import (  # noqa: E402, F401
    MOUNT_ATTR__ATIME,
    MOUNT_ATTR_NOATIME,
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NODIRATIME,
    MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_NOSYMFOLLOW,
    MOUNT_ATTR_RDONLY,
    MOUNT_ATTR_RELATIME,
    MOUNT_ATTR_STRICTATIME,
    MS_BIND,
    MS_DIRSYNC,
    MS_I_VERSION,
    MS_LAZYTIME,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_NOSYMFOLLOW,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SHARED,
    MS_SILENT,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
)

MS_MOVE = 8192
MS_PROPAGATION = MS_SHARED | MS_SLAVE | MS_PRIVATE | MS_UNBINDABLE

MNT_DETACH = 2

AT_RECURSIVE = 0x8000

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

CLOSE_RANGE_CLOEXEC = 1 << 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

PROC_SUPER_MAGIC = 0x9FA0


def _check(result: int, what: str, path: str | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return result


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)), "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), "umount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(SYS_PIVOT_ROOT, _b(new_root), _b(put_old)), "pivot_root", new_root)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check(_libc.setdomainname(raw, len(raw)), "setdomainname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(
        _libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)),
        "prctl",
    )


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    return _check(
        _syscall(SYS_OPENAT2, dirfd, _b(path), ctypes.byref(how), ctypes.sizeof(how)), "openat2", path
    )


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int, attr_clr: int, propagation: int = 0) -> None:
    attr = _MountAttr(attr_set, attr_clr, propagation, 0)
    _check(
        _syscall(SYS_MOUNT_SETATTR, dirfd, _b(path), flags, ctypes.byref(attr), ctypes.sizeof(attr)),
        "mount_setattr",
        path,
    )


def close_range_cloexec(first: int) -> None:
    """Mark every fd >= first close-on-exec (the kernel does it in one call)."""
    _check(_syscall(SYS_CLOSE_RANGE, first, ctypes.c_uint(0xFFFFFFFF), CLOSE_RANGE_CLOEXEC), "close_range")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_syscall(SYS_CAPSET, ctypes.byref(header), data), "capset")


def join_session_keyring(name: str) -> None:
    """Give the process a new session keyring, so containers never share the caller's keys."""
    keyctl_join_session_keyring = 1
    _check(_syscall(SYS_KEYCTL, keyctl_join_session_keyring, _b(name)), "keyctl")


def capget_permitted() -> int:
    """This process's permitted capability set."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_syscall(SYS_CAPGET, ctypes.byref(header), data), "capget")
    return data[0].permitted | (data[1].permitted << 32)


def fstatfs_type(fd: int) -> int:
    """The f_type (filesystem magic) of the filesystem fd is on."""
    buf = (ctypes.c_long * 15)()  # struct statfs is 120 bytes on x86_64; f_type comes first
    _check(_libc.fstatfs(fd, buf), "fstatfs")
    return buf[0]


# -- fork into a cgroup (clone3 CLONE_INTO_CGROUP) ------------------------------------------------
SYS_CLONE3 = 435
SYS_GETTID = 186
CLONE_CHILD_SETTID = 0x01000000
CLONE_INTO_CGROUP = 0x200000000
# Where glibc (2.34 .. 2.40 on x86-64) keeps a thread's kernel tid in its struct pthread. Checked
# against gettid() before use: a libc with another layout falls back to plain fork().
_PTHREAD_TID_OFFSET = 0x2D0


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
        "set_tid", "set_tid_size", "cgroup",
    )]


def _own_tid_address() -> int | None:
    """The address of glibc's cached tid of this thread, if it is where we expect it."""
    pthread_self = ctypes.PyDLL(None).pthread_self
    pthread_self.restype = ctypes.c_void_p
    address = pthread_self() + _PTHREAD_TID_OFFSET
    return address if ctypes.c_int.from_address(address).value == _syscall(SYS_GETTID) else None


def fork_into_cgroup(cgroup_fd: int) -> int | None:
    """fork(), with the child born in the cgroup2 directory `cgroup_fd`; None if not possible here.

    Why: writing another process's pid to a cgroup.procs file takes the kernel's global
    cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period (5-20 ms here),
    while a child born in its cgroup costs nothing extra. Done as os.fork() does it (the
    interpreter's before/after-fork hooks, the GIL held throughout by PyDLL), and glibc's cached
    tid of the child is set by the kernel (CLONE_CHILD_SETTID) as glibc's own fork() does.
    Returns the child's pid in the parent and 0 in the child, like os.fork().
    """
    tid_address = _own_tid_address()
    if tid_address is None:
        return None
    args = _CloneArgs(
        flags=CLONE_INTO_CGROUP | CLONE_CHILD_SETTID, child_tid=tid_address, exit_signal=17, cgroup=cgroup_fd,
    )
    raw_syscall = ctypes.PyDLL(None, use_errno=True).syscall
    raw_syscall.restype = ctypes.c_long
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = raw_syscall(SYS_CLONE3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    error = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        if error in (errno.ENOSYS, errno.E2BIG, errno.EINVAL):  # older kernel: no clone3 or no cgroup flag
            return None
        raise OSError(error, f"clone3 into cgroup: {os.strerror(error)}")
    return pid


# -- inotify (cgroup v2 OOM events: memory.events changes) --------------------------------------------
IN_MODIFY = 0x00000002
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC


def inotify_watch(path: str, mask: int = IN_MODIFY) -> int:
    """An inotify fd (non-blocking) watching `path` for `mask`."""
    fd = _check(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")
    try:
        _check(_libc.inotify_add_watch(fd, os.fsencode(path), mask), "inotify_add_watch", path)
    except OSError:
        os.close(fd)
        raise
    return fd
