"""CRIU's RPC (`criu swrk`), for what its command line cannot do: containers with a terminal.

runc hands a restored container's terminal to --console-socket with the RPC option
orphan-pts-master: CRIU dumps a pty slave whose master is outside the tree, makes a new pty
pair at restore, and passes the master back over the RPC socket with an "orphan-pts-master"
notification. The criu command line has no such option, so for a container with a terminal
capsa speaks the RPC; for every other container it runs the command line (capsa.checkpoint),
whose options this module translates, so that both paths ask CRIU the same thing.

The messages are protobuf (criu's rpc.proto, proto2). Only what capsa sends and reads is
encoded here, by hand: varints, length-delimited fields and nested messages; no protobuf
package is needed.
"""

from __future__ import annotations

import os
import subprocess

from capsa.errors import CapsaError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

# criu_req_type
DUMP, RESTORE, PRE_DUMP, NOTIFY = 1, 2, 4, 6
REQUEST_TYPES = {"dump": DUMP, "pre-dump": PRE_DUMP, "restore": RESTORE}
# criu_cg_mode
CGROUP_MODES = {"ignore": 0, "soft": 3, "full": 4, "strict": 5}
CLONE_NEWNET = 0x40000000

# criu_opts field numbers (rpc.proto)
_BOOL_FLAGS = {"--leave-running": 3, "--ext-unix-sk": 4, "--tcp-established": 5, "--evasive-devices": 6,
               "--shell-job": 7, "--file-locks": 8, "--track-mem": 15, "--auto-dedup": 16,
               "--restore-sibling": 26, "--lazy-pages": 48}
_STRING_OPTIONS = {"--log-file": 10, "--root": 13, "--prev-images-dir": 14, "--freeze-cgroup": 44,
                   "--config": 51, "--lsm-profile": 53, "--lsm-mount-context": 63}
_IGNORED = ("--restore-detached", "--page-server")  # swrk restores detached; ps comes from --address/--port
_IGNORED_WITH_VALUE = ("--pidfile",)  # the pid comes back in the response


class CriuError(CapsaError):
    """CRIU could not do what was asked (its log's errors are in the message)."""


class CriuRpcError(CapsaError):
    pass


def log_errors(log_path: str) -> str:
    """The Error lines of a criu log (the last few), for the message; the whole log stays on disk."""
    try:
        with open(log_path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if "Error" in line or "error" in line][-8:] or lines[-5:]
    return (":\n" + "\n".join(errors)) if errors else ""


# -- protobuf, the little that is needed --------------------------------------------------------
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 values are sent as 64-bit two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(int(value))


def field_bytes(number: int, value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return _varint((number << 3) | 2) + _varint(len(raw)) + raw


def parse_message(data: bytes) -> dict[int, list[Any]]:
    """Field number -> values (ints for varints, bytes for length-delimited)."""
    fields: dict[int, list[Any]] = {}
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 2:
            length, i = _read_varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire == 5:
            value, i = int.from_bytes(data[i:i + 4], "little"), i + 4
        elif wire == 1:
            value, i = int.from_bytes(data[i:i + 8], "little"), i + 8
        else:
            raise CriuRpcError(f"criu sent a protobuf wire type {wire} capsa does not read")
        fields.setdefault(number, []).append(value)
    return fields


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise CriuRpcError("criu sent a truncated message")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


# -- the command line, as RPC options -----------------------------------------------------------
def request_from_argv(argv: list[str], images_fd: int, work_fd: int | None) -> tuple[int, bytes]:
    """(request type, criu_opts) for the criu command line capsa.checkpoint built; the image
    and work directories go as fds (criu swrk inherits them)."""
    request_type = REQUEST_TYPES[argv[1]]
    opts = [field_varint(1, images_fd), field_varint(9, 4), field_varint(12, 1), field_varint(50, 1)]
    if work_fd is not None:
        opts.append(field_varint(17, work_fd))
    words = argv[2:]
    i = 0
    address = port = None
    while i < len(words):
        word = words[i]
        value = words[i + 1] if i + 1 < len(words) else ""
        i += 1
        if word in _BOOL_FLAGS:
            opts.append(field_varint(_BOOL_FLAGS[word], 1))
        elif word in _IGNORED or word == "-v4":
            continue
        elif word.startswith("--manage-cgroups"):
            opts.append(field_varint(24, 1))
            if "=" in word:
                opts.append(field_varint(34, CGROUP_MODES[word.split("=", 1)[1]]))
        else:
            i += 1  # every other option takes a value
            if word in _IGNORED_WITH_VALUE or word in ("--images-dir", "--work-dir"):
                continue
            if word in _STRING_OPTIONS:
                opts.append(field_bytes(_STRING_OPTIONS[word], value))
            elif word == "--tree":
                opts.append(field_varint(2, int(value)))
            elif word == "--status-fd":
                opts.append(field_varint(49, int(value)))
            elif word == "--empty-ns":
                opts.append(field_varint(38, CLONE_NEWNET))
            elif word == "--external":
                opts.append(field_bytes(37, value))
            elif word == "--address":
                address = value
            elif word == "--port":
                port = int(value)
            elif word == "--inherit-fd":
                fd, _, key = value.partition(":")
                opts.append(field_bytes(27, field_bytes(1, key) + field_varint(2, int(fd[3:-1]))))
            elif word == "--cgroup-root":
                ctrl, _, path = value.partition(":")
                opts.append(field_bytes(25, field_bytes(1, ctrl) + field_bytes(2, path)))
            elif word == "--join-ns":
                ns, _, path = value.partition(":")
                opts.append(field_bytes(39, field_bytes(1, ns) + field_bytes(2, path)))
            else:
                raise CriuRpcError(f"internal error: no RPC equivalent for criu option {word}")
    if address is not None:
        opts.append(field_bytes(11, field_bytes(1, address) + field_varint(2, port or 0)))
    return request_type, b"".join(opts)


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


# -- criu swrk ----------------------------------------------------------------------------------
def run(argv: list[str], log_path: str, *, pass_fds: tuple[int, ...] = (), preexec_fn: Any = None,
        console_socket: str | None = None, started: Any = None) -> int:
    """Run the request that `argv` (a criu command line) describes over `criu swrk`; answer its
    notifications, send an orphan pty master to `console_socket`. `started(pid)`, if given, is
    called with criu's pid before it gets the request (a restore placed in a cgroup that systemd
    makes around criu, as runc's criuApplyCgroups). Returns the restored pid (restore) or 0."""
    import _socket

    images_fd = os.open(_option(argv, "--images-dir"), os.O_RDONLY | os.O_DIRECTORY)
    work = _option(argv, "--work-dir")
    work_fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY) if work else None
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    fds = [images_fd, theirs.fileno(), *pass_fds] + ([work_fd] if work_fd is not None else [])
    try:
        request_type, opts = request_from_argv(argv, images_fd, work_fd)
        try:
            process = subprocess.Popen([argv[0], "swrk", str(theirs.fileno())], pass_fds=fds, preexec_fn=preexec_fn,
                                       stdin=None if request_type == RESTORE else subprocess.DEVNULL)
        except OSError as err:
            raise CriuError(f"cannot run {argv[0]}: {err.strerror}") from None
        theirs.close()
        try:
            if started is not None:
                started(process.pid)
            ours.send(field_varint(1, request_type) + field_bytes(2, opts))
            pid = _serve(ours, request_type, console_socket)
        except BaseException:
            process.kill()
            raise
        finally:
            process.wait()
        if pid is None:
            raise CriuError(f"criu {argv[1]} failed{log_errors(log_path)}\nlog file: {log_path}")
        return pid
    finally:
        ours.close()
        theirs.close()
        os.close(images_fd)
        if work_fd is not None:
            os.close(work_fd)


def _serve(sock: Any, request_type: int, console_socket: str | None) -> int | None:
    """Read responses until the final one; None if criu reports a failure."""
    import _socket

    while True:
        data, ancillary, _, _ = sock.recvmsg(1 << 20, _socket.CMSG_SPACE(4 * 4))
        if not data:
            raise CriuRpcError("criu swrk closed the connection without an answer")
        received = [int.from_bytes(d[j:j + 4], "little") for level, kind, d in ancillary
                    if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS for j in range(0, len(d) - 3, 4)]
        response = parse_message(data)
        kind = response.get(1, [0])[0]
        if kind == NOTIFY:
            notify = parse_message(response.get(5, [b""])[0])
            script = notify.get(1, [b""])[0].decode()
            try:
                if script == "orphan-pts-master" and received:
                    _send_master(received[0], console_socket)
            finally:
                for fd in received:
                    os.close(fd)
            sock.send(field_varint(1, NOTIFY) + field_varint(3, 1))
            continue
        for fd in received:
            os.close(fd)
        if not response.get(2, [0])[0]:
            return None
        if request_type == RESTORE:
            return parse_message(response.get(4, [b""])[0]).get(1, [0])[0]
        return 0


def _send_master(master: int, console_socket: str | None) -> None:
    if not console_socket:
        raise CriuRpcError("the restored container has a terminal: give --console-socket to receive it")
    from capsa import console

    try:
        sock = console.connect(console_socket)
    except OSError as err:
        raise CriuRpcError(f"cannot connect to console socket {console_socket}: {err.strerror or err}") from None
    try:
        console.send_fd(sock, master, "/dev/ptmx")
    finally:
        os.close(sock)
