"""The kernel calls capsa needs that the os module does not have, through _ctypes.

This is the only module that makes foreign calls for the runtime's syscalls (bpf.py and
seccomp.py take their C types and functions from here). It is imported only by the code paths
that set up a container (create, run, exec); state, kill, start and delete never load it.

Why _ctypes and not ctypes: `import ctypes` costs 10.6M instructions (~2.5 ms, callgrind) of every
create, run and exec; ctypes/__init__.py builds dozens of classes and caches and imports os
(4.4M by itself). The C module `_ctypes` costs 0.8M and has everything used here: dlopen, a
function-pointer type, simple types, structures, arrays (`Type * n`), byref and errno.
"""

from __future__ import annotations

import _ctypes
import _struct
import errno
import posix
from _ctypes import Structure, _SimpleCData, addressof, byref, get_errno, sizeof  # noqa: F401 - for bpf, seccomp


# The C types, defined as ctypes defines them (LP64). Each costs ~0.14M instructions to create (a
# class and its byte-swapped twin), so only c_long and c_uint are made at import, the others on
# first use: by _type() here, by the module's __getattr__ for `from capsa.linux import c_char`.
# The kernel's argument structures are packed with _struct rather than made Structure classes.
class c_long(_SimpleCData):
    _type_ = "l"


class c_uint(_SimpleCData):
    _type_ = "I"


c_uint32 = c_uint
_TYPE_CODES = {"c_int": "i", "c_ushort": "H", "c_ulong": "L", "c_void_p": "P", "c_char": "c", "c_char_p": "z"}
_ALIASES = {"c_uint64": "c_ulong", "c_size_t": "c_ulong"}


def _type(name: str) -> type:
    real = _ALIASES.get(name, name)
    made = globals().get(real)
    if made is None:
        made = globals()[real] = type(real, (_SimpleCData,), {"_type_": _TYPE_CODES[real]})
    globals()[name] = made
    return made


def __getattr__(name: str) -> type:
    if _ALIASES.get(name, name) not in _TYPE_CODES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _type(name)


class _Function(_ctypes.CFuncPtr):
    """A C function (cdecl) of which ctypes keeps errno, the GIL released during the call; without
    a restype it returns a C int."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO


class _PythonFunction(_ctypes.CFuncPtr):
    """The same with the GIL held (ctypes' PyDLL): for the interpreter's own API and for clone3."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_PYTHONAPI | _ctypes.FUNCFLAG_USE_ERRNO


class Library:
    """A shared library (dlopen; OSError if it cannot be loaded): what CFuncPtr((name, library))
    reads is its handle."""

    def __init__(self, name: str | None):
        self._handle = _ctypes.dlopen(name, _ctypes.RTLD_LOCAL)


_process = Library(None)  # the interpreter's own symbols: libc and libpython


def function(name: str, restype: type | str | None = "int", library: Library = _process,
             hold_gil: bool = False) -> _Function:
    """The C function `name` of `library` (this process's libc by default), errno kept; restype
    None is void."""
    func = (_PythonFunction if hold_gil else _Function)((name, library))
    if restype != "int":
        func.restype = restype
    return func


def string_buffer(init: bytes | int, size: int | None = None) -> _ctypes.Array:
    """ctypes.create_string_buffer: a zeroed char array of `init` bytes, or one holding the bytes
    `init` (NULs included) in `size` bytes, by default one more for a terminating NUL."""
    c_char = _type("c_char")
    if isinstance(init, int):
        return (c_char * init)()
    buffer = (c_char * (len(init) + 1 if size is None else size))()
    buffer[:len(init)] = init
    return buffer


class _Libc:
    """libc's functions by attribute, made on first use (as ctypes.CDLL's)."""

    def __getattr__(self, name: str) -> _Function:
        func = function(name)
        setattr(self, name, func)
        return func


_libc = _Libc()
_syscall = function("syscall", c_long)

# x86_64 syscall numbers for calls glibc has no wrapper for.
SYS_CAPGET = 125
SYS_CAPSET = 126
SYS_PIVOT_ROOT = 155
SYS_KEYCTL = 250
SYS_PIDFD_OPEN = 434
SYS_CLOSE_RANGE = 436
SYS_OPENAT2 = 437
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
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
        err = get_errno()
        raise OSError(err, f"{what}: {posix.strerror(err)}", path)
    return result


def _b(path: str | None) -> bytes | None:
    """os.fsencode of a str path (bytes pass through)."""
    if path is None or isinstance(path, bytes):
        return path
    return path.encode("utf-8", "surrogateescape")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    # c_long, not c_ulong: the same 64-bit register, and one C type less to make (see the top).
    _check(_libc.mount(_b(source), _b(target), _b(fstype), c_long(flags), _b(data)), "mount", target)


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
        _libc.prctl(option, c_long(arg2), c_long(arg3), c_long(arg4), c_long(arg5)),
        "prctl",
    )


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = _struct.pack("QQQ", flags | posix.O_CLOEXEC, mode, resolve)  # struct open_how, read by the kernel
    return _check(_syscall(SYS_OPENAT2, dirfd, _b(path), how, len(how)), "openat2", path)


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int, attr_clr: int, propagation: int = 0) -> None:
    attr = _struct.pack("QQQQ", attr_set, attr_clr, propagation, 0)  # struct mount_attr, read by the kernel
    _check(
        _syscall(SYS_MOUNT_SETATTR, dirfd, _b(path), flags, attr, len(attr)),
        "mount_setattr",
        path,
    )


def open_tree(dirfd: int, path: str, flags: int) -> int:
    """open_tree(2): with OPEN_TREE_CLONE, a detached copy of the mount (tree, with AT_RECURSIVE)
    at `path`, as an fd that move_mount() can attach anywhere later."""
    return _check(_syscall(SYS_OPEN_TREE, dirfd, _b(path), c_uint(flags)), "open_tree", path)


def move_mount(from_dirfd: int, from_path: str, to_dirfd: int, to_path: str, flags: int) -> None:
    """move_mount(2): attach the mount at from_dirfd/from_path (a detached tree from open_tree
    with MOVE_MOUNT_F_EMPTY_PATH) on to_dirfd/to_path (MOVE_MOUNT_T_EMPTY_PATH: the fd itself)."""
    _check(
        _syscall(SYS_MOVE_MOUNT, from_dirfd, _b(from_path), to_dirfd, _b(to_path), c_uint(flags)),
        "move_mount",
        to_path or from_path,
    )


def mount_setattr_idmap(tree_fd: int, userns_fd: int, recursive: bool) -> None:
    """Give the detached mount `tree_fd` (and its submounts if `recursive`) the id mapping of the
    user namespace `userns_fd`."""
    attr = _struct.pack("QQQQ", MOUNT_ATTR_IDMAP, 0, 0, userns_fd)  # struct mount_attr
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _check(_syscall(SYS_MOUNT_SETATTR, tree_fd, b"", flags, attr, len(attr)), "mount_setattr")


# -- scheduling, I/O priority, memory policy (process.scheduler, process.ioPriority, linux.memoryPolicy)
# Numbers of the older syscalls differ between architectures (those from 424 on are shared).
_SYSCALLS_BY_MACHINE = {
    "x86_64": {"set_mempolicy": 238, "ioprio_set": 251, "ioprio_get": 252, "sched_setattr": 314},
    "aarch64": {"set_mempolicy": 237, "ioprio_set": 30, "ioprio_get": 31, "sched_setattr": 274},
}


def _syscall_number(name: str) -> int:
    numbers = _SYSCALLS_BY_MACHINE.get(posix.uname().machine)
    if numbers is None:
        raise OSError(errno.ENOSYS, f"{name}: no syscall number known for {posix.uname().machine}")
    return numbers[name]


def sched_setattr(policy: int, flags: int, nice: int, priority: int, runtime: int, deadline: int, period: int) -> None:
    """sched_setattr(2) of this thread (the process's only one)."""
    # struct sched_attr, SCHED_ATTR_SIZE_VER1 (56 bytes: util_min/util_max 0, as runc passes them)
    attr = _struct.pack("=IIQiIQQQII", 56, policy, flags, nice, priority, runtime, deadline, period, 0, 0)
    _check(_syscall(_syscall_number("sched_setattr"), 0, attr, 0), "sched_setattr")


IOPRIO_WHO_PROCESS = 1
IOPRIO_WHO_PGRP = 2
IOPRIO_CLASS_SHIFT = 13


def ioprio_set(which: int, who: int, ioprio: int) -> None:
    _check(_syscall(_syscall_number("ioprio_set"), which, who, ioprio), "ioprio_set")


def ioprio_get(which: int, who: int) -> int:
    return _check(_syscall(_syscall_number("ioprio_get"), which, who), "ioprio_get")


def set_mempolicy(mode: int, nodes: list[int]) -> None:
    """set_mempolicy(2) of this thread: `mode` with its flags, on the NUMA nodes `nodes`."""
    words = [0] * (max(nodes, default=-1) // 64 + 1)
    for node in nodes:
        words[node // 64] |= 1 << (node % 64)
    mask = _struct.pack(f"{len(words)}Q", *words) if words else None
    # maxnode counts one more than the bits given (the kernel has always dropped the last one).
    _check(_syscall(_syscall_number("set_mempolicy"), mode, mask, c_long(len(words) * 64 + 1 if words else 0)),
           "set_mempolicy")


def close_range_cloexec(first: int) -> None:
    """Mark every fd >= first close-on-exec (the kernel does it in one call)."""
    _check(_syscall(SYS_CLOSE_RANGE, first, c_uint(0xFFFFFFFF), CLOSE_RANGE_CLOEXEC), "close_range")


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _cap_buffer() -> _ctypes.Array:
    """struct __user_cap_header_struct (version, pid) then two struct __user_cap_data_struct
    (effective, permitted, inheritable; low then high 32 bits), as one writable array of u32."""
    buffer = (c_uint * 8)()
    buffer[0] = _LINUX_CAPABILITY_VERSION_3
    return buffer


def capset(effective: int, permitted: int, inheritable: int) -> None:
    buffer = _cap_buffer()
    for i in range(2):
        shift = 32 * i
        buffer[2 + 3 * i] = (effective >> shift) & 0xFFFFFFFF
        buffer[3 + 3 * i] = (permitted >> shift) & 0xFFFFFFFF
        buffer[4 + 3 * i] = (inheritable >> shift) & 0xFFFFFFFF
    _check(_syscall(SYS_CAPSET, byref(buffer), byref(buffer, 8)), "capset")


def join_session_keyring(name: str) -> None:
    """Give the process a new session keyring, so containers never share the caller's keys."""
    keyctl_join_session_keyring = 1
    _check(_syscall(SYS_KEYCTL, keyctl_join_session_keyring, _b(name)), "keyctl")


def capget_permitted() -> int:
    """This process's permitted capability set."""
    buffer = _cap_buffer()
    _check(_syscall(SYS_CAPGET, byref(buffer), byref(buffer, 8)), "capget")
    return buffer[3] | (buffer[6] << 32)


def fstatfs_type(fd: int) -> int:
    """The f_type (filesystem magic) of the filesystem fd is on."""
    buf = (c_long * 15)()  # struct statfs is 120 bytes on x86_64; f_type comes first
    _check(_libc.fstatfs(fd, buf), "fstatfs")
    return buf[0]


# -- fork into a cgroup (clone3 CLONE_INTO_CGROUP) ------------------------------------------------
# Why a raw clone3 is safe here, and only here. glibc's fork() does more than the syscall, and a
# raw clone3 skips all of it:
#
# 1. The child's tid. glibc caches each thread's kernel tid in its struct pthread (THREAD_SELF->tid),
#    and its fork() has the kernel store the child's tid there (CLONE_CHILD_SETTID). glibc takes that
#    cached tid as the owner of recursive and error-checking mutexes (the dynamic loader's lock, which
#    dlopen/dlsym take, among them), as the futex word of PI and robust mutexes, and for pthread calls
#    on pthread_self(); a raw clone3 child would carry its parent thread's tid. So we do what glibc
#    does: pass the address of that field as clone_args.child_tid. glibc does not export where the
#    field is: it is 0x2D0 bytes into struct pthread on x86-64 from glibc 2.34 to 2.40 (Debian 12 has
#    2.36). That offset is capsa's one dependency on glibc's private layout; it is checked before
#    every use (the field must hold this thread's gettid()), and a libc with another layout gets
#    plain fork() instead: slower on cgroup2, never wrong.
# 2. Other threads. With more than one thread, glibc's fork() takes its internal locks (every malloc
#    arena, stdio's list lock, the loader's lock) around the syscall and resets them in the child,
#    runs pthread_atfork handlers, and tells the child it has one thread. A raw clone3 copies a lock
#    that another thread holds at that instant, held, into a child where no thread will ever release
#    it: the child hangs in its next malloc, or in the glibc fork() that forks the container's init,
#    which locks every arena (__malloc_fork_lock_parent: seen with busy threads in the caller,
#    tests/integration/test_process.py). Nothing done from here could make that safe, so a process
#    with other threads never clones this way: fork_into_cgroup returns None, launch forks with
#    glibc's fork() and the child joins its cgroup2 directory through cgroup.procs (paying the RCU
#    grace period that being born there saves). The capsa command is single-threaded: it always
#    takes the fast path; a threaded Python program (a manager, the Python API) the safe one.
SYS_CLONE3 = 435
SYS_GETTID = 186
CLONE_CHILD_SETTID = 0x01000000
CLONE_INTO_CGROUP = 0x200000000
# Where glibc (2.34 .. 2.40 on x86-64) keeps a thread's kernel tid in its struct pthread (see 1.
# above). Checked against gettid() before use.
_PTHREAD_TID_OFFSET = 0x2D0


def _own_tid_address() -> int | None:
    """The address of glibc's cached tid of this thread, if it is where we expect it."""
    pthread_self = function("pthread_self", c_long, hold_gil=True)  # a pointer: LP64 longs hold them
    address = pthread_self() + _PTHREAD_TID_OFFSET
    return address if c_uint.from_address(address).value == _syscall(SYS_GETTID) else None


def thread_count() -> int:
    """How many threads this process has (/proc/self/task has one entry per thread)."""
    return len(posix.listdir("/proc/self/task"))


def fork_into_cgroup(cgroup_fd: int) -> int | None:
    """fork(), with the child born in the cgroup2 directory `cgroup_fd`; None if not possible here:
    an old kernel, a libc whose layout we do not know, or a process with other threads (see the
    comment above: only a single-threaded process may bypass glibc's fork()).

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
    # struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls,
    # set_tid, set_tid_size, cgroup (read by the kernel).
    args = _struct.pack("11Q", CLONE_INTO_CGROUP | CLONE_CHILD_SETTID, 0, tid_address, 0, 17, 0, 0, 0, 0, 0, cgroup_fd)
    raw_syscall = function("syscall", c_long, hold_gil=True)
    before, child, parent = (function(name, hold_gil=True) for name in (
        "PyOS_BeforeFork", "PyOS_AfterFork_Child", "PyOS_AfterFork_Parent"))
    before()
    # Counted after the interpreter's before-fork hooks (which could start a thread): from here to
    # the clone3 only this thread runs, and no other can appear.
    if thread_count() > 1:
        parent()
        return None
    pid = raw_syscall(SYS_CLONE3, args, c_long(len(args)))
    if pid == 0:
        child()
        return 0
    error = get_errno()
    parent()
    if pid < 0:
        if error in (errno.ENOSYS, errno.E2BIG, errno.EINVAL):  # older kernel: no clone3 or no cgroup flag
            return None
        raise OSError(error, f"clone3 into cgroup: {posix.strerror(error)}")
    return pid


# -- inotify (cgroup v2 OOM events: memory.events changes) --------------------------------------------
IN_MODIFY = 0x00000002
IN_NONBLOCK = posix.O_NONBLOCK
IN_CLOEXEC = posix.O_CLOEXEC


def inotify_watch(path: str, mask: int = IN_MODIFY) -> int:
    """An inotify fd (non-blocking) watching `path` for `mask`."""
    fd = _check(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")
    try:
        _check(_libc.inotify_add_watch(fd, _b(path), mask), "inotify_add_watch", path)
    except OSError:
        posix.close(fd)
        raise
    return fd
