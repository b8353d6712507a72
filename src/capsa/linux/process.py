"""The calling process's own attributes: prctl, capabilities, scheduling policy, I/O priority,
NUMA memory policy, resource limits, which fds survive exec; and fork() into a cgroup (clone3)."""

from __future__ import annotations

import _struct
import posix

from capsa.errors import E2BIG, EINVAL, ENOSYS, EPERM
from capsa.linux import arch
from capsa.linux._abi import byref, c_long, c_uint, check, function, get_errno, libc, syscall

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return check(libc.prctl(option, c_long(arg2), c_long(arg3), c_long(arg4), c_long(arg5)), "prctl")


# -- capabilities -------------------------------------------------------------------------------
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _cap_buffer() -> Any:
    """struct __user_cap_header_struct (version, pid) then two struct __user_cap_data_struct
    (effective, permitted, inheritable; low then high 32 bits), as one writable array of u32."""
    buffer = (c_uint * 8)()
    buffer[0] = _LINUX_CAPABILITY_VERSION_3
    return buffer


def capget_permitted() -> int:
    """This process's permitted capability set."""
    buffer = _cap_buffer()
    check(syscall("capget", byref(buffer), byref(buffer, 8)), "capget")
    return buffer[3] | (buffer[6] << 32)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    buffer = _cap_buffer()
    for i in range(2):
        shift = 32 * i
        buffer[2 + 3 * i] = (effective >> shift) & 0xFFFFFFFF
        buffer[3 + 3 * i] = (permitted >> shift) & 0xFFFFFFFF
        buffer[4 + 3 * i] = (inheritable >> shift) & 0xFFFFFFFF
    check(syscall("capset", byref(buffer), byref(buffer, 8)), "capset")


# -- scheduling, I/O priority, memory policy (process.scheduler, process.ioPriority, linux.memoryPolicy)
IOPRIO_WHO_PGRP = 2
IOPRIO_CLASS_SHIFT = 13


def sched_setattr(policy: int, flags: int, nice: int, priority: int, runtime: int, deadline: int, period: int) -> None:
    """sched_setattr(2) of this thread (the process's only one)."""
    # struct sched_attr, SCHED_ATTR_SIZE_VER1 (56 bytes: util_min/util_max 0, as runc passes them)
    attr = _struct.pack("=IIQiIQQQII", 56, policy, flags, nice, priority, runtime, deadline, period, 0, 0)
    check(syscall("sched_setattr", 0, attr, 0), "sched_setattr")


def ioprio_set(which: int, who: int, ioprio: int) -> None:
    check(syscall("ioprio_set", which, who, ioprio), "ioprio_set")


def set_mempolicy(mode: int, nodes: list[int]) -> None:
    """set_mempolicy(2) of this thread: `mode` with its flags, on the NUMA nodes `nodes`."""
    words = [0] * (max(nodes, default=-1) // 64 + 1)
    for node in nodes:
        words[node // 64] |= 1 << (node % 64)
    mask = _struct.pack(f"{len(words)}Q", *words) if words else None
    # maxnode counts one more than the bits given (the kernel has always dropped the last one).
    check(syscall("set_mempolicy", mode, mask, c_long(len(words) * 64 + 1 if words else 0)), "set_mempolicy")


# -- resource limits ----------------------------------------------------------------------------
RLIM_INFINITY = 2**64 - 1  # rlim_t is an unsigned long


def setrlimit(resource: int, soft: int, hard: int) -> None:
    """setrlimit(2) (the `resource` module is a shared library to load: 0.5M instructions).
    Refusals are worded as that module words them, as capsa's messages always did."""
    limits = _struct.pack("QQ", soft, hard)  # struct rlimit
    if libc.setrlimit(resource, limits) < 0:
        err = get_errno()
        why = {EINVAL: "current limit exceeds maximum limit", EPERM: "not allowed to raise maximum limit"}
        raise OSError(err, why.get(err) or posix.strerror(err))


# -- file descriptors ---------------------------------------------------------------------------
CLOSE_RANGE_CLOEXEC = 1 << 2


def close_fds_except(keep: set[int]) -> None:
    """Close every fd of this process but those in `keep`: one close_range per gap between them
    (no listing of /proc/self/fd)."""
    first = 0
    for fd in sorted(keep):
        if fd > first:
            check(syscall("close_range", first, c_uint(fd - 1), 0), "close_range")
        first = max(first, fd + 1)
    check(syscall("close_range", first, c_uint(0xFFFFFFFF), 0), "close_range")


def close_range_cloexec(first: int) -> None:
    """Mark every fd >= first close-on-exec (the kernel does it in one call)."""
    check(syscall("close_range", first, c_uint(0xFFFFFFFF), CLOSE_RANGE_CLOEXEC), "close_range")


# -- fork into a cgroup and namespaces (clone3 CLONE_INTO_CGROUP, CLONE_NEW*) ---------------------
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
#    every use (the field must hold this thread's gettid()), and a libc with another layout (or
#    another architecture's) gets plain fork() instead: slower on cgroup2, never wrong.
# 2. Other threads. With more than one thread, glibc's fork() takes its internal locks (every malloc
#    arena, stdio's list lock, the loader's lock) around the syscall and resets them in the child,
#    runs pthread_atfork handlers, and tells the child it has one thread. A raw clone3 copies a lock
#    that another thread holds at that instant, held, into a child where no thread will ever release
#    it: the child hangs in its next malloc, or in the glibc fork() that forks the container's init,
#    which locks every arena (__malloc_fork_lock_parent: seen with busy threads in the caller,
#    tests/integration/test_process.py). Nothing done from here could make that safe, so a process
#    with other threads never clones this way: clone_child returns None, launch forks with
#    glibc's fork() and the child joins its cgroup2 directory through cgroup.procs (paying the RCU
#    grace period that being born there saves). The capsa command is single-threaded: it always
#    takes the fast path; a threaded Python program (a manager, the Python API) the safe one.
CLONE_CHILD_SETTID = 0x01000000
CLONE_INTO_CGROUP = 0x200000000
_SIGCHLD = 17  # the child's exit signal, as fork()'s (x86-64 and the asm-generic architectures)
# Where glibc (2.34 .. 2.40 on x86-64) keeps a thread's kernel tid in its struct pthread (see 1.
# above). Checked against gettid() before use.
_PTHREAD_TID_OFFSET = 0x2D0


def _own_tid_address() -> int | None:
    """The address of glibc's cached tid of this thread, if it is where we expect it."""
    pthread_self = function("pthread_self", c_long, hold_gil=True)  # a pointer: LP64 longs hold them
    address = pthread_self() + _PTHREAD_TID_OFFSET
    return address if c_uint.from_address(address).value == syscall("gettid") else None


def current_cpu() -> int:
    """The CPU this thread runs on now (glibc's sched_getcpu: the vDSO, no system call); -1 if unknown."""
    return libc.sched_getcpu()


def thread_count() -> int:
    """How many threads this process has (/proc/self/task has one entry per thread)."""
    return len(posix.listdir("/proc/self/task"))


def clone_child(cgroup_fd: int | None = None, namespaces: int = 0) -> int | None:
    """fork(), with the child born in the cgroup2 directory `cgroup_fd` (None: the caller's
    cgroup) and in new namespaces (CLONE_NEW* flags); None if not possible here: an old kernel,
    a libc whose layout (or an architecture whose numbers) we do not know, or a process with
    other threads (see the comment above: only a single-threaded process may bypass glibc's
    fork()).

    Why a cgroup: writing another process's pid to a cgroup.procs file takes the kernel's global
    cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period (5-20 ms here),
    while a child born in its cgroup costs nothing extra. Why namespaces: a child born in them
    is already what unshare() and a second fork would make of it (pid 1 of its pid namespace),
    one copy of the interpreter's address space less. Done as os.fork() does it (the
    interpreter's before/after-fork hooks, the GIL held throughout by PyDLL), and glibc's cached
    tid of the child is set by the kernel (CLONE_CHILD_SETTID) as glibc's own fork() does.
    Returns the child's pid in the parent and 0 in the child, like os.fork(). An error of the
    kernel's (a namespace it refuses) is an OSError.
    """
    try:
        tid_address = _own_tid_address()
        clone3 = arch.number("clone3")
    except OSError:  # no gettid or clone3 number for this machine
        return None
    if tid_address is None:
        return None
    flags = namespaces | CLONE_CHILD_SETTID | (CLONE_INTO_CGROUP if cgroup_fd is not None else 0)
    # struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls,
    # set_tid, set_tid_size, cgroup (read by the kernel).
    args = _struct.pack("11Q", flags, 0, tid_address, 0, _SIGCHLD, 0, 0, 0, 0, 0,
                        0 if cgroup_fd is None else cgroup_fd)
    pid, error = _clone3(clone3, args)
    if pid is None:  # another thread appeared
        return None
    if pid < 0:
        if error in (ENOSYS, E2BIG) or (error == EINVAL and cgroup_fd is not None):  # older kernel: no clone3 or no cgroup flag
            return None
        raise OSError(error, f"clone3: {posix.strerror(error)}")
    return pid


def _clone3(number: int, args: bytes) -> tuple[int | None, int]:
    """The raw clone3 between the interpreter's fork hooks: (pid, errno); pid 0 in the child,
    None (and no clone) in a process with other threads."""
    raw_syscall = function("syscall", c_long, hold_gil=True)
    before, child, parent = (function(name, hold_gil=True) for name in (
        "PyOS_BeforeFork", "PyOS_AfterFork_Child", "PyOS_AfterFork_Parent"))
    before()
    # Counted after the interpreter's before-fork hooks (which could start a thread): from here to
    # the clone3 only this thread runs, and no other can appear.
    if thread_count() > 1:
        parent()
        return None, 0
    pid = raw_syscall(number, args, c_long(len(args)))
    if pid == 0:
        child()
        return 0, 0
    error = get_errno()
    parent()
    return pid, error
