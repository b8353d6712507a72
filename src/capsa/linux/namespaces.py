"""What a container does not share with the host: namespaces (unshare, setns), the UTS names,
the session keyring, and the loopback interface of a new network namespace."""

from __future__ import annotations

import _socket
import _struct
import fcntl

from capsa.linux._abi import check, fsencode, libc, syscall

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

KEYCTL_JOIN_SESSION_KEYRING = 1

# include/uapi/linux/sockios.h and if.h: the same on every architecture.
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ_FLAGS = "16sH22x"  # struct ifreq: the name, then ifr_flags in the 24-byte union


def unshare(flags: int) -> None:
    check(libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    check(libc.setns(fd, nstype), "setns")


def sethostname(name: str) -> None:
    raw = name.encode()
    check(libc.sethostname(raw, len(raw)), "sethostname")


def setdomainname(name: str) -> None:
    raw = name.encode()
    check(libc.setdomainname(raw, len(raw)), "setdomainname")


def join_session_keyring(name: str) -> None:
    """Give the process a new session keyring, so containers never share the caller's keys."""
    check(syscall("keyctl", KEYCTL_JOIN_SESSION_KEYRING, fsencode(name)), "keyctl")


def loopback_up() -> None:
    """Bring `lo` up: a new network namespace starts with it down, and containers expect
    127.0.0.1 to work."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        request = _struct.pack(_IFREQ_FLAGS, b"lo", 0)
        flags = _struct.unpack(_IFREQ_FLAGS, fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, _struct.pack(_IFREQ_FLAGS, b"lo", flags | IFF_UP))
    finally:
        sock.close()
