"""The message channel between `capsa create` and the container's init process.

One line per message, "<kind> <payload>\\n", over a socketpair. The init reports its pid, asks the
parent to act (write id mappings, run hooks in the runtime namespace) and finally reports "ready"
or "error <message>".
"""

from __future__ import annotations

import posix

from capsa.errors import ContainerStartError


def send_fds(sock_fd: int, data: bytes, fds: list[int]) -> None:
    """Send `data` with copies of `fds` (SCM_RIGHTS) on the unix socket `sock_fd`."""
    import _socket
    import _struct

    sock = _socket.socket(fileno=sock_fd)
    try:
        sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _struct.pack(f"{len(fds)}i", *fds))])
    finally:
        sock.detach()


class Channel:
    def __init__(self, fd: int):
        self.fd = fd
        self._buffer = b""

    def send(self, kind: str, payload: str = "") -> None:
        line = f"{kind} {payload}".replace("\n", " ") + "\n"
        posix.write(self.fd, line.encode())

    def receive(self) -> tuple[str, str]:
        """The next message; ("eof", "") when the other side has closed the channel."""
        while b"\n" not in self._buffer:
            chunk = posix.read(self.fd, 4096)
            if not chunk:
                return "eof", ""
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        kind, _, payload = line.decode(errors="replace").partition(" ")
        return kind, payload

    def expect(self, kind: str) -> str:
        got, payload = self.receive()
        if got == kind:
            return payload
        if got == "error":
            raise ContainerStartError(payload)
        raise ContainerStartError(f"container setup was interrupted (expected {kind!r}, got {got!r})")

    def send_fd(self, kind: str, fd: int) -> None:
        """Send the message `kind` with a copy of `fd` (SCM_RIGHTS)."""
        send_fds(self.fd, f"{kind} \n".encode(), [fd])

    def receive_fd(self, kind: str) -> tuple[int, str]:
        """The reply to a request: (fd, "") for a message `kind` that carries one, (-1, reason)
        for a "nofd <reason>" one. Only ever called with nothing buffered: the other side
        sends nothing unasked."""
        import _socket
        import _struct

        sock = _socket.socket(fileno=self.fd)
        try:
            data, ancillary, _, _ = sock.recvmsg(4096, _socket.CMSG_SPACE(4))
        finally:
            sock.detach()
        fds = [_struct.unpack("i", payload[:4])[0] for level, what, payload in ancillary
               if level == _socket.SOL_SOCKET and what == _socket.SCM_RIGHTS]
        self._buffer += data
        got, payload = self.receive()
        if got == kind and fds:
            return fds[0], ""
        for fd in fds:
            posix.close(fd)
        if got == "nofd":
            return -1, payload
        if got == "error":
            raise ContainerStartError(payload)
        raise ContainerStartError(f"container setup was interrupted (expected {kind!r}, got {got!r})")

    def close(self) -> None:
        if self.fd >= 0:
            posix.close(self.fd)
            self.fd = -1
