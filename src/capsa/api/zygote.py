"""The zygote of capsa's Python API: a small process, exec'd once per program, that creates the
sandboxes: the pooled ones (capsa.Pool), whose agents (capsa.api.agent) are not forks of the
calling program, and the run-once containers of capsa.run and Sandbox.run.

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

A run-once container made here costs the same whatever the calling program is: the fork copies
the zygote's few MB, not the program's heap (a program with 150 MB of heap took 17-18 ms a cold
run, against 10-11), and the zygote has no other thread, so its container's init is always born
in its namespaces with one clone3 (capsa.launch), which a threaded program's never is.

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
The zygote is a subreaper: each sandbox's init is its child or re-parented to it, and reaped by
it (the template's agents are reaped by the kernel: it ignores SIGCHLD). It ends when the calling
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
                   "capsa.cgroups.v2_resources", "capsa.plannedinit", "capsa.spawn", "capsa.mountopts")
_PR_SET_PDEATHSIG = 1
OK, ERROR = b"K", b"E"
# The v1 hierarchies a sandbox gets a directory in: its limits (memory, pids, cpu), its accounting
# (cpuacct, the memory peak), the freezer (a timeout freezes the run before killing it) and the
# device rules. Not cpuset, blkio, name=systemd nor the hybrid cgroup2 one, which it does not
# use: four directories fewer to make, join and remove per sandbox (cgroup v2 hosts: no change).
SANDBOX_CGROUP_CONTROLLERS = frozenset({"memory", "pids", "cpu", "cpuacct", "freezer", "devices"})
RUN_ONCE_CGROUP_CONTROLLERS = frozenset({"memory", "pids", "cpuacct", "devices"})  # see run_once_controllers


def run_once_controllers(spec: dict) -> frozenset[str]:
    """A run-once container's v1 hierarchies: a pooled sandbox's but the freezer, and cpu unless
    it has a CPU quota. Its processes are all in its own pid namespace, whose init's death kills
    every one of them (no fork escapes it): a timeout kills the init (supervise), nothing needs
    freezing first. Each hierarchy left out is a mkdir, a join by the child (~0.1 ms: the kernel
    attaching it) and an rmdir fewer per run."""
    if ((spec.get("linux") or {}).get("resources") or {}).get("cpu"):
        return RUN_ONCE_CGROUP_CONTROLLERS | {"cpu"}
    return RUN_ONCE_CGROUP_CONTROLLERS



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
    from capsa import spawn

    spawn.spawner()  # made before the template: its code page is every agent's too, shared
    from capsa.cgroups.common import remember_hierarchies

    remember_hierarchies()  # every run asks which cgroup hierarchies there are
    gc.collect()
    gc.freeze()  # what is here now is shared with every agent: the collector must not write to it
    template = _Template(agent) if holder.supported() else None
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
            made = _serve_one(sock, Container, agent, template)
            if made is None:
                return
            pid, exit_pipe, container = made
            if pid:
                try:
                    pidfd = posix.pidfd_open(pid)
                except OSError:
                    if exit_pipe >= 0:
                        posix.close(exit_pipe)
                    continue  # gone already (reaped by the next _reap)
                children.watch(pidfd, pid, exit_pipe, container)
                poller.register(pidfd, select.POLLIN)


class _Children:
    """The inits the zygote made (agents and run-once inits), by pidfd: each reaped when it ends.
    A run-once container is finished here: its init's wait status and its cgroup's usage written
    to its exit pipe, then the container deleted, while the caller puts its Result together (the
    next request waits for the delete; a caller that ends first leaves it to its guard)."""

    def __init__(self):
        self.by_pidfd: dict[int, tuple[int, int, object]] = {}  # pidfd -> (pid, exit pipe or -1, run-once container)
        self.statuses: dict[int, int] = {}  # pid -> wait status of a watched init reaped early

    def watch(self, pidfd: int, pid: int, exit_pipe: int, container=None) -> None:
        self.by_pidfd[pidfd] = (pid, exit_pipe, container)

    def ended(self, pidfd: int) -> None:
        pid, exit_pipe, container = self.by_pidfd.pop(pidfd)
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
                    posix.write(exit_pipe, marshal.dumps(_exit_report(status, container)))
                except OSError:
                    pass  # the caller is gone
            posix.close(exit_pipe)
        if container is not None:
            _delete_quietly(container)

    def _reap_orphans(self) -> None:
        """Reap every other child that ended: processes re-parented to us (a subreaper); the
        status of one we watch is kept for when its pidfd is read."""
        watched = {pid for pid, _, _ in self.by_pidfd.values()}
        while True:
            try:
                pid, status = posix.waitpid(-1, posix.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in watched:
                self.statuses[pid] = status


def _exit_report(status: int, container) -> tuple:
    """What the exit pipe says of a run-once container's end (oneshot.ReportedExit): the init's
    wait status, the OOM kills, CPU seconds and peak memory of its cgroup (read before it goes).
    Only a run-once init has an exit pipe, and only a created one is watched: `container` is it."""
    from capsa.api.supervise import usage
    from capsa.process import oom_kill_count

    try:
        oom_kills = oom_kill_count(container.cgroup())
    except (OSError, ValueError):
        oom_kills = 0
    return (status, oom_kills, *usage(container))


def _delete_quietly(container) -> None:
    """Delete an ended run-once container; one already deleted (its caller killed and deleted it
    after closing a run early) or that cannot be is left to the caller's guard."""
    try:
        container.delete(force=True)
    except Exception:  # noqa: BLE001 - nobody to tell: the guard removes what is left when the program ends
        pass


def _serve_one(sock, container_class, agent, template: _Template | None = None) -> tuple[int, int, object] | None:
    """Create the sandbox one request asks for and answer: (its init's pid, 0 if it could not be
    made; the exit pipe to report its end on, -1 for a pooled one; the run-once container, to
    finish when its init ends); None when the caller is gone."""
    try:
        data, ancillary, _, _ = sock.recvmsg(MESSAGE_MAX, _socket.CMSG_SPACE(4 * 4))
    except OSError:
        return None
    if not data:
        return None
    fds = _received_fds(ancillary)
    request = marshal.loads(data)
    if request is None:  # Zygote.settle: answered once every ended run before it is finished
        for fd in fds:
            posix.close(fd)
        return (0, -1, None) if _answer(sock, OK) else None
    container_id, spec, state_root, bundle, settings = request
    if settings is None:
        return _serve_run_once(sock, container_class, (container_id, spec, state_root, bundle), fds)
    for fd in fds:
        posix.close(fd)
    made = _serve_agent(sock, container_class, agent, template, (container_id, spec, state_root, bundle), settings)
    return None if made is None else (made, -1, None)


def _received_fds(ancillary) -> list[int]:
    return [int.from_bytes(payload[i:i + 4], "little") for level, kind, payload in ancillary
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS for i in range(0, len(payload) - 3, 4)]


def _serve_run_once(sock, container_class, request: tuple, fds: list[int]) -> tuple[int, int, object] | None:
    """A run-once container whose init execs at once, with the run's stdio: answer its pid and
    state record; keep the exit pipe and the container, to report the init's end on it and
    delete the container then (_Children.ended)."""
    container_id, spec, state_root, bundle = request
    if len(fds) != 4:
        for fd in fds:
            posix.close(fd)
        return (0, -1, None) if _answer(sock, ERROR + b"internal error: a run needs 4 fds") else None
    *stdio, exit_pipe = fds
    pid = 0
    container = None
    try:
        container = container_class.create(state_root, container_id, bundle, spec=spec,
                                           rootless_cgroups=posix.geteuid() != 0, stdio=tuple(stdio),
                                           exec_at_once=True, cgroup_controllers=run_once_controllers(spec))
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
    return pid, exit_pipe, container


def _answer(sock, answer: bytes, fds: list[int] | None = None) -> bool:
    try:
        sock.sendmsg([answer], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, b"".join(fd.to_bytes(4, "little") for fd in fds))]
                     if fds else [])
    except OSError:
        return False
    return True


def _serve_agent(sock, container_class, agent, template: _Template | None, request: tuple, settings) -> int | None:
    """A pooled sandbox: answer its init's pid (0 if it could not be made) and the pool's socket
    to its agent; None when the caller is gone. With a template, the init only holds the sandbox
    (see capsa.api.holder) and the agent is a fork of the template that joins it; without one,
    the init is the agent."""
    from functools import partial

    container_id, spec, state_root, bundle = request
    pid = 0
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    null = posix.open("/dev/null", posix.O_RDWR | posix.O_CLOEXEC)
    try:
        if template is None:
            stdio, serve = (theirs.fileno(), null, null), partial(agent.serve, agent.Settings(*settings))
        else:
            stdio, serve = (null, null, null), agent.hold
        container = container_class.create(
            state_root, container_id, bundle, spec=spec, rootless_cgroups=posix.geteuid() != 0,
            stdio=stdio, serve=serve, cgroup_controllers=SANDBOX_CGROUP_CONTROLLERS)
        pid = container.pid
        if template is not None:
            _fork_agent(template, agent, container, spec, settings, state_root, theirs.fileno())
        answer, fds = OK + marshal.dumps(pid), [ours.fileno()]
    except Exception as err:  # noqa: BLE001 - the caller raises it as a SandboxStartError
        pid = 0
        answer, fds = ERROR + str(err).encode(errors="replace"), []
    finally:
        theirs.close()
        posix.close(null)
    try:
        return pid if _answer(sock, answer, fds) else None
    finally:
        ours.close()


class _Template:
    """A fork of the zygote made once it has imported everything and before it creates anything,
    that only forks the agents (capsa.api.agent.join) when told to: an agent's pages are then
    shared with a process that stays idle. Forked from the zygote itself, which runs each create
    in Python, an agent would lose to the zygote's next create every page it shares with it (the
    zygote's copy is then its own, the agent's the agent's own: see docs/performance.md)."""

    def __init__(self, agent):
        self.agent = agent
        self._spawn()

    def _spawn(self) -> None:
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
                            self.agent.join(theirs.fileno())
                    except OSError:
                        pass  # one sandbox gets no agent (the pool's wait for it fails); the next ones do
            finally:
                posix._exit(0)
        posix.close(trigger)
        theirs.close()

    def fork_agent(self, job: bytes, control: int, planned: list[int]) -> None:
        """A new agent, that takes the job (and the pool's socket, `control`). A template that is
        gone (killed: its end of the socket and the pipe closed, EPIPE) is made again, once: from
        the zygote as it is now, so its agents share fewer pages with it, but the pool goes on."""
        try:
            self._send(job, [control, *planned])
        except OSError:
            self.jobs.close()
            posix.close(self.trigger)
            self._spawn()
            self._send(job, [control, *planned])

    def _send(self, job: bytes, fds: list[int]) -> None:
        self.jobs.sendmsg([job], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, b"".join(fd.to_bytes(4, "little") for fd in fds))])
        posix.write(self.trigger, b"a")


def _fork_agent(template: _Template, agent, container, spec: dict, settings: tuple, state_root: str,
                control: int) -> None:
    """Have the template fork the agent of the sandbox just made; the sandbox is deleted if not."""
    from capsa import init, plannedinit
    from capsa.errors import CapsaError

    try:
        cgroup = container.cgroup()
        seccomp_filter = init.build_seccomp((spec.get("linux") or {}).get("seccomp"), _seccomp_cache(state_root))
        if seccomp_filter is not None and seccomp_filter.notifies:
            raise CapsaError("a pooled sandbox's seccomp profile cannot notify (SCMP_ACT_NOTIFY)")
        job = agent.job(container.pid, container.id, spec, settings, seccomp_filter,
                        cgroup.self_join_files() if cgroup is not None else [], _namespaces_to_join(spec))
        plan = agent.slot_plan_fd(container.pid, spec, settings, seccomp_filter)
        try:
            template.fork_agent(marshal.dumps(job), control, [] if plan is None else [plan, plannedinit.shared_fd()])
        finally:
            if plan is not None:
                posix.close(plan)
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


def _seccomp_cache(state_root: str) -> str:
    from capsa import posixlite
    from capsa.state import SECCOMP_CACHE

    return posixlite.join(state_root, SECCOMP_CACHE)


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
            self._process = _started_by_a_thread_of_its_own(
                lambda: subprocess.Popen([sys.executable, "-I", "-S", "-c", code], stdin=theirs,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True, cwd="/"))
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

    def settle(self) -> None:
        """Return once the zygote has finished every run-once container whose end it has reported
        (deleted it: it does so after the report, while the caller reads it); at once if it is
        not running (none is started for it)."""
        with self._lock:
            if self._process is None or self._owner != posix.getpid() or self._process.poll() is not None:
                return
            try:
                self._sock.sendmsg([marshal.dumps(None)])
                self._sock.recvmsg(1 << 16)
            except OSError:
                pass  # it ended meanwhile: nothing of it is left to wait for

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


def _started_by_a_thread_of_its_own(start):
    """start() (a Popen) in a thread that then waits for the process to end. The zygote dies with
    its parent by PR_SET_PDEATHSIG, whose "parent" is the thread that forked it: started by a
    thread of the program's that then ends (a worker, a request's handler), it would be killed
    with it, and every run and pooled sandbox under way with it. This thread lives as long as the
    zygote (and reaps it); a daemon, it ends with the program."""
    import threading

    started: list = []
    ready = threading.Event()

    def keeper() -> None:
        try:
            started.append(start())
        except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
            started.append(err)
            return
        finally:
            ready.set()
        started[0].wait()

    threading.Thread(target=keeper, name="capsa-zygote", daemon=True).start()
    ready.wait()
    if isinstance(started[0], BaseException):
        raise started[0]
    return started[0]


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

