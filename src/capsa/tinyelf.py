"""A static x86-64 ELF of a few bytes of machine code, run from a sealed memfd: what capsa runs
where neither its interpreter nor a libc may be (the exec trampoline, capsa.trampoline; the API's
waiter and holder, capsa.api.waiter and capsa.api.holder).

The image is an ELF header and one PT_LOAD program header (R+X, the code right after the
headers), and optionally a second one: a zeroed R+W segment (bss) at a fixed address. No
sections, no symbols, no dynamic loader. The memfd is close-on-exec and sealed against any
change (F_SEAL_SEAL, SHRINK, GROW, WRITE): what is exec'd from it cannot be overwritten.
"""

from __future__ import annotations

import _struct as struct  # struct.py adds nothing used here and costs 0.3M instructions to import
import _thread
import posix

BASE = 0x400000  # where the code is loaded
_ELF_HEADER, _PROGRAM_HEADER = 64, 56


def image(code: bytes, bss: tuple[int, int] | None = None) -> bytes:
    """The ELF image of `code` (entry: its first byte); bss: (address, size) of a zeroed R+W
    segment."""
    headers = _ELF_HEADER + _PROGRAM_HEADER * (2 if bss else 1)
    size = headers + len(code)
    header = struct.pack(
        "<16sHHIQQQIHHHHHH",
        b"\x7fELF\x02\x01\x01" + b"\0" * 9,  # 64-bit, little endian, SysV
        2, 0x3E, 1,                           # ET_EXEC, x86-64, version
        BASE + headers, _ELF_HEADER, 0,       # entry, program headers after the ELF header, no sections
        0, _ELF_HEADER, _PROGRAM_HEADER, 2 if bss else 1, 64, 0, 0,
    )
    text = struct.pack("<IIQQQQQQ", 1, 5, 0, BASE, BASE, size, size, 0x1000)  # PT_LOAD, R+X
    zeroed = struct.pack("<IIQQQQQQ", 1, 6, 0, bss[0], bss[0], 0, bss[1], 0x1000) if bss else b""  # PT_LOAD, R+W
    return header + text + zeroed + code


def sealed_memfd(name: str, elf: bytes) -> int:
    """A close-on-exec memfd named `name` holding `elf`, sealed against any change."""
    import fcntl

    fd = posix.memfd_create(name, posix.MFD_CLOEXEC | posix.MFD_ALLOW_SEALING)
    posix.write(fd, elf)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    return fd


def supported() -> bool:
    """These images are x86-64 machine code."""
    return posix.uname().machine == "x86_64"


class SharedImage:
    """A process's one sealed copy of an image, made on first use: a long-lived process (the
    API's zygote) hands the same fd to every child it makes rather than make one per container.
    Sealed, it is the same bytes for every container and none can change it. Made again if its
    fd is no longer it (closed, and its number reused by another file)."""

    def __init__(self, name: str, make_image):
        self.name = name
        self.make_image = make_image
        self._made: tuple[int, int, int] | None = None  # (fd, st_dev, st_ino)
        self._lock = _thread.allocate_lock()  # threads launching at once make one copy, not one each

    def fd(self) -> int:
        with self._lock:
            if self._made is not None:
                fd, device, inode = self._made
                try:
                    found = posix.fstat(fd)
                    if (found.st_dev, found.st_ino) == (device, inode):
                        return fd
                except OSError:
                    pass
            fd = sealed_memfd(self.name, self.make_image())
            found = posix.fstat(fd)
            self._made = (fd, found.st_dev, found.st_ino)
            return fd
