"""The zygote of capsa.Pool: a small process, exec'd once per program, that creates the pooled
sandboxes, so that their agents (capsa.api.agent) are forks of it and not of the calling program.

Why: a forked agent shares its parent's pages until one side writes to them. Forked from the
calling program, an agent and the slot it prepares held 2.8 MiB of their own (USS), and more as
the program went on writing to its heap (each page it touches is copied for it, and the agent's
copy becomes the agent's alone). The zygote is a fresh interpreter that imports only what
creating a container and serving runs need (no site, no user code): the calling program's
memory is never the agents'. On x86-64 the agents are not even forks of the zygote, which runs
each create in Python (and so takes, from every agent forked from it before, the pages it
writes: each side's copy is then its own), but of its template: a fork of the zygote made at
start-up, before any create, that only forks an agent when told to (a byte on a pipe) and stays
idle otherwise. The agent takes its job on a socket (capsa.api.agent.job: the sandbox's init
pid, settings, the spec's process and paths, the seccomp filter as built here) with the pool's
socket, and joins the sandbox, whose init holds it (capsa.api.holder). Elsewhere the sandbox's
init is its agent.

    python3 -I -S -c '... from capsa.api.zygote import main; main()'   (fd 0: the socket)

Protocol on the socket (SOCK_SEQPACKET, one message each, one request at a time):
    caller -> zygote  marshal((id, spec, state root, bundle dir, (scratch, shm size, waiter, network)))
    zygote -> caller  b"K" + marshal(init pid), the new sandbox's control socket as SCM_RIGHTS;
                      or b"E" + the runtime's message (nothing of the sandbox is left)
The zygote is a subreaper: each sandbox's init is re-parented to it, and reaped by it (the
template's agents are reaped by the kernel: it ignores SIGCHLD). It ends when the calling
program closes the socket (and, by PR_SET_PDEATHSIG, with it; the template with the zygote);
the agents see their own sockets close and end too, killing their inits; the guard
(capsa.api.guard) deletes what is left.
"""

from __future__ import annotations

import _socket
import _thread
import marshal
import posix

MESSAGE_MAX = 1 << 22
# What creating a sandbox imports on first use (either cgroup version's modules): imported before
# the first fork, not by the first create, whose imports (new objects, in pages the first agent
# shares with the zygote) would cost that agent ~0.4 MB of pages of its own.
_CREATE_IMPORTS = ("_sha256", "capsa.create", "capsa.launch", "capsa.idmap", "capsa.rootless", "capsa.seccomp",
                   "capsa.cgroups", "capsa.cgroups.v1", "capsa.cgroups.v1_resources", "capsa.cgroups.v2",
                   "capsa.cgroups.v2_resources")
_PR_SET_PDEATHSIG = 1
OK, ERROR = b"K", b"E"


# -- in the zygote ---------------------------------------------------------------------------------
def main() -> None:
    import gc
    import select
    import signal

    from capsa import linux, process
    from capsa.api import agent, holder
    from capsa.container import Container

    linux.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    process.become_subreaper()
    sock = _socket.socket(fileno=posix.dup(0))
    for name in _CREATE_IMPORTS:
        __import__(name)
    gc.collect()
    gc.freeze()  # what is here now is shared with every agent: the collector must not write to it
    template = _Template(agent) if holder.supported() else None
    # Each agent's pidfd, to reap it when it ends. Not SIGCHLD: a handler and wakeup fd of
    # Python's would be the agents' too (they are forks of this process), and write the
    # signal's number on whatever fd an agent has by that number.
    poller = select.poll()
    poller.register(0, select.POLLIN)
    agents: dict[int, int] = {}
    while True:
        for fd, _ in poller.poll():
            if fd != 0:
                poller.unregister(fd)
                _reap(agents.pop(fd), fd)
                continue
            pid = _serve_one(sock, Container, agent, template)
            if pid is None:
                return
            if pid:
                try:
                    pidfd = posix.pidfd_open(pid)
                except OSError:
                    continue  # gone already (reaped by the next _reap)
                agents[pidfd] = pid
                poller.register(pidfd, select.POLLIN)


def _serve_one(sock, container_class, agent, template: _Template | None = None) -> int | None:
    """Create the sandbox one request asks for and answer: its init's pid (0 if it could not be
    made); None when the caller is gone. With a template, the init only holds the sandbox (see
    capsa.api.holder) and the agent is a fork of the template that joins it."""
    from functools import partial

    try:
        data = sock.recv(MESSAGE_MAX)
    except OSError:
        return None
    if not data:
        return None
    pid = 0
    container_id, spec, state_root, bundle, settings = marshal.loads(data)
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    null = posix.open("/dev/null", posix.O_RDWR | posix.O_CLOEXEC)
    from capsa import init

    try:
        init.prebuilt_seccomp = _seccomp_filter(spec, state_root)
        if template is None:
            stdio, serve = (theirs.fileno(), null, null), partial(agent.serve, agent.Settings(*settings))
        else:
            stdio, serve = (null, null, null), agent.hold
        container = container_class.create(
            state_root, container_id, bundle, spec=spec, rootless_cgroups=posix.geteuid() != 0,
            stdio=stdio, serve=serve)
        pid = container.pid
        if template is not None:
            _fork_agent(template, agent, container, spec, settings, state_root, theirs.fileno())
        answer, fds = OK + marshal.dumps(pid), [ours.fileno()]
    except Exception as err:  # noqa: BLE001 - the caller raises it as a SandboxStartError
        answer, fds = ERROR + str(err).encode(errors="replace"), []
    finally:
        init.prebuilt_seccomp = None
        theirs.close()
        posix.close(null)
    try:
        sock.sendmsg([answer], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, b"".join(fd.to_bytes(4, "little") for fd in fds))]
                     if fds else [])
    except OSError:
        return None
    finally:
        ours.close()
    return pid


class _Template:
    """A fork of the zygote made once it has imported everything and before it creates anything,
    that only forks the agents (capsa.api.agent.join) when told to: an agent's pages are then
    shared with a process that stays idle. Forked from the zygote itself, which runs each create
    in Python, an agent would lose to the zygote's next create every page it shares with it (the
    zygote's copy is then its own, the agent's the agent's own: see docs/performance.md)."""

    def __init__(self, agent):
        import signal

        self.jobs, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        trigger, self.trigger = posix.pipe()
        if posix.fork() == 0:
            try:
                posix.close(self.trigger)
                from capsa import linux

                linux.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
                signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # agents are reaped by the kernel
                while posix.read(trigger, 1):
                    try:
                        if posix.fork() == 0:
                            agent.join(theirs.fileno())
                    except OSError:
                        pass  # one sandbox gets no agent (the pool's wait for it fails); the next ones do
            finally:
                posix._exit(0)
        posix.close(trigger)
        theirs.close()

    def fork_agent(self, job: bytes, control: int) -> None:
        """A new agent, that takes the job (and the pool's socket, `control`)."""
        self.jobs.sendmsg([job], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, control.to_bytes(4, "little"))])
        posix.write(self.trigger, b"a")


def _fork_agent(template: _Template, agent, container, spec: dict, settings: tuple, state_root: str,
                control: int) -> None:
    """Have the template fork the agent of the sandbox just made; the sandbox is deleted if not."""
    from capsa import init
    from capsa.errors import CapsaError

    try:
        cgroup = container.cgroup()
        seccomp_filter = init.build_seccomp((spec.get("linux") or {}).get("seccomp"), _seccomp_cache(state_root))
        if seccomp_filter is not None and seccomp_filter.notifies:
            raise CapsaError("a pooled sandbox's seccomp profile cannot notify (SCMP_ACT_NOTIFY)")
        job = agent.job(container.pid, container.id, spec, settings, seccomp_filter,
                        cgroup.self_join_files() if cgroup is not None else [], _namespaces_to_join(spec))
        template.fork_agent(marshal.dumps(job), control)
    except BaseException:
        container.delete(force=True)
        raise


def _namespaces_to_join(spec: dict) -> list[str]:
    """The /proc/<pid>/ns files of the namespaces the sandbox has of its own, user first and mount
    last, but its pid namespace: the runs' pid namespaces are the agent's children (capsa.api.agent)."""
    from capsa.launch import NAMESPACE_FILES

    own = {ns["type"] for ns in (spec.get("linux") or {}).get("namespaces") or [] if not ns.get("path")}
    order = ("user", "ipc", "uts", "network", "cgroup", "mount")
    return [NAMESPACE_FILES[kind] for kind in order if kind in own]


# The seccomp filters built here, by their profile (marshal): a pool's sandboxes share one.
_filters: dict[bytes, object] = {}


def _seccomp_filter(spec: dict, state_root: str) -> tuple[dict, object] | None:
    """(the spec's seccomp profile, its filter), for capsa.init.build_seccomp: built here, before
    the fork, and kept, so that the sandbox's init finds it made. Measured: building it in every
    agent (validating the profile, hashing it for the cache, libseccomp) copied ~100 KB of pages
    shared with the zygote into each one. None when there is no profile or it cannot be built
    here: the init then builds it as for any container, and reports what is wrong."""
    from capsa import init
    from capsa.errors import CapsaError

    profile = (spec.get("linux") or {}).get("seccomp")
    if not profile:
        return None
    key = marshal.dumps(profile)
    built = _filters.get(key)
    if built is None:
        try:
            built = init.build_seccomp(profile, _seccomp_cache(state_root))
        except (CapsaError, OSError, ValueError, TypeError):
            return None
        if len(_filters) >= 8:
            _filters.clear()
        _filters[key] = built
    return profile, built


def _seccomp_cache(state_root: str) -> str:
    from capsa import posixlite
    from capsa.state import SECCOMP_CACHE

    return posixlite.join(state_root, SECCOMP_CACHE)


def _reap(pid: int, pidfd: int) -> None:
    """The agent `pid` ended: reap it, and any other child that ended (re-parented orphans)."""
    posix.close(pidfd)
    try:
        posix.waitpid(pid, 0)
    except ChildProcessError:
        pass
    while True:
        try:
            if posix.waitpid(-1, posix.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


# -- in the calling program ------------------------------------------------------------------------
class Zygote:
    """The calling program's end: start() once, create() from any thread (one at a time)."""

    def __init__(self):
        import threading

        self._lock = threading.Lock()
        self._sock = None
        self._process = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _start(self) -> None:
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
        self._sock = ours

    def create(self, container_id: str, spec: dict, state_root: str, bundle: str, settings) -> tuple[int, object]:
        """Have the zygote create a pooled sandbox: (its init's pid, our end of its control
        socket). Raises RuntimeError with the runtime's message if it cannot."""
        import socket

        request = marshal.dumps((container_id, spec, state_root, bundle,
                                 (settings.scratch, settings.shm_size, settings.waiter, settings.network)))
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
            try:
                self._sock.send(request)
                data, ancillary, _, _ = self._sock.recvmsg(1 << 16, socket.CMSG_SPACE(4))
            except OSError as err:
                data, ancillary = ERROR + f"the pool's zygote is gone: {err.strerror}".encode(), []
            if not data:
                data = ERROR + b"the pool's zygote is gone"
        fds = [int.from_bytes(payload[i:i + 4], "little") for level, kind, payload in ancillary
               if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS for i in range(0, len(payload) - 3, 4)]
        if data[:1] != OK or len(fds) != 1:
            for fd in fds:
                posix.close(fd)
            raise RuntimeError(data[1:].decode(errors="replace"))
        return marshal.loads(data[1:]), socket.socket(fileno=fds[0])


_zygote: Zygote | None = None
_made = _thread.allocate_lock()


def zygote() -> Zygote:
    """This program's zygote (made on first use; started on the first create)."""
    global _zygote
    with _made:
        if _zygote is None:
            _zygote = Zygote()
    return _zygote

