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

from capsa import tinyelf

_CODE = bytes.fromhex(
    "b822000000"  # 0  mov eax,34 (pause)
    "0f05"        # 5  syscall
    "ebf7"        # 7  jmp 0
)


def elf_image() -> bytes:
    return tinyelf.image(_CODE)


def sealed_fd() -> int:
    """A close-on-exec memfd holding the program, sealed against any change (capsa.tinyelf)."""
    return tinyelf.sealed_memfd("capsa-hold", elf_image())


supported = tinyelf.supported
