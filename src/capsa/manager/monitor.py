"""The monitor: one small process per running container, podman's conmon in capsactl's role.

`launch` forks it, detached: a session of its own, re-parented to init, its working directory
/, every fd of the caller's closed (the caller's terminal, pipes and database are not kept open
by it, nor ever seen by the container), so `capsactl run -d` returns at once and a `kill -9` of
capsactl leaves the container and its monitor running. It creates the container through the
runtime, with its own pipes (or a pty) as the container's stdio, and tells the caller the
init's pid, or the runtime's error with what the runtime printed. Then it stays, as the
container's parent and a child subreaper:
    - it copies the container's output into the log (k8s-file, rotated at --log-opt max-size:
      capsa.manager.logs) and to the attached clients;
    - it keeps the write end of the container's stdin (-i), fed by attached clients, or the pty
      master (-t), which clients write to and resize;
    - when the init exits it reads what is left of the output, learns the exit status (only the
      parent can), writes the exit file <run root>/exits/<id> (the exit code, as conmon's
      --exit-dir), tells the attached clients the code, and calls the exit hook
      ("module:function", podman's --exit-command: capsactl's container clean-up), then ends.

The caller starts the container itself (runtime.start) once it has attached, if it attaches, so
no output is lost before an attach (capsa.manager.attach has the call sequence).

Once the container is created the monitor re-executes itself into a fresh `python -I -S` that
imports only what copying needs (serve_lean): same pid, so it stays the init's parent and
subreaper; its pipes, sockets and log are passed by fd number. The forked monitor held all the
caller and the create path had imported (PSS 7.3 MB against 3.7 MB; docs/capsactl.md). The exit
hook is imported there: it must live in capsa's package directory or the standard library.

Attach protocol: a SOCK_SEQPACKET socket at <run root>/monitors/<id>/attach (as conmon's, one
message per packet, its first byte saying what it is). From the client: STDIN + bytes,
STDIN_EOF (close the container's stdin; ignored with a terminal), RESIZE + rows and columns
(two native uint16), SIGNAL + a native int (sent to the init: podman's --sig-proxy). From the
monitor: STDOUT or STDERR + bytes, then EXIT + the exit code in ASCII once the init has exited.
A client that leaves (detach) changes nothing for the container: its stdin stays open. Paths
under a long run root pass the 108-byte limit of a socket address: both ends bind and connect
through /proc/self/fd/<directory fd>/attach.

The monitor also writes <run root>/monitors/<id>/pid ("pid start-time") and, if anything in it
fails after the container was created, a traceback to monitor.log there.
"""

from __future__ import annotations

import os

from capsa.manager.errors import ManagerError

# The attach protocol's message types (first byte of each packet).
STDIN, STDIN_EOF, STDOUT, STDERR, EXIT, RESIZE, SIGNAL = 0, 1, 2, 3, 4, 5, 6
PACKET_SIZE = 32768
_CLIENT_SEND_TIMEOUT = 10.0  # a client that reads nothing for this long is dropped, not waited for


class CreateError(ManagerError):
    """The runtime could not create the container: its message and what it printed. The exit
    code is podman's: 127 for a command that is not found, 126 for one that cannot run."""

    def __init__(self, message: str):
        super().__init__(message)
        self.exit_code = error_exit_code(message)


def error_exit_code(message: str) -> int:
    """podman's exit code for a process that could not be run: 127 not found, 126 not runnable,
    125 anything else."""
    lowered = message.lower()
    if "not found" in lowered or "no such file" in lowered:
        return 127
    if "permission denied" in lowered or "exec format error" in lowered or "is a directory" in lowered:
        return 126
    return 125


def attach_socket(paths, container_id: str) -> str:
    return os.path.join(paths.monitor(container_id), "attach")


def launch(paths, container_id: str, bundle: str, *, runtime_path: str | None, log_path: str,
           on_exit: str | None = None, stdin: bool = False, tty: bool = False, log_max_size: int | None = None,
           log_max_files: int = 1, keep_fds: tuple[int, ...] | list[int] = (), warn=None,
           health_interval: float | None = None, restore: dict | None = None) -> int:
    """Fork the container's monitor and have it create the container; return the init's pid.

    stdin: keep the container's stdin open for attached clients (-i); tty: the container's
    process has a terminal (process.terminal in its config.json: -t). keep_fds: fds of the
    caller's the monitor holds until the init exits and closes before the exit hook (the
    published ports' sockets: capsa.manager.network.reserve_ports); never the container's.
    warn(text) gets what the runtime printed while creating it (runc's warnings); a failed
    create is a CreateError. health_interval: run the container's health check that often
    (seconds; capsa.manager.healthcheck), None: never. restore: the runtime's restore keywords
    (image_path, ...): the container is restored by CRIU instead of created, and runs at once (no
    start)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    first = os.fork()
    if first == 0:
        try:
            os.close(read_end)
            report = _close_inherited_fds(write_end, keep_fds)
            os.chdir("/")
            os.setsid()
            if os.fork() == 0:
                _monitor(paths, container_id, bundle, report,
                         {"runtime_path": runtime_path, "log_path": log_path, "on_exit": on_exit, "stdin": stdin,
                          "tty": tty, "log_max_size": log_max_size, "log_max_files": log_max_files,
                          "keep_fds": list(keep_fds), "health_interval": health_interval, "restore": restore})
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(first, 0)
    with os.fdopen(read_end, "rb") as report_file:
        message = report_file.read().decode(errors="replace")
    kind, _, rest = message.partition("\n")
    if kind.startswith("pid "):
        if rest.strip() and warn is not None:
            warn(rest.strip())
        return int(kind[4:])
    if kind == "error":
        raise CreateError(rest.strip() or "the runtime failed to create the container")
    raise ManagerError(message or f"the monitor of container {container_id[:12]} ended before creating it")


def _close_inherited_fds(report: int, keep_fds) -> int:
    """Close every fd but the report pipe, `keep_fds` (made close-on-exec: the runtime never passes
    them on) and 0-2 (set to /dev/null): nothing else of the caller's stays open in the monitor or
    reaches the container."""
    keep = sorted({report, *keep_fds})
    low = 3
    for fd in keep:
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 20)
    for fd in keep_fds:
        os.set_inheritable(fd, False)
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return report


def _monitor(paths, container_id, bundle, report_fd, options) -> None:
    """The monitor process: never returns."""
    code = 1
    try:
        code = _run_monitor(paths, container_id, bundle, report_fd, options)
    except BaseException:  # noqa: BLE001 - the monitor has no one to raise to: its log says what happened
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


class _Stdio:
    """The container's side of its stdio, made before create, and the monitor's side after."""

    def __init__(self, runtime, monitor_dir: str, stdin: bool, tty: bool):
        import _socket

        self.tty = tty
        self.streams: dict[int, str] = {}
        self.stdin_target: int | None = None
        self.container_fds: list[int] = []
        self.console_listener = None
        self.console_socket: str | None = None
        self.console_ours: int | None = None
        self.console_fd: int | None = None
        devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        self.container_fds.append(devnull)
        if tty:
            if runtime.path is None:  # capsa's library: a socketpair, the init sends the master on it
                ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
                self.console_ours, self.console_fd = ours.detach(), theirs.detach()
                self.container_fds.append(self.console_fd)
            else:  # a runc-compatible binary: --console-socket PATH
                self.console_socket, self.console_listener = _console_listener(monitor_dir)
            self.stdio = (devnull, devnull, devnull)
            return
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.streams = {out_r: "stdout", err_r: "stderr"}
        self.container_fds += [out_w, err_w]
        # With -i the monitor keeps the write end for attached clients. Without it, the write end
        # is closed at once (reads see EOF, as of /dev/null): CRIU can dump a pipe, not the
        # host's /dev/null (docs/checkpoint.md).
        stdin_fd, stdin_write = os.pipe2(os.O_CLOEXEC)
        if stdin:
            self.stdin_target = stdin_write
        else:
            os.close(stdin_write)
        self.container_fds.append(stdin_fd)
        self.stdio = (stdin_fd, out_w, err_w)

    def runtime_output(self) -> str:
        """What the runtime wrote on the container's stdout and stderr while creating it (the
        init has not run the user's program yet: all of it is the runtime's)."""
        chunks = []
        for fd in self.streams:
            os.set_blocking(fd, False)
            try:
                while data := os.read(fd, 65536):
                    chunks.append(data)
            except BlockingIOError:
                pass
            os.set_blocking(fd, True)
        return b"".join(chunks).decode(errors="replace").strip()

    def take_console(self) -> None:
        """The pty master, sent by the container's init (library) or the runtime (CLI)."""
        from capsa import console

        if self.console_ours is not None:
            master = console.receive_fd(self.console_ours)
            os.close(self.console_ours)
        else:
            self.console_listener.settimeout(30)
            connection, _ = self.console_listener._accept()
            try:
                master = console.receive_fd(connection)
            finally:
                os.close(connection)
                self.console_listener.close()
                _remove_console_socket(self.console_socket)
        os.set_inheritable(master, False)
        self.streams = {master: "stdout"}
        self.stdin_target = master

    def close_container_side(self) -> None:
        for fd in self.container_fds:
            os.close(fd)
        self.container_fds = []


def _console_listener(monitor_dir: str):
    """A listening --console-socket for a runtime binary, at a path short enough for a socket
    address (the monitor's directory, or a private directory under /tmp)."""
    import _socket
    import tempfile

    path = os.path.join(monitor_dir, "console.sock")
    if len(path) >= 100:
        path = os.path.join(tempfile.mkdtemp(prefix="capsa-console-"), "console.sock")
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    listener.bind(path)
    listener.listen(1)
    return path, listener


def _remove_console_socket(path: str) -> None:
    try:
        os.unlink(path)
        if os.path.basename(os.path.dirname(path)).startswith("capsa-console-"):
            os.rmdir(os.path.dirname(path))
    except OSError:
        pass


def _run_monitor(paths, container_id, bundle, report_fd, options) -> int:
    import _signal

    from capsa.manager import runtime as runtimes
    from capsa.process import Process, become_subreaper

    _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    become_subreaper()
    monitor_dir = paths.monitor(container_id)
    os.makedirs(monitor_dir, mode=0o700, exist_ok=True)
    directory_fd = os.open(monitor_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    listener = _attach_listener(directory_fd)
    stdio = None
    try:
        runtime = runtimes.for_container(paths, options["runtime_path"])
        stdio = _Stdio(runtime, monitor_dir, options["stdin"], options["tty"])
        # The container's stdio is whatever fds 0-2 are when the runtime creates it.
        for std, fd in enumerate(stdio.stdio):
            os.dup2(fd, std)
        if options.get("restore"):
            pid = runtime.restore(container_id, bundle, **options["restore"])
        else:
            pid = runtime.create(container_id, bundle, console_socket=stdio.console_socket, console_fd=stdio.console_fd)
    except Exception as err:  # noqa: BLE001 - the caller gets the message, whatever failed
        printed = stdio.runtime_output() if stdio is not None else ""
        message = str(err) or repr(err)
        if printed and printed not in message:
            message += f"\n{printed}"
        os.write(report_fd, f"error\n{message}".encode())
        _remove_monitor_files(monitor_dir, directory_fd)
        return 1
    # What the runtime printed goes to the caller as warnings, not into the container's log.
    warnings = stdio.runtime_output()
    stdio.close_container_side()
    _monitor_stderr(monitor_dir)
    process = Process.open(pid)
    if options["tty"]:
        stdio.take_console()
    _write_pid_file(monitor_dir)
    os.write(report_fd, f"pid {pid}\n{warnings}".encode())
    os.close(report_fd)
    state = {"graph": paths.graph_root, "run": paths.run_root, "state": paths.state_root, "id": container_id,
             "pid": str(pid), "streams": ",".join(f"{fd}:{name}" for fd, name in stdio.streams.items()),
             "stdin": str(stdio.stdin_target if stdio.stdin_target is not None else -1),
             "tty": "1" if options["tty"] else "", "listener": str(listener.fileno()), "directory": str(directory_fd),
             "log": options["log_path"], "max_size": str(options["log_max_size"] or ""),
             "max_files": str(options["log_max_files"]), "on_exit": options["on_exit"] or "",
             "keep": ",".join(str(fd) for fd in options["keep_fds"]),
             "health": str(options.get("health_interval") or "")}
    _reexec_lean(state)  # returns only where it cannot exec
    return _serve(paths, container_id, process, stdio.streams, stdio.stdin_target, options["tty"], listener,
                  directory_fd, options)


# The lean monitor: what the monitor runs once the container is created. The forked monitor
# holds all the caller (capsactl) had imported and the runtime library used to create the
# container (about 7 MB of private memory); a new interpreter with only what copying needs
# holds about 4 MB. It keeps the pid (so it is still the init's parent and subreaper), the fds
# it is told about, and its stderr (monitor.log).
_LEAN_BOOT = ("import sys; sys.path[:0] = [sys.argv[1]]; "
              "from capsa.manager.monitor import serve_lean; serve_lean(sys.argv[2:])")


def _reexec_lean(state: dict) -> None:
    import sys

    import capsa

    executable = sys.executable
    if not executable or not os.access(executable, os.X_OK) or os.environ.get("CAPSA_MONITOR_NO_REEXEC"):
        return
    keep = [int(fd.split(":")[0]) for fd in state["streams"].split(",") if fd]
    keep += [int(state["stdin"]), int(state["listener"]), int(state["directory"])]
    keep += [int(fd) for fd in state["keep"].split(",") if fd]
    for fd in keep:
        if fd >= 0:
            os.set_inheritable(fd, True)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(capsa.__file__)))
    arguments = [f"{key}={value}" for key, value in state.items()]
    try:
        os.execv(executable, [executable, "-I", "-S", "-c", _LEAN_BOOT, package_parent, *arguments])
    except OSError:
        for fd in keep:
            if fd >= 0:
                os.set_inheritable(fd, False)


def serve_lean(arguments: list[str]) -> None:
    """The lean monitor's entry (see _reexec_lean): never returns."""
    code = 1
    try:
        import _socket

        from capsa.manager.paths import Paths
        from capsa.process import Process

        state = dict(argument.split("=", 1) for argument in arguments)
        paths = Paths(state["graph"], state["run"], state["state"])
        streams = {}
        for item in filter(None, state["streams"].split(",")):
            fd, _, name = item.partition(":")
            streams[int(fd)] = name
        stdin_target = int(state["stdin"]) if int(state["stdin"]) >= 0 else None
        kept = [int(fd) for fd in state["keep"].split(",") if fd]
        fds = [*streams, int(state["listener"]), int(state["directory"]), *kept]
        fds += [stdin_target] if stdin_target else []
        for fd in fds:
            os.set_inheritable(fd, False)
        listener = _socket.socket(fileno=int(state["listener"]))
        options = {"log_path": state["log"], "log_max_size": int(state["max_size"]) if state["max_size"] else None,
                   "log_max_files": int(state["max_files"]), "on_exit": state["on_exit"] or None,
                   "keep_fds": kept, "health_interval": float(state["health"]) if state.get("health") else None}
        process = Process.open(int(state["pid"]))
        code = _serve(paths, state["id"], process, streams, stdin_target, bool(state["tty"]), listener,
                      int(state["directory"]), options)
    except BaseException:  # noqa: BLE001 - the monitor has no one to raise to: its log says what happened
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _serve(paths, container_id, process, streams, stdin_target, tty, listener, directory_fd, options) -> int:
    """Copy output to the log and the clients and input to the container until the init exits;
    then the exit file, the clients' exit message, the exit hook."""
    from capsa.manager.logs import LogWriter

    monitor_dir = paths.monitor(container_id)
    with LogWriter(options["log_path"], options["log_max_size"], options["log_max_files"]) as log:
        health = _HealthTimer(options["health_interval"], paths, container_id) \
            if options.get("health_interval") else None
        loop = _Loop(process, streams, stdin_target, tty, listener, log, health)
        loop.run()
        status = _reap(process)
        _write_exit_file(paths, container_id, status)
        os.unlink(f"/proc/self/fd/{directory_fd}/attach")
        listener.close()
        loop.send_exit(status.exit_code)
    for fd in options.get("keep_fds") or ():
        os.close(fd)  # the published ports are free again before the clean-up (or a restart)
    if options["on_exit"]:
        module_name, _, function = options["on_exit"].partition(":")
        import importlib

        getattr(importlib.import_module(module_name), function)(paths, container_id, status)
    _remove_monitor_files(monitor_dir, directory_fd)
    return 0


def _attach_listener(directory_fd: int):
    import _socket

    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    address = f"/proc/self/fd/{directory_fd}/attach"
    try:
        os.unlink(address)
    except FileNotFoundError:
        pass
    listener.bind(address)
    listener.listen(16)
    return listener


def _monitor_stderr(monitor_dir: str) -> None:
    """The monitor's own errors (a traceback) go to monitor.log, kept if not empty."""
    fd = os.open(os.path.join(monitor_dir, "monitor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)


def _write_pid_file(monitor_dir: str) -> None:
    from capsa import procfs
    from capsa.state import write_atomic

    pid = os.getpid()
    write_atomic(os.path.join(monitor_dir, "pid"), f"{pid} {procfs.start_time(pid)}\n", 0o644)


def _remove_monitor_files(monitor_dir: str, directory_fd: int) -> None:
    for name in ("attach", "pid"):
        try:
            os.unlink(os.path.join(monitor_dir, name))
        except FileNotFoundError:
            pass
    log = os.path.join(monitor_dir, "monitor.log")
    try:
        if os.path.getsize(log) == 0:
            os.unlink(log)
    except OSError:
        pass
    try:
        os.rmdir(monitor_dir)  # kept if monitor.log says something
    except OSError:
        pass
    os.close(directory_fd)


def _reap(process):
    from capsa.process import reap_until

    return reap_until(process)


class _Loop:
    """The monitor's work while the container runs: output to the log and the clients, clients'
    input to the container, until the init exits."""

    def __init__(self, process, streams: dict[int, str], stdin_target: int | None, tty: bool, listener, log,
                 health=None):
        self.process = process
        self.streams = dict(streams)
        self.stdin_target = stdin_target  # the stdin pipe's write end (-i), or the pty master (-t)
        self.tty = tty
        self.listener = listener
        self.log = log
        self.health = health  # a _HealthTimer, or None
        self.clients: dict[int, object] = {}
        self.stdin_buffer = bytearray()
        self.stdin_eof = False
        if stdin_target is not None:
            os.set_blocking(stdin_target, False)

    def run(self) -> None:
        import select

        try:
            exit_fd = self.process.fileno()
        except Exception:  # noqa: BLE001 - no pidfd (Linux < 5.3): poll the process instead
            exit_fd = None
        while True:
            readers = [*self.streams, self.listener.fileno(), *self.clients]
            if exit_fd is not None:
                readers.append(exit_fd)
            timeout = None if exit_fd is not None else 0.5
            if self.health is not None:
                readers += self.health.fds()
                timeout = self.health.timeout(timeout)
            writers = [self.stdin_target] if self.stdin_buffer and self.stdin_target is not None else []
            readable, writable, _ = select.select(readers, writers, [], timeout)
            if self.health is not None:
                self.health.tick(readable)
            if writable:
                self._flush_stdin()
            # Clients first: one that connected before the output was written gets all of it
            # (a foreground run connects before it starts the container).
            if self.listener.fileno() in readable:
                self._accept()
            for fd in readable:
                if fd in self.streams:
                    self._copy_output(fd)
                elif fd in self.clients:
                    self._client_message(fd)
            if (exit_fd in readable) if exit_fd is not None else self.process.poll() is not None:
                self._accept()
                self._drain()
                return

    def _copy_output(self, fd: int) -> bool:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError:  # EIO: a pty with no slave left
            data = b""
        if not data:
            os.close(fd)
            del self.streams[fd]
            if fd == self.stdin_target:
                self.stdin_target = None
            return False
        stream = self.streams[fd]
        self.log.write(stream, data)
        self._broadcast(STDOUT if stream == "stdout" else STDERR, data)
        return True

    def _drain(self) -> None:
        """The init has exited: what it (or what it left behind) wrote and we have not read yet."""
        for fd in list(self.streams):
            os.set_blocking(fd, False)
            while fd in self.streams and self._copy_output(fd):
                pass

    def _broadcast(self, kind: int, data: bytes) -> None:
        for offset in range(0, len(data), PACKET_SIZE - 1):
            packet = bytes([kind]) + data[offset:offset + PACKET_SIZE - 1]
            for fd, client in list(self.clients.items()):
                try:
                    client.send(packet)
                except OSError:  # gone, or not reading (the send timed out): dropped
                    self._drop(fd)

    def _accept(self) -> None:
        """Every client waiting in the listener's backlog."""
        import _socket

        self.listener.setblocking(False)
        while True:
            try:
                fd, _ = self.listener._accept()  # accept4 with SOCK_CLOEXEC
            except OSError:  # BlockingIOError: none left
                return
            client = _socket.socket(fileno=fd)
            client.setblocking(True)
            client.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, _timeval(_CLIENT_SEND_TIMEOUT))
            self.clients[client.fileno()] = client

    def _drop(self, fd: int) -> None:
        client = self.clients.pop(fd, None)
        if client is not None:
            client.close()

    def _client_message(self, fd: int) -> None:
        try:
            message = self.clients[fd].recv(PACKET_SIZE)
        except OSError:
            message = b""
        if not message:
            self._drop(fd)
            return
        kind, payload = message[0], message[1:]
        if kind == STDIN and self.stdin_target is not None and not self.stdin_eof:
            self.stdin_buffer += payload
            self._flush_stdin()
        elif kind == STDIN_EOF and not self.tty:
            self.stdin_eof = True
            self._flush_stdin()
        elif kind == RESIZE and self.tty and len(payload) == 4 and self.stdin_target is not None:
            import _struct

            from capsa.linux import tty

            rows, columns = _struct.unpack("HH", payload)
            try:
                tty.set_window_size(self.stdin_target, rows, columns)
            except OSError:
                pass
        elif kind == SIGNAL and len(payload) == 4:
            import _struct

            try:
                self.process.send_signal(_struct.unpack("i", payload)[0])
            except (ProcessLookupError, OSError, ValueError):
                pass

    def _flush_stdin(self) -> None:
        target = self.stdin_target
        if target is None:
            self.stdin_buffer.clear()
            return
        try:
            while self.stdin_buffer:
                written = os.write(target, self.stdin_buffer)
                del self.stdin_buffer[:written]
        except BlockingIOError:
            return
        except OSError:  # the container closed its stdin (EPIPE)
            self.stdin_buffer.clear()
        if self.stdin_eof and not self.stdin_buffer and not self.tty:
            os.close(target)
            self.stdin_target = None

    def send_exit(self, code: int | None) -> None:
        packet = bytes([EXIT]) + (str(code).encode() if code is not None else b"")
        for fd, client in list(self.clients.items()):
            try:
                client.send(packet)
            except OSError:
                pass
            self._drop(fd)


class _HealthTimer:
    """--health-interval: a health check every interval, counted from the end of the previous
    one (systemd's OnUnitInactiveSec, as podman's timer), never two at once. Each check runs in
    a new `python -I -S` (capsa.manager.healthcheck.scheduled_main), so the monitor stays lean
    and a check that hangs holds up nothing here (the check kills it at its timeout)."""

    _BOOT = ("import sys; sys.path[:0] = [sys.argv[1]]; "
             "from capsa.manager.healthcheck import scheduled_main; scheduled_main(sys.argv[2:])")

    def __init__(self, interval: float, paths, container_id: str):
        import time

        self.interval = interval
        self.due = time.monotonic() + interval
        self.pid = self.pidfd = None
        self.arguments = [paths.graph_root, paths.run_root, paths.state_root, container_id]

    def fds(self) -> list[int]:
        return [self.pidfd] if self.pidfd is not None else []

    def timeout(self, other: float | None) -> float | None:
        """select's timeout: `other`, or sooner if a check is due sooner."""
        if self.pidfd is not None:
            return other
        import time

        mine = max(0.0, self.due - time.monotonic())
        return mine if other is None else min(mine, other)

    def tick(self, readable: list[int]) -> None:
        import time

        if self.pidfd is not None and self.pidfd in readable:
            os.waitpid(self.pid, 0)
            os.close(self.pidfd)
            self.pid = self.pidfd = None
            self.due = time.monotonic() + self.interval
        if self.pidfd is None and time.monotonic() >= self.due:
            self._spawn()

    def _spawn(self) -> None:
        import sys

        import capsa

        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(capsa.__file__)))
        try:
            self.pid = os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", "-c", self._BOOT, package_parent,
                                                       *self.arguments], dict(os.environ))
            self.pidfd = os.pidfd_open(self.pid)
        except OSError as err:  # no process now (EAGAIN): the next interval tries again
            import time

            sys.stderr.write(f"health check not started: {err}\n")
            self.due = time.monotonic() + self.interval


def _timeval(seconds: float) -> bytes:
    import _struct

    return _struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))


def _write_exit_file(paths, container_id: str, status) -> None:
    from capsa.state import write_atomic

    os.makedirs(paths.exits, mode=0o700, exist_ok=True)
    code = status.exit_code if status.exit_code is not None else -1
    write_atomic(os.path.join(paths.exits, container_id), f"{code}", 0o644)


def read_exit_file(paths, container_id: str) -> int | None:
    try:
        with open(os.path.join(paths.exits, container_id)) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def is_running(paths, container_id: str) -> bool:
    """Whether the container's monitor is still there (its pid file names a live process that
    started when the file says): while it is, the log may still grow."""
    from capsa import procfs

    try:
        with open(os.path.join(paths.monitor(container_id), "pid")) as f:
            pid_text, _, start_text = f.read().strip().partition(" ")
        pid = int(pid_text)
        start_time = int(start_text) if start_text.isdigit() else None
    except (OSError, ValueError):
        return False
    return procfs.is_alive(pid, start_time)
