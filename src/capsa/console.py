"""Terminals: the container's pty, handed to the caller's --console-socket with SCM_RIGHTS."""

from __future__ import annotations

import _struct as struct  # struct.py adds nothing used here and costs 0.3M instructions to import
import posix

from capsa.errors import EINVAL, EPERM
from capsa.linux import tty


def open_pty(ptmx_fd: int) -> tuple[int, int, str]:
    """Open a new pty from the container's own devpts; return (master, slave, slave path)."""
    master = posix.open(f"/proc/self/fd/{ptmx_fd}", posix.O_RDWR | posix.O_NOCTTY | posix.O_CLOEXEC)
    tty.unlock_pty(master)
    number = tty.pty_number(master)
    # TIOCGPTPEER opens the slave through the master itself, with no path lookup to trick.
    slave = tty.open_pty_peer(master, posix.O_RDWR | posix.O_NOCTTY | posix.O_CLOEXEC)
    return master, slave, f"/dev/pts/{number}"


def set_size(fd: int, size: dict | None) -> None:
    if size:
        tty.set_window_size(fd, size.get("height", 0), size.get("width", 0))


def give_to_user(slave: int, uid: int) -> None:
    """Make the process's user the pty's owner, as runc (fixStdioPermissions): its group stays
    the one devpts gave it (tty, from the mount's gid=5), so that the user can reopen its own
    terminal. A uid the user namespace does not map (EINVAL) or an owner it cannot change
    (EPERM) leaves the pty as it is, as runc does."""
    if posix.fstat(slave).st_uid == uid:
        return
    try:
        posix.fchown(slave, uid, -1)
    except OSError as err:
        if err.errno not in (EINVAL, EPERM):
            raise


def make_controlling(slave: int) -> None:
    """Make the pty slave the process's stdio and controlling terminal (after setsid)."""
    for std in (0, 1, 2):
        posix.dup2(slave, std)
    tty.make_controlling_terminal(0)


def send_fd(sock_fd: int, fd: int, name: str) -> None:
    import _socket

    sock = _socket.socket(fileno=sock_fd)
    try:
        sock.sendmsg([name.encode()], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", fd))])
    finally:
        sock.detach()


def receive_fd(sock_fd: int) -> int:
    import _socket

    sock = _socket.socket(fileno=sock_fd)
    try:
        _, ancillary, _, _ = sock.recvmsg(4096, _socket.CMSG_SPACE(4))
    finally:
        sock.detach()
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            return struct.unpack("i", data[:4])[0]
    raise OSError("no file descriptor received on the console socket")


def connect(path: str) -> int:
    """Connect to a --console-socket; return the connected fd (close-on-exec)."""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock.detach()


