"""The init of a pooled sandbox whose agent is a process of its own (capsa.api.agent.join): once
the init has set the sandbox up, it execs this program, a loop of pause(2) in a static x86-64 ELF
of a few bytes (no libc), run from a sealed memfd as the trampoline and the waiter are.

Why: the init is a fork of the zygote that ran the whole container setup in Python, and every
page Python touched after the fork was copied for it (about 2 MiB, see docs/performance.md); a
process that keeps the sandbox's namespaces alive needs none of them. As pid 1 of the sandbox's
pid namespace, with no other process in it (the runs have pid namespaces of their own), it only
waits until the sandbox is deleted (SIGKILL). Other architectures keep the agent in the init.
"""

from __future__ import annotations

import _struct as struct
import posix

_BASE = 0x400000
_HEADERS = 64 + 56  # ELF header + one program header
_CODE = bytes.fromhex(
    "b822000000"  # 0  mov eax,34 (pause)
    "0f05"        # 5  syscall
    "ebf7"        # 7  jmp 0
)


def elf_image() -> bytes:
    size = _HEADERS + len(_CODE)
    header = struct.pack(
        "<16sHHIQQQIHHHHHH",
        b"\x7fELF\x02\x01\x01" + b"\0" * 9,  # 64-bit, little endian, SysV
        2, 0x3E, 1,                           # ET_EXEC, x86-64, version
        _BASE + _HEADERS, 64, 0,              # entry, program headers at 64, no sections
        0, 64, 56, 1, 64, 0, 0,
    )
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, _BASE, _BASE, size, size, 0x1000)  # PT_LOAD, R+X
    return header + program + _CODE


def sealed_fd() -> int:
    """A close-on-exec memfd holding the program, sealed against any change."""
    import fcntl

    fd = posix.memfd_create("capsa-hold", posix.MFD_CLOEXEC | posix.MFD_ALLOW_SEALING)
    posix.write(fd, elf_image())
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    return fd


def supported() -> bool:
    return posix.uname().machine == "x86_64"
