"""Attaching to a container's monitor: its output to our stdout/stderr, our stdin to it, our
terminal's size to its pty, our signals to its init, its exit code back (the protocol is in
capsa.manager.monitor's docstring).

For a foreground `run`, `start -a` (ctr's ctl/containers.py) and `attach`, in this order, so
that no output is lost before the client is there:

    pid = monitor.launch(paths, cid, bundle, runtime_path=..., log_path=..., on_exit=...,
                         stdin=interactive, tty=tty)           # created, init waiting
    session = attach.connect(paths, cid)                      # before start
    runtime.for_container(paths, runtime_path).start(cid)     # (and the "start" event)
    code = session.run(stdin=0 if interactive else None, tty=tty)

`run` returns the container's exit code once it has exited (128 + N for a signal, as podman),
or None when the user detached (the detach keys, ctrl-p ctrl-q by default): the container goes
on. `attach(paths, cid, ...)` is connect + run for a container that is already running.
"""

from __future__ import annotations

import os

from capsa.manager import monitor
from capsa.manager.errors import ManagerError

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"


def parse_detach_keys(text: str) -> bytes:
    """podman's --detach-keys: a comma-separated list of `ctrl-<a-z@[\\]^_>` or single
    characters; "" disables detaching."""
    keys = bytearray()
    if not text:
        return bytes(keys)
    for item in text.split(","):
        if len(item) == 1:
            keys.append(ord(item))
        elif item.startswith("ctrl-") and len(item) == 6:
            char = item[5].lower()
            if "a" <= char <= "z":
                keys.append(ord(char) - ord("a") + 1)
            elif char in "@[\\]^_":
                keys.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}[char])
            else:
                raise ManagerError(f"--detach-keys {text!r}: unknown key {item!r}")
        else:
            raise ManagerError(f"--detach-keys {text!r}: give keys as ctrl-<letter> or single characters, "
                               f"separated by commas")
    return bytes(keys)


def connect(paths, container_id: str) -> Session:
    """Connect to the container's monitor (created or running); ManagerError if it has none."""
    import _socket

    directory = paths.monitor(container_id)
    try:
        directory_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ManagerError(f"container {container_id[:12]} is not running: it has no monitor to attach to") from None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{directory_fd}/attach")
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise ManagerError(f"container {container_id[:12]} is not running: cannot attach to it") from None
    finally:
        os.close(directory_fd)
    return Session(paths, container_id, sock)


def attach(paths, container_id: str, *, stdin: int | None = None, stdout: int = 1, stderr: int = 2,
           tty: bool = False, detach_keys: str = DEFAULT_DETACH_KEYS, sig_proxy: bool = True) -> int | None:
    """Attach to a running container until it exits (its exit code) or the user detaches (None)."""
    return connect(paths, container_id).run(stdin=stdin, stdout=stdout, stderr=stderr, tty=tty,
                                            detach_keys=detach_keys, sig_proxy=sig_proxy)


# Signals passed on to the container without a terminal (podman's --sig-proxy); with one, the
# terminal itself turns ctrl-c into the container's SIGINT.
_PROXIED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


class Session:
    """One attached client."""

    def __init__(self, paths, container_id: str, sock):
        self.paths = paths
        self.container_id = container_id
        self.sock = sock

    def close(self) -> None:
        self.sock.close()

    def send_signal(self, signal: int) -> None:
        import _struct

        self._send(bytes([monitor.SIGNAL]) + _struct.pack("i", signal))

    def resize(self, rows: int, columns: int) -> None:
        import _struct

        self._send(bytes([monitor.RESIZE]) + _struct.pack("HH", rows, columns))

    def _send(self, packet: bytes) -> None:
        try:
            self.sock.send(packet)
        except OSError:
            pass  # the monitor is gone: the receiving side finds out

    def run(self, *, stdin: int | None = None, stdout: int = 1, stderr: int = 2, tty: bool = False,
            detach_keys: str = DEFAULT_DETACH_KEYS, sig_proxy: bool = True) -> int | None:
        """Copy until the container exits (its exit code) or the user detaches (None)."""
        keys = parse_detach_keys(detach_keys)
        raw = _RawTerminal(stdin) if tty and stdin is not None else None
        previous = self._install_signals(tty, sig_proxy, stdin if stdin is not None else stdout)
        try:
            if raw is not None:
                raw.enter()
            return self._copy(stdin, stdout, stderr, keys)
        finally:
            if raw is not None:
                raw.leave()
            import _signal

            for signum, handler in previous.items():
                _signal.signal(signum, handler)
            self.close()

    def _install_signals(self, tty: bool, sig_proxy: bool, size_fd: int) -> dict:
        import _signal

        previous = {}
        if tty:
            def resize(signum=None, frame=None):
                try:
                    size = os.get_terminal_size(size_fd)
                except OSError:
                    return
                self.resize(size.lines, size.columns)

            resize()
            previous[_signal.SIGWINCH] = _signal.signal(_signal.SIGWINCH, resize)
        elif sig_proxy:
            def forward(signum, frame):
                self.send_signal(signum)

            for name in _PROXIED_SIGNALS:
                signum = getattr(_signal, name)
                previous[signum] = _signal.signal(signum, forward)
        return previous

    def _copy(self, stdin: int | None, stdout: int, stderr: int, keys: bytes) -> int | None:
        import select

        sources = [self.sock.fileno()] + ([stdin] if stdin is not None else [])
        matched = b""  # the start of the detach keys, held back until it is clear what it is
        while True:
            readable, _, _ = select.select(sources, [], [])
            if self.sock.fileno() in readable:
                try:
                    packet = self.sock.recv(monitor.PACKET_SIZE)
                except OSError:
                    packet = b""
                if not packet:
                    return self._exit_code_after_loss()
                kind, payload = packet[0], packet[1:]
                if kind == monitor.STDOUT:
                    _write_all(stdout, payload)
                elif kind == monitor.STDERR:
                    _write_all(stderr, payload)
                elif kind == monitor.EXIT:
                    return int(payload) if payload else self._exit_code_after_loss()
            if stdin is not None and stdin in readable:
                data = os.read(stdin, 32768)
                if not data:
                    self._send(bytes([monitor.STDIN_EOF]))
                    sources.remove(stdin)
                    continue
                data, matched, detached = _scan_detach_keys(matched + data, keys)
                if data:
                    for offset in range(0, len(data), monitor.PACKET_SIZE - 1):
                        self._send(bytes([monitor.STDIN]) + data[offset:offset + monitor.PACKET_SIZE - 1])
                if detached:
                    return None

    def _exit_code_after_loss(self) -> int:
        """The monitor closed the connection without an exit message: its exit file says."""
        code = monitor.read_exit_file(self.paths, self.container_id)
        if code is None:
            raise ManagerError(f"lost the connection to the monitor of container {self.container_id[:12]} "
                               f"before it exited")
        return code


def _scan_detach_keys(data: bytes, keys: bytes) -> tuple[bytes, bytes, bool]:
    """(what to send, what to hold back as a possible start of the keys, detached?)"""
    if not keys:
        return data, b"", False
    index = data.find(keys)
    if index >= 0:
        return data[:index], b"", True
    for length in range(min(len(keys) - 1, len(data)), 0, -1):
        if data.endswith(keys[:length]):
            return data[:-length], data[-length:], False
    return data, b"", False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BrokenPipeError:
            return
        view = view[written:]


class _RawTerminal:
    """Our terminal in raw mode while attached (if stdin is one), restored after."""

    def __init__(self, fd: int):
        self.fd = fd
        self.saved = None

    def enter(self) -> None:
        if os.isatty(self.fd):
            import termios
            import tty

            self.saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd)

    def leave(self) -> None:
        if self.saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
