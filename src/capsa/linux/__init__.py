"""The kernel calls capsa needs that the os module does not have, in one package.

    _abi        foreign calls through _ctypes (no ctypes package), errno to OSError, syscall(name)
    arch        the one per-architecture table of syscall numbers (x86-64, aarch64, riscv64)
    fs          mount, umount2, exchange, pivot_root, open_tree, move_mount, mount_setattr, openat2, fstatfs,
                inotify; the file type bits of st_mode
    namespaces  unshare, setns, hostname and domainname, the session keyring, lo up
    process     prctl, capget/capset, sched_setattr, ioprio, set_mempolicy, setrlimit,
                close_range, fork into a cgroup (clone3)
    tty         the terminal ioctls (loaded by capsa.console)
    seccomp     seccomp(2) (loaded by capsa.seccomp, which compiles the profile with libseccomp)
    bpf         bpf(2): the cgroup v2 device filter (loaded by capsa.cgroups.v2_resources)

The modules every container needs are imported here, and their names are this package's: callers
say `linux.mount(...)`, looked up when called, which is also the seam the unit tests replace
(tests/unit/fake_kernel.py). They are imported at once, not on first use: the init enters the
container's namespaces and root, after which the host's copy of capsa may be out of reach (see
init.load_modules). tty, seccomp and bpf serve only some containers and are imported by their
users. The errno values capsa tests for are in capsa.errors, which every call loads (this package
is loaded only by create, run, exec and a few rarer calls: never by state, start, kill, delete,
pause, resume or list).
"""

from __future__ import annotations

from capsa.linux._abi import Library, addressof, c_uint, ctype, function, string_buffer  # noqa: F401 - for capsa.seccomp
from capsa.linux.fs import (  # noqa: F401
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_RECURSIVE,
    MNT_DETACH,
    MOVE_MOUNT_F_EMPTY_PATH,
    MOVE_MOUNT_T_EMPTY_PATH,
    MS_BIND,
    MS_MOVE,
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
    OPEN_TREE_CLOEXEC,
    OPEN_TREE_CLONE,
    PROC_SUPER_MAGIC,
    RESOLVE_BENEATH,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    RESOLVE_NO_XDEV,
    S_IFBLK,
    S_IFCHR,
    S_IFDIR,
    S_IFIFO,
    S_IFREG,
    exchange,
    file_type,
    fstatfs_type,
    inotify_watch,
    mount,
    mount_setattr,
    mount_setattr_idmap,
    move_mount,
    open_tree,
    openat2,
    pivot_root,
    umount2,
)
from capsa.linux.namespaces import (  # noqa: F401
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWTIME,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    join_session_keyring,
    loopback_up,
    setdomainname,
    sethostname,
    setns,
    unshare,
)
from capsa.linux.process import (  # noqa: F401
    IOPRIO_CLASS_SHIFT,
    IOPRIO_WHO_PGRP,
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE,
    PR_SET_KEEPCAPS,
    PR_SET_NO_NEW_PRIVS,
    RLIM_INFINITY,
    capget_permitted,
    capset,
    clone_child,
    close_fds_except,
    close_range_cloexec,
    current_cpu,
    ioprio_set,
    prctl,
    sched_setattr,
    set_mempolicy,
    setrlimit,
    thread_count,
)
