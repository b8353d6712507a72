"""seccomp(2): load a BPF filter, and ask the kernel what it supports.

The profile is compiled by libseccomp in capsa.seccomp, which loads this module with it (only a
container with linux.seccomp does).
"""

from __future__ import annotations

from capsa.errors import EFAULT
from capsa.linux._abi import byref, c_uint, check, syscall

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 16


def load_filter(flags: int, fprog: bytes) -> int:
    """Install the filter `fprog` (a packed struct sock_fprog) on this thread; the notify fd with
    SECCOMP_FILTER_FLAG_NEW_LISTENER, else 0."""
    return check(syscall("seccomp", c_uint(SECCOMP_SET_MODE_FILTER), c_uint(flags), fprog),
                 "seccomp: cannot load the filter")


def filter_flags_known(flags: int) -> bool:
    """Whether this kernel knows the SECCOMP_FILTER_FLAG_* bits `flags`: seccomp(2) checks the
    flags before it reads the program, so a NULL program fails with EFAULT for known flags and
    EINVAL for unknown ones."""
    try:
        check(syscall("seccomp", c_uint(SECCOMP_SET_MODE_FILTER), c_uint(flags), None), "seccomp")
    except OSError as err:
        return err.errno == EFAULT
    return True  # not reached: no filter is made of a NULL program


def action_available(action: int) -> bool:
    """Whether this kernel has the filter return action `action` (SECCOMP_RET_*)."""
    try:
        check(syscall("seccomp", c_uint(SECCOMP_GET_ACTION_AVAIL), c_uint(0), byref(c_uint(action))), "seccomp")
    except OSError:
        return False
    return True
