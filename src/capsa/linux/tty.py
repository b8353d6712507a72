"""Terminal ioctls: a pty of the container's devpts, its window size, the controlling terminal.

Loaded only with a terminal (by capsa.console). The numbers are asm-generic/ioctls.h's, which
x86-64, aarch64 and riscv64 share (powerpc, mips, sparc and alpha have their own); `fcntl` is
built into the interpreter, where `termios` would be a shared library to load (0.8M instructions).
"""

from __future__ import annotations

import _struct
import fcntl

TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414
TIOCGPTN = 0x80045430  # _IOR('T', 0x30, unsigned int)
TIOCSPTLCK = 0x40045431  # _IOW('T', 0x31, int)
TIOCGPTPEER = 0x5441  # _IO('T', 0x41)


def unlock_pty(master: int) -> None:
    fcntl.ioctl(master, TIOCSPTLCK, _struct.pack("i", 0))


def pty_number(master: int) -> int:
    """N of the pty's /dev/pts/N."""
    return _struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"))[0]


def open_pty_peer(master: int, flags: int) -> int:
    """The slave side of `master`, opened through the master itself (no path lookup to trick)."""
    return fcntl.ioctl(master, TIOCGPTPEER, flags)


def set_window_size(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, TIOCSWINSZ, _struct.pack("HHHH", rows, columns, 0, 0))  # struct winsize


def make_controlling_terminal(fd: int) -> None:
    """Make the terminal `fd` the controlling terminal of this session (after setsid)."""
    fcntl.ioctl(fd, TIOCSCTTY, 0)
