"""The zygote of capsa's Python API: a small process, exec'd once per program, that creates the
sandboxes: the pooled ones (capsa.Pool), whose agents (capsa.api.agent) are forks of it and not
of the calling program, and the run-once containers of capsa.run and Sandbox.run.

Why: a forked agent shares its parent's pages until one side writes to them. Forked from the
calling program, an agent and the slot it prepares held 2.8 MiB of their own (USS), and more as
the program went on writing to its heap (each page it touches is copied for it, and the agent's
copy becomes the agent's alone). The zygote is a fresh interpreter that imports only what
creating a container and serving runs need (no site, no user code) and then only waits: its
pages stay shared with every agent it made, and the calling program's memory is never theirs.
A run-once container made here costs the same whatever the calling program is: the fork copies
the zygote's few MB, not the program's heap (a 150 MB program forked 5 ms slower), and the
zygote has no other thread, so its container's init is always born in its namespaces with one
clone3 (capsa.launch), which a threaded program's never is (it forks twice).

    python3 -I -S -c '... from capsa.api.zygote import main; main()'   (fd 0: the socket)

Protocol on the socket (SOCK_SEQPACKET, one message each, one request at a time):
    caller -> zygote  marshal((id, spec, state root, bundle dir, (scratch, shm size, waiter, network)))
    zygote -> caller  b"K" + marshal(init pid), the new sandbox's control socket as SCM_RIGHTS;
                      or b"E" + the runtime's message (nothing of the sandbox is left)
A run-once container (its init execs the run's process at once):
    caller -> zygote  marshal((id, spec, state root, bundle dir, None)); the run's stdin, stdout,
                      stderr and the write end of its exit pipe as SCM_RIGHTS
    zygote -> caller  b"K" + marshal((init pid, state record)); or b"E" + the runtime's message
    zygote -> exit pipe  marshal(wait status) once the init has ended (the zygote is its parent
                      and reaps it), then EOF; EOF alone if the zygote ends first
The zygote is a subreaper: each sandbox's init (its agent) is re-parented to it, and reaped by
it. It ends when the calling program closes the socket (and, by PR_SET_PDEATHSIG, with it);
the agents see their own sockets close and end too; the guard (capsa.api.guard) deletes what is left.
"""

from __future__ import annotations

import _socket
import _thread
import marshal
import posix

MESSAGE_MAX = 1 << 22
_PR_SET_PDEATHSIG = 1
OK, ERROR = b"K", b"E"
# The v1 hierarchies a sandbox gets a directory in: its limits (memory, pids, cpu), its accounting
# (cpuacct, the memory peak), the freezer (a timeout freezes the run before killing it) and the
# device rules. Not cpuset, blkio, name=systemd nor the hybrid cgroup2 one, which it does not
# use: four directories fewer to make, join and remove per sandbox (cgroup v2 hosts: no change).
SANDBOX_CGROUP_CONTROLLERS = frozenset({"memory", "pids", "cpu", "cpuacct", "freezer", "devices"})


# -- in the zygote ---------------------------------------------------------------------------------
def main() -> None:
    import gc
    import select
    import signal

    from capsa import linux, process
    from capsa.api import agent
    from capsa.container import Container

    linux.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    process.become_subreaper()
    sock = _socket.socket(fileno=posix.dup(0))
    gc.collect()
    gc.freeze()  # what is here now is shared with every agent: the collector must not write to it
    # Each agent's pidfd, to reap it when it ends. Not SIGCHLD: a handler and wakeup fd of
    # Python's would be the agents' too (they are forks of this process), and write the
    # signal's number on whatever fd an agent has by that number.
    poller = select.poll()
    poller.register(0, select.POLLIN)
    children = _Children()
    while True:
        for fd, _ in poller.poll():
            if fd != 0:
                poller.unregister(fd)
                children.ended(fd)
                continue
            made = _serve_one(sock, Container, agent)
            if made is None:
                return
            pid, exit_pipe = made
            if pid:
                try:
                    pidfd = posix.pidfd_open(pid)
                except OSError:
                    _close_quietly(exit_pipe)
                    continue  # gone already (reaped by the next _reap)
                children.watch(pidfd, pid, exit_pipe)
                poller.register(pidfd, select.POLLIN)


class _Children:
    """The inits the zygote made (agents and run-once inits), by pidfd: each reaped when it ends,
    a run-once init's wait status written to its exit pipe."""

    def __init__(self):
        self.by_pidfd: dict[int, tuple[int, int]] = {}  # pidfd -> (pid, exit pipe or -1)
        self.statuses: dict[int, int] = {}  # pid -> wait status of a watched init reaped early

    def watch(self, pidfd: int, pid: int, exit_pipe: int) -> None:
        self.by_pidfd[pidfd] = (pid, exit_pipe)

    def ended(self, pidfd: int) -> None:
        pid, exit_pipe = self.by_pidfd.pop(pidfd)
        posix.close(pidfd)
        status = self.statuses.pop(pid, None)
        if status is None:
            try:
                status = posix.waitpid(pid, 0)[1]
            except ChildProcessError:
                status = None
        self._reap_orphans()
        if exit_pipe >= 0:
            if status is not None:
                try:
                    posix.write(exit_pipe, marshal.dumps(status))
                except OSError:
                    pass  # the caller is gone
            posix.close(exit_pipe)

    def _reap_orphans(self) -> None:
        """Reap every other child that ended: processes re-parented to us (a subreaper); the
        status of one we watch is kept for when its pidfd is read."""
        watched = {pid for pid, _ in self.by_pidfd.values()}
        while True:
            try:
                pid, status = posix.waitpid(-1, posix.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in watched:
                self.statuses[pid] = status


def _close_quietly(fd: int) -> None:
    if fd >= 0:
        posix.close(fd)


def _serve_one(sock, container_class, agent) -> tuple[int, int] | None:
    """Create the sandbox one request asks for and answer: (its init's pid, 0 if it could not be
    made; the exit pipe to report its end on, -1 for an agent); None when the caller is gone."""
    try:
        data, ancillary, _, _ = sock.recvmsg(MESSAGE_MAX, _socket.CMSG_SPACE(4 * 4))
    except OSError:
        return None
    if not data:
        return None
    fds = _received_fds(ancillary)
    container_id, spec, state_root, bundle, settings = marshal.loads(data)
    if settings is None:
        return _serve_run_once(sock, container_class, (container_id, spec, state_root, bundle), fds)
    for fd in fds:
        posix.close(fd)
    return _serve_agent(sock, container_class, agent, (container_id, spec, state_root, bundle), settings), -1


def _received_fds(ancillary) -> list[int]:
    return [int.from_bytes(payload[i:i + 4], "little") for level, kind, payload in ancillary
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS for i in range(0, len(payload) - 3, 4)]


def _serve_run_once(sock, container_class, request: tuple, fds: list[int]) -> tuple[int, int] | None:
    """A run-once container whose init execs at once, with the run's stdio: answer its pid and
    state record; keep the exit pipe, to report the init's end on it."""
    container_id, spec, state_root, bundle = request
    if len(fds) != 4:
        for fd in fds:
            posix.close(fd)
        return (0, -1) if _answer(sock, ERROR + b"internal error: a run needs 4 fds") else None
    *stdio, exit_pipe = fds
    pid = 0
    try:
        container = container_class.create(state_root, container_id, bundle, spec=spec,
                                           rootless_cgroups=posix.geteuid() != 0, stdio=tuple(stdio),
                                           exec_at_once=True, cgroup_controllers=SANDBOX_CGROUP_CONTROLLERS)
        pid = container.pid
        answer = OK + marshal.dumps((pid, container.record))
    except Exception as err:  # noqa: BLE001 - the caller raises it as a SandboxStartError
        answer = ERROR + str(err).encode(errors="replace")
    finally:
        for fd in stdio:
            posix.close(fd)
    if not pid:
        posix.close(exit_pipe)
        exit_pipe = -1
    if not _answer(sock, answer):
        return None  # the caller is gone: so is the zygote (the guard deletes the container)
    return pid, exit_pipe


def _answer(sock, answer: bytes, fds: list[int] | None = None) -> bool:
    try:
        sock.sendmsg([answer], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, b"".join(fd.to_bytes(4, "little") for fd in fds))]
                     if fds else [])
    except OSError:
        return False
    return True


def _serve_agent(sock, container_class, agent, request: tuple, settings) -> int | None:
    """A pooled sandbox: its init serves as the agent; answer its pid and the control socket."""
    from functools import partial

    container_id, spec, state_root, bundle = request
    pid = 0
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    null = posix.open("/dev/null", posix.O_RDWR | posix.O_CLOEXEC)
    try:
        container = container_class.create(
            state_root, container_id, bundle, spec=spec, rootless_cgroups=posix.geteuid() != 0,
            stdio=(theirs.fileno(), null, null), cgroup_controllers=SANDBOX_CGROUP_CONTROLLERS,
            serve=partial(agent.serve, agent.Settings(*settings)))
        pid = container.pid
        answer, fds = OK + marshal.dumps(pid), [ours.fileno()]
    except Exception as err:  # noqa: BLE001 - the caller raises it as a SandboxStartError
        answer, fds = ERROR + str(err).encode(errors="replace"), []
    finally:
        theirs.close()
        posix.close(null)
    try:
        return pid if _answer(sock, answer, fds) else None
    finally:
        ours.close()


# -- in the calling program ------------------------------------------------------------------------
class Zygote:
    """The calling program's end: start() once, create() and run_once() from any thread (one
    request at a time)."""

    def __init__(self):
        import threading

        self._lock = threading.Lock()
        self._sock = None
        self._process = None
        self._owner = 0  # the pid of the program that started it (a fork of the program starts its own)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the zygote now (it imports while the program goes on) unless it runs."""
        with self._lock:
            self._start_unless_running()

    def _start_unless_running(self) -> None:
        if self._process is not None and self._owner == posix.getpid() and self._process.poll() is None:
            return
        import os
        import socket
        import subprocess
        import sys

        import capsa

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(capsa.__file__)))
        code = f"import sys; sys.path.insert(0, {package_parent!r}); from capsa.api.zygote import main; main()"
        try:
            self._process = subprocess.Popen([sys.executable, "-I", "-S", "-c", code], stdin=theirs,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
                                             cwd="/")
        finally:
            theirs.close()
        self._sock, self._owner = ours, posix.getpid()

    def _exchange(self, request: bytes, fds: list[int]) -> tuple[bytes, list[int]]:
        """Send a request (with fds) and receive the zygote's answer and the fds it holds."""
        import socket

        with self._lock:
            self._start_unless_running()
            try:
                self._sock.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                b"".join(fd.to_bytes(4, "little") for fd in fds))] if fds else [])
                data, ancillary, _, _ = self._sock.recvmsg(1 << 16, socket.CMSG_SPACE(4))
            except OSError as err:
                data, ancillary = ERROR + f"capsa's zygote is gone: {err.strerror}".encode(), []
            if not data:
                data = ERROR + b"capsa's zygote is gone"
        return data, _received_fds(ancillary)

    def create(self, container_id: str, spec: dict, state_root: str, bundle: str, settings) -> tuple[int, object]:
        """Have the zygote create a pooled sandbox: (its init's pid, our end of its control
        socket). Raises RuntimeError with the runtime's message if it cannot."""
        import socket

        request = marshal.dumps((container_id, spec, state_root, bundle,
                                 (settings.scratch, settings.shm_size, settings.waiter, settings.network)))
        data, fds = self._exchange(request, [])
        if data[:1] != OK or len(fds) != 1:
            for fd in fds:
                posix.close(fd)
            raise RuntimeError(data[1:].decode(errors="replace"))
        return marshal.loads(data[1:]), socket.socket(fileno=fds[0])

    def run_once(self, container_id: str, spec: dict, state_root: str, bundle: str, stdio: tuple[int, int, int],
                 exit_pipe: int) -> tuple[int, dict]:
        """Have the zygote create a run-once container, its init exec'ing at once with `stdio`:
        (its init's pid, its state record). The zygote writes the init's wait status to
        `exit_pipe` (its write end: the zygote gets a copy) once it has ended. Raises
        RuntimeError with the runtime's message if it cannot."""
        data, fds = self._exchange(marshal.dumps((container_id, spec, state_root, bundle, None)), [*stdio, exit_pipe])
        for fd in fds:
            posix.close(fd)
        if data[:1] != OK:
            raise RuntimeError(data[1:].decode(errors="replace"))
        pid, record = marshal.loads(data[1:])
        return pid, record


_zygote: Zygote | None = None
_made = _thread.allocate_lock()


def zygote() -> Zygote:
    """This program's zygote (made on first use; started by capsa.api.session.setup, or on the
    first request)."""
    global _zygote
    with _made:
        if _zygote is None:
            _zygote = Zygote()
    return _zygote

