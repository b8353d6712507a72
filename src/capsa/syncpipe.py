"""The message channel between `capsa create` and the container's init process.

One line per message, "<kind> <payload>\\n", over a socketpair. The init reports its pid, asks the
parent to act (write id mappings, run hooks in the runtime namespace) and finally reports "ready"
or "error <message>".
"""

from __future__ import annotations

import posix

from capsa.errors import ContainerStartError


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

    def close(self) -> None:
        if self.fd >= 0:
            posix.close(self.fd)
            self.fd = -1
