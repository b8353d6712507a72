"""The syscall numbers capsa uses, per architecture: the one table of them.

Only the calls capsa makes through syscall(2) are here, most of them calls glibc has no wrapper
for; mount, unshare, setns, prctl, setrlimit and the others go through glibc's wrappers, which
know their own numbers.
Numbers from 424 on (pidfd_send_signal and later) are the same on every architecture but alpha,
ia64 and mips, which offset them; those before differ between x86-64 and the asm-generic table
that aarch64 and riscv64 share. tests/unit/test_kernel_seam.py checks every entry against
libseccomp's tables. On a machine not in the table every call here fails with ENOSYS, naming the
call and the machine, rather than making a syscall of another architecture's number.
"""

from __future__ import annotations

import posix

from capsa.errors import ENOSYS

# The same number on x86-64 and the asm-generic architectures.
_SINCE_424 = {
    "open_tree": 428, "move_mount": 429, "clone3": 435, "close_range": 436,
    "openat2": 437, "mount_setattr": 442,
}
# include/uapi/asm-generic/unistd.h: aarch64, riscv64 (and the other architectures without a
# legacy table of their own).
_ASM_GENERIC = {
    "ioprio_set": 30, "pivot_root": 41, "capget": 90, "capset": 91, "gettid": 178,
    "keyctl": 219, "set_mempolicy": 237, "sched_setattr": 274, "seccomp": 277, "bpf": 280,
    **_SINCE_424,
}
SYSCALLS: dict[str, dict[str, int]] = {
    # arch/x86/entry/syscalls/syscall_64.tbl
    "x86_64": {
        "capget": 125, "capset": 126, "pivot_root": 155, "gettid": 186, "set_mempolicy": 238, "keyctl": 250,
        "ioprio_set": 251, "sched_setattr": 314, "seccomp": 317, "bpf": 321,
        **_SINCE_424,
    },
    "aarch64": _ASM_GENERIC,
    "riscv64": _ASM_GENERIC,
}

MACHINE = posix.uname().machine
_NUMBERS = SYSCALLS.get(MACHINE, {})


def number(name: str) -> int:
    """The syscall number of `name` on this machine; OSError(ENOSYS) where capsa does not know it."""
    found = _NUMBERS.get(name)
    if found is None:
        raise OSError(ENOSYS, f"{name}: no syscall number known for {MACHINE}")
    return found
