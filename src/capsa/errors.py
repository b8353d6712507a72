"""Errors raised by the capsa library.

Every error a user can cause is a CapsaError with a message that names the problem; the CLI prints
the message and exits non-zero, never a traceback.

It also names the kernel's error numbers capsa tests OSError.errno against: every call loads this
module, and the `errno` module would build its table of ~130 names on import (0.26M instructions).
"""

from __future__ import annotations

# errno values, from asm-generic/errno-base.h and errno.h: the same on x86-64, aarch64 and riscv64
# (alpha, mips, parisc and sparc number some of them differently; capsa.linux.arch knows none of those).
EPERM = 1
E2BIG = 7
EACCES = 13
EFAULT = 14
EBUSY = 16
EEXIST = 17
EINVAL = 22
EROFS = 30
ENOSYS = 38
ENOTEMPTY = 39
ELOOP = 40
EOPNOTSUPP = 95


class CapsaError(Exception):
    """Base class of every error capsa reports to its caller."""


class ConfigError(CapsaError):
    """config.json (or a process.json) is invalid; ``field`` is the JSON path of the bad value."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"invalid config: {field}: {problem}" if field else f"invalid config: {problem}")


class NotFoundError(CapsaError):
    """No container has that id (runc's wording: clients look for 'does not exist')."""

    def __init__(self, container_id: str):
        super().__init__(f"container {container_id} does not exist")


class ExistsError(CapsaError):
    def __init__(self, container_id: str):
        super().__init__(f"container with id exists: {container_id}")


class CorruptStateError(CapsaError):
    """A container's state file cannot be read back (only a crash mid-write can leave one)."""


class InvalidIdError(CapsaError):
    pass


class AmbiguousIdError(CapsaError):
    pass


class StateError(CapsaError):
    """The operation is not valid in the container's current status."""


class UnsupportedError(CapsaError):
    """A feature is requested that this host or this version of capsa cannot honour."""


class ContainerStartError(CapsaError):
    """The container process could not be set up or started (reported by the init process)."""
