"""The exec trampoline: why the user's program is never exec'd by the Python interpreter itself.

CVE-2019-5736 class: if the process that execs the user's program is the host's interpreter,
a program starting with ``#!/proc/self/exe`` makes the kernel run that host binary inside the
container, which can then reopen it through /proc and overwrite it once it exits. So the init
(and every exec'd process) first execs this trampoline from a sealed memfd, and the trampoline
execs the user's program: /proc/self/exe is then a sealed, in-memory copy that nothing can write.

The trampoline is 80 bytes of x86-64 machine code in a minimal static ELF, built here:
    argv = [name, path, arg0, arg1, ...]  ->  execve(path, &argv[2], envp); exit(127)
and when started with fewer than three arguments (as an interpreter: the ``#!/proc/self/exe``
trick) it exits with 126 instead.
"""

from __future__ import annotations

from capsa import tinyelf

_CODE = bytes.fromhex(
    "48833c2403"      # cmp qword [rsp], 3        argc < 3: started as an interpreter
    "7226"            # jb refuse (+38 bytes)
    "488b7c2410"      # mov rdi, [rsp+16]         path = argv[1]
    "488d742418"      # lea rsi, [rsp+24]         &argv[2]
    "488b0424"        # mov rax, [rsp]            argc
    "488d54c410"      # lea rdx, [rsp+rax*8+16]   envp
    "b83b000000"      # mov eax, 59               execve
    "0f05"            # syscall
    "bf7f000000"      # mov edi, 127              exec failed
    "b83c000000"      # mov eax, 60               exit
    "0f05"            # syscall
    "bf7e000000"      # refuse: mov edi, 126
    "b83c000000"      # mov eax, 60
    "0f05"            # syscall
)


def elf_image() -> bytes:
    return tinyelf.image(_CODE)


def sealed_fd() -> int:
    """A close-on-exec memfd holding the program, sealed against any change (capsa.tinyelf)."""
    return tinyelf.sealed_memfd("capsa-exec", elf_image())


_shared = tinyelf.SharedImage("capsa-exec", elf_image)


def shared_fd() -> int:
    """This process's sealed trampoline, made once (tinyelf.SharedImage): a launch hands it to
    each child it makes (capsa.launch)."""
    return _shared.fd()


supported = tinyelf.supported
