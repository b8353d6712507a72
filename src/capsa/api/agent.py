"""The agent of a pooled sandbox (capsa.Pool): a long-lived process of the sandbox that runs each
run of the pool in namespaces of its own.

A pooled sandbox is a container made once (user namespace, cgroup limits, read-only root with
its mounts, seccomp filter compiled, masked /proc): the expensive part. On x86-64 its init, once
set up (capsa.init calls hold() where it would exec), execs capsa.api.holder, a pause loop of a
few bytes that keeps the sandbox's namespaces alive, and the agent is another process: a fork of
the zygote's template (capsa.api.zygote) that joins the sandbox (join(): its cgroup, its user
namespace as its root, its other namespaces but the pid one, a session keyring of its own), with
the pool's end of a socket as its stdin. Why: the init is a fork of the zygote that ran the
whole container set-up in Python, and every page Python touched after that fork was copied for
it (2.3 MiB of pages of its own as the agent); the joined agent copies only what it touches
itself (1.5 MiB; docs/performance.md). Elsewhere the init stays as the agent (serve()), pid 1 of
the container. For each run the agent prepares, ahead of the request, a slot: a process (fork,
unshare, fork) that is pid 1 of a new pid namespace, in new mount, IPC, UTS and network
namespaces, with fresh mounts of its own over the container's: tmpfs /tmp, /work and /dev/shm, a
new mqueue, a new /proc (masked as the spec says), /dev read-only, the process settings applied
(rlimits, no capabilities, no_new_privs, seccomp, default signals). On x86-64 the slot then
execs capsa.api.waiter, a few hundred bytes of machine code from a sealed memfd, which waits in
a process of a few KB (not a fork of Python: an idle sandbox holds its agent's pages and little
more) for the run's request (argv, env, cwd, the program's candidate paths, and its stdio fds
over SCM_RIGHTS), which the pool sends on the socket and the slot reads itself; it takes the
fds, enters the cwd and execs the program (one exec: the waiter is its own trampoline).
Elsewhere the slot waits in Python, and does the same (the cwd resolved inside the root, the
program found on PATH, every other fd closed, exec through the trampoline). Nothing of a run
outlives it: when the slot (pid 1 of its pid namespace) ends, the kernel kills every process of
the namespace; its mounts, IPC objects, sockets and keyring go with the namespaces. Nothing
repeats either: the agent's Python state (its RNG included) never reaches a run, which execs
before running any code of its own.

The run cannot reach the agent: the agent is outside its pid namespace (no pid to signal or
trace; the joined agent is in none of the sandbox's pid namespaces: the runs' are its children,
and it is their subreaper), non-dumpable, and holds the socket only in fds the slot closes
before exec. The agent reports how each run ended (wait4: status, CPU time of the run's
processes, the largest one's peak RSS) on the socket.

Protocol on the socket (SOCK_SEQPACKET, one message each):
    agent -> pool  b"P" + the run's default HOME, the prepared slot's pidfd as SCM_RIGHTS: the
                   pool's timeout kills the slot with it (pidfd_send_signal), and so the run,
                   without a word to the agent
    pool -> slot   the waiter's request (capsa.api.waiter), or b"R" + marshal((argv, env, cwd));
                   the run's stdin, stdout, stderr as SCM_RIGHTS
    agent -> pool  b"D" + marshal((wait status, cpu seconds, peak rss bytes, error)) once the
                   slot has ended; error: why a run could not exec (None when it did), bytes:
                   the waiter's b"\0" + step + errno, or the Python slot's message
The request goes to the slot itself, which reads the socket while it waits: the agent does not
wake up for it.

Everything here runs in the container, after pivot_root (the joined agent: once it has joined
the mount namespace): it uses only modules the zygote (capsa.api.zygote) imported (this one
imports them at load time, but capsa.api.holder, capsa.process and capsa.seccomp, which the
zygote imports).
"""

from __future__ import annotations

import _signal
import _socket
import fcntl  # capsa.api.waiter seals its memfd with it: imported before the agent is in the container
import gc
import marshal
import posix
import resource  # noqa: F401 - posix.wait4 makes its rusage with it: imported before the agent is in the container
import select

from capsa import init, linux, rootfs
from capsa.api import waiter

RUN, PIDFD, DONE = b"R", b"P", b"D"
TAKEN, FAILED = b"T", b"E"
MESSAGE_MAX = 1 << 20  # a request: argv and env, at most ARG_MAX-like
_RUN_NAMESPACES = (linux.CLONE_NEWNS | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS | linux.CLONE_NEWPID
                   | linux.CLONE_NEWNET)
_SCRATCH_FLAGS = linux.MS_NOSUID | linux.MS_NODEV


class Settings:
    """What the pool tells its agents of every run: the scratch size (/tmp, /work), and the
    OCI process (rlimits, capabilities, no_new_privs) and masked paths of the spec."""

    __slots__ = ("scratch", "shm_size", "waiter", "network")

    def __init__(self, scratch: int, shm_size: int = 64 << 20, waiter: bool = False, network: bool = False):
        self.scratch = scratch
        self.shm_size = shm_size
        self.waiter = waiter  # slots exec capsa.api.waiter to wait (the pool sends its requests)
        self.network = network  # runs keep the sandbox's network namespace (the host's: network=True)


class _Setup:
    """What every slot is made with: the settings, the spec's process and masked paths, the
    seccomp filter, the trampoline's and the waiter's sealed fds (None where there are none);
    `plan`: the slot's set-up as a plan (a memfd made by the zygote: slot_plan), None where slots
    are set up in Python."""

    __slots__ = ("settings", "process", "masked", "readonly", "seccomp_filter", "trampoline", "waiter", "plan",
                 "executable")

    def __init__(self, settings, process, masked, readonly, seccomp_filter, trampoline, waiter_fd):
        self.settings, self.process, self.masked, self.readonly = settings, process, masked, readonly
        self.seccomp_filter, self.trampoline, self.waiter = seccomp_filter, trampoline, waiter_fd
        self.plan: int | None = None
        self.executable: int | None = None  # the planned init's sealed memfd (capsa.plannedinit)


def serve(settings: Settings, plan, seccomp_filter, trampoline: int | None) -> None:
    """The agent's loop (in the container's init, once set up): prepare a slot and hand the pool
    its pidfd, wait for the slot's end, report the run it took; until the pool closes the socket."""
    control = 0
    null = posix.open("/dev/null", posix.O_RDWR)
    posix.dup2(null, 1)
    posix.dup2(null, 2)
    posix.close(null)
    linux_spec = plan.init.spec.get("linux") or {}
    setup = _Setup(settings, plan.process, linux_spec.get("maskedPaths") or [], linux_spec.get("readonlyPaths") or [],
                   seccomp_filter, trampoline, waiter.sealed_fd() if settings.waiter else None)
    _serve_runs(setup, control)


def _serve_runs(setup: _Setup, control: int) -> None:
    """Until the pool closes the socket (fd `control`): prepare a slot, hand the pool its pidfd,
    wait for its end, report the run it took."""
    # The run's HOME if its env has none, as capsa.init sets it: sent with each slot's pidfd
    home = init._home_of((setup.process.get("user") or {}).get("uid", 0)).encode()
    sock = _socket.socket(fileno=posix.dup(control))
    # What the zygote had made stays shared with it (copy-on-write): the collector must not walk
    # (and so write to) those objects.
    gc.freeze()
    while True:
        status_r, status_w = posix.pipe()  # close-on-exec: a run never has it after its exec
        try:
            slot = _spawn_slot_retrying(setup, status_w)
        finally:
            posix.close(status_w)
        try:
            report = _wait_for(control, sock, slot, status_r, home)
        finally:
            posix.close(status_r)
        if report is None:
            return  # the pool is gone: the init's end kills whatever is left
        _send(sock, DONE + marshal.dumps(report))


# -- the agent as a process of its own (x86-64: holder.supported()) ----------------------------------
def hold(plan, seccomp_filter, trampoline) -> None:
    """The sandbox's init once set up, when its agent is another process (join): exec the holder
    (capsa.api.holder), which only keeps the sandbox's namespaces alive; its stdio the
    container's /dev/null, no other fd."""
    from capsa.api import holder  # imported by the zygote: no file is read here
    program = holder.sealed_fd()
    null = posix.open("/dev/null", posix.O_RDWR)
    for target in (0, 1, 2):
        posix.dup2(null, target)  # inheritable
    linux.close_range_cloexec(3)
    posix.execve(program, ["capsa-hold"], {})


def job(pid: int, container_id: str, spec: dict, settings: tuple, seccomp_filter, cgroup_files: list[str],
        namespace_files: list[str]) -> tuple:
    """What the zygote tells the agent it forks (join) of the sandbox to serve: the init's pid, the
    container's id (its session keyring's name), the settings, the spec's process, masked and
    read-only paths, the seccomp filter as its BPF program and kernel flags (None: no filter),
    the cgroup files to join, and the namespaces (files of /proc/<pid>/ns) to join, user first
    and mount last. The filter goes as built: the profile, parsed, checked and hashed again in
    the agent, cost it 0.3 MB of pages of its own."""
    linux_spec = spec.get("linux") or {}
    program = None if seccomp_filter is None else (seccomp_filter.program, seccomp_filter.flags)
    return (pid, container_id, settings, spec["process"], linux_spec.get("maskedPaths") or [],
            linux_spec.get("readonlyPaths") or [], program, cgroup_files, namespace_files)


def join(jobs: int) -> None:
    """The agent as a fork of the zygote's template (capsa.api.zygote), not of the sandbox's init:
    take a job on the socket `jobs` (its pool's socket as SCM_RIGHTS), join the sandbox (its
    cgroup, its namespaces but the pid one, a session keyring of its own), serve its runs; never
    returns. Joined, it holds pages of its own only for what it does itself, which is little
    (see docs/performance.md). Whatever fails ends it: the pool sees its socket close."""
    # Imported by the zygote (not at this module's load: the calling program imports it too).
    from capsa import process
    from capsa.seccomp import Filter

    try:
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)  # the template's is SIG_IGN: slots are waited for
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        # Outside the sandbox's pid namespace, each slot's intermediate parent would leave it to
        # the zygote (a subreaper) when it exits: the agent is the slots' subreaper instead.
        process.become_subreaper()
        job, control, planned = _take_job(jobs)
        posix.dup2(control, 0)
        posix.close(control)
        # The slots' plan and the planned init at fixed numbers above the fds a slot is given
        # (0 .. SLOT_WAITER_FD), so that the slot's dup2s never land on them.
        planned = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _PLANNED_FDS + 2) for fd in planned]
        for target, fd in enumerate(planned, start=_PLANNED_FDS):
            posix.dup2(fd, target, inheritable=False)
        posix.closerange(3, _PLANNED_FDS)  # the zygote's fds, the jobs socket: none may reach a run
        posix.closerange(_PLANNED_FDS + len(planned), 1 << 20)
        pid, container_id, settings, the_process, masked, readonly, program, cgroup_files, namespaces = job
        init_pidfd = posix.pidfd_open(pid)
        _join_sandbox(pid, init_pidfd, container_id, cgroup_files, namespaces)
        setup = _Setup(Settings(*settings), the_process, masked, readonly,
                       None if program is None else Filter.of_program(*program), init.trampoline_fd(),
                       waiter.sealed_fd() if settings[2] else None)
        if planned:
            setup.plan, setup.executable = _PLANNED_FDS, _PLANNED_FDS + 1
    except BaseException:  # noqa: BLE001 - the pool sees the socket close: "its agent did not start"
        posix._exit(1)
    try:
        _serve_runs(setup, 0)
    finally:
        try:
            _signal.pidfd_send_signal(init_pidfd, 9)  # the sandbox ends with its agent, as when it was the init
        finally:
            posix._exit(0)


def _join_sandbox(pid: int, init_pidfd: int, container_id: str, cgroup_files: list[str], namespaces: list[str]) -> None:
    """Into the sandbox of the init `pid`: its cgroup (its files written from the host's side), its
    namespaces (user first, then root in it as the init is: what the slots mount is its root's;
    mount last, which makes the sandbox's root ours), a session keyring of our own; stdio 1 and 2
    the container's /dev/null."""
    for path in cgroup_files:
        fd = posix.open(path, posix.O_WRONLY | posix.O_CLOEXEC)
        try:
            posix.write(fd, b"0")
        finally:
            posix.close(fd)
    fds = [posix.open(f"/proc/{pid}/ns/{name}", posix.O_RDONLY | posix.O_CLOEXEC) for name in namespaces]
    try:
        # Opened by pid: they are the init's only if it is still alive now (its pidfd not readable).
        if select.select([init_pidfd], [], [], 0)[0]:
            raise OSError("the sandbox's init is gone")
        for name, fd in zip(namespaces, fds, strict=True):
            linux.setns(fd)
            if name == "user":
                posix.setresgid(0, 0, 0)
                posix.setresuid(0, 0, 0)
    finally:
        for fd in fds:
            posix.close(fd)
    posix.chdir("/")
    posix.setsid()
    init._new_session_keyring(container_id)
    null = posix.open("/dev/null", posix.O_RDWR)  # the container's: the host's go with the dup2
    posix.dup2(null, 1)
    posix.dup2(null, 2)
    posix.close(null)


def _take_job(jobs: int) -> tuple[tuple, int, list[int]]:
    """The job, the pool's socket, and the slots' plan with the planned init's program where the
    zygote made them (else no fd)."""
    sock = _socket.socket(fileno=posix.dup(jobs))
    try:
        data, ancillary, _, _ = sock.recvmsg(MESSAGE_MAX, _socket.CMSG_SPACE(3 * 4))
    finally:
        sock.close()
    fds = [int.from_bytes(payload[i:i + 4], "little") for level, kind, payload in ancillary
           if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS for i in range(0, len(payload) - 3, 4)]
    if len(fds) not in (1, 3) or not data:
        raise OSError("no job")
    return marshal.loads(data), fds[0], fds[1:]


def _spawn_slot_retrying(*arguments) -> int:
    """_spawn_slot, tried again for a second while the kernel refuses the fork (EAGAIN: the
    pids limit or the host's, while what the last run left is being reaped)."""
    for _ in range(20):
        try:
            return _spawn_slot(*arguments)
        except BlockingIOError:
            select.select([], [], [], 0.05)
    return _spawn_slot(*arguments)


def _spawn_slot(setup: _Setup, status_w: int) -> int:
    """The next run's process: pid 1 of new namespaces, set up, waiting for its request; a
    child of ours. Planned (see slot_plan) where it can be, else in Python."""
    if setup.plan is not None:
        pid = _spawn_planned_slot(setup, status_w)
        if pid is not None:
            return pid
    return _spawn_python_slot(setup, status_w)


def _spawn_planned_slot(setup: _Setup, status_w: int) -> int | None:
    """The slot as a child sharing our memory until it execs the planned init (capsa.spawn),
    born in the run's namespaces, which carries out the slot's plan and execs the waiter; None
    if the kernel refuses the clone."""
    from capsa import plannedinit, spawn

    go_r, go_w = posix.pipe()
    copies: list[int] = []
    try:
        fds = [0, 1, 2, setup.plan, go_r, status_w, setup.waiter]
        sources, copies = spawn.sources_above(fds, len(fds))
        flags = _RUN_NAMESPACES & ~linux.CLONE_NEWNET if setup.settings.network else _RUN_NAMESPACES
        try:
            pid = spawn.spawner().spawn(flags, None, sources[plannedinit.CHANNEL_FD], sources, setup.executable, go_w)
        except OSError:
            return None
        posix.write(go_w, b"m")  # root already (the agent's user namespace): nothing to wait for
        return pid
    finally:
        for fd in (go_r, go_w, *copies):
            posix.close(fd)


def _spawn_python_slot(setup: _Setup, status_w: int) -> int:
    """The slot made in Python (fork, unshare, fork: its intermediate parent exits at once, so the
    agent, the container's pid 1, inherits it). Raises if it cannot be made (the agent then ends:
    the pool replaces it)."""
    pid_r, pid_w = posix.pipe()
    middle = posix.fork()
    if middle == 0:
        try:
            posix.close(pid_r)
            # the pid namespace is the next child's
            linux.unshare(_RUN_NAMESPACES & ~linux.CLONE_NEWNET if setup.settings.network else _RUN_NAMESPACES)
            pid = posix.fork()
            if pid == 0:
                posix.close(pid_w)
                _slot(setup, status_w)
            posix.write(pid_w, pid.to_bytes(4, "little"))
        finally:
            posix._exit(0)
    posix.close(pid_w)
    try:
        posix.waitpid(middle, 0)
        data = posix.read(pid_r, 4)
    finally:
        posix.close(pid_r)
    if len(data) != 4:
        raise OSError("cannot make the namespaces of a run")
    return int.from_bytes(data, "little")


def _wait_for(control: int, sock, slot: int, status_r: int, home: bytes):
    """Hand the pool the slot's pidfd (its timeout kills the slot, and so the run, with it), wait
    for the slot's end; the report of the run it took, or None if it took none (the pool closed
    the socket, which the slot reads) or the pool is gone."""
    pidfd = posix.pidfd_open(slot)
    try:
        sock.sendmsg([PIDFD + home], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, pidfd.to_bytes(4, "little"))])
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(control, select.POLLRDHUP)  # not POLLIN: the slot reads the requests
        while True:
            events = dict(poller.poll())
            if pidfd in events:
                break
            if control in events:  # the pool is gone (the calling program died)
                _kill(slot)
    except OSError:
        _kill(slot)
    finally:
        posix.close(pidfd)
    _, status, usage = posix.wait4(slot, 0)
    said = posix.read(status_r, MESSAGE_MAX)
    if said[:1] != TAKEN:
        return None
    return (status, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, said[2:] if said[1:2] == FAILED else None)


def _kill(pid: int) -> None:
    try:
        posix.kill(pid, 9)  # pid 1 of its namespace: the kernel kills every process in it
    except ProcessLookupError:
        pass


def _send(sock, data: bytes) -> None:
    try:
        sock.send(data)
    except OSError:
        pass  # the pool is gone: the slot's end says so


# -- the slot: pid 1 of the run's namespaces -------------------------------------------------------
def _slot(setup: _Setup, status_w: int) -> None:
    """Set up the run's mounts, become the run's process but for its exec (rlimits, no
    capabilities, no_new_privs, seccomp, default signals), wait for the request, exec (never
    returns). All the privileged work is done before the request: once the request is read, only
    the cwd, the environment, the stdio and the exec are left. Where there is a waiter
    (capsa.api.waiter) the slot execs it to wait and do those."""
    process = setup.process
    try:
        _fresh_mounts(setup.settings, setup.masked, setup.readonly)
        if not setup.settings.network:
            linux.loopback_up()
        init._apply_rlimits(process.get("rlimits") or [])
        init._become_process(process, None, setup.seccomp_filter)
        if setup.waiter is not None:
            _exec_waiter(setup.waiter, status_w)
        argv, env, cwd, fds = _receive(0)
    except BaseException:  # noqa: BLE001 - no run taken: the agent sees the slot end
        posix._exit(1)
    posix.write(status_w, TAKEN)
    try:
        for target, fd in enumerate(fds):
            posix.dup2(fd, target)  # over the socket (0) too: the run never holds it
        for fd in set(fds):
            if fd > 2:
                posix.close(fd)
        run_process = dict(process, args=argv, env=env, cwd=cwd, rlimits=None)
        init.enter_cwd(cwd)
        environment = init._environment(run_process, None)
        executable = init.find_executable(argv[0], environment)
        linux.close_range_cloexec(3)
        init.exec_program(executable, argv, environment, setup.trampoline)
    except BaseException as err:  # noqa: BLE001 - the pool reports it as a start error
        try:
            posix.write(status_w, FAILED + init_message(err).encode())
        finally:
            posix._exit(127)


# The slot's fds: 0 the pool's socket, 1-2 the agent's (/dev/null), 3 the plan, 4 the channel (the
# spawner's "m"), then the status pipe and the waiter's sealed memfd.
SLOT_STATUS_FD, SLOT_WAITER_FD = 5, 6
_PLANNED_FDS = 7  # the agent's: the slots' plan, then the planned init's program
_ENOENT = 2


def slot_plan_fd(init_pid: int, spec: dict, settings: tuple, seccomp_filter) -> int | None:
    """The slots' plan of the sandbox whose init is `init_pid` (its /dev looked at through
    /proc/<pid>/root), in a memfd, made by the zygote: what the agent would spend ~0.5 MB of
    pages of its own building. None where slots are set up in Python."""
    from capsa import plannedinit

    settings = Settings(*settings)
    if not settings.waiter or not plannedinit.enabled():
        return None
    linux_spec = spec.get("linux") or {}
    plan = slot_plan(spec["process"], linux_spec.get("maskedPaths") or [], linux_spec.get("readonlyPaths") or [],
                     seccomp_filter, settings.scratch, settings.shm_size, settings.network,
                     rootfs._mount_flags_of(f"/proc/{init_pid}/root/dev"))
    if plan is None:
        return None
    fd = posix.memfd_create("capsa-slot-plan", posix.MFD_CLOEXEC)
    posix.write(fd, plan)
    return fd


def slot_plan(process: dict, masked: list[str], readonly: list[str], seccomp_filter, scratch: int, shm_size: int,
               network: bool, dev_flags: int) -> bytes | None:
    """_slot with its _fresh_mounts, for a slot that execs the waiter, as a plan (capsa.plannedinit):
    run by a child of the agent born in the run's namespaces (capsa.spawn), in the sandbox's
    root. `dev_flags`: the MS_* flags /dev has (its read-only remount keeps them). None where the
    Python slot must do it (a notifying filter)."""
    from capsa import plannedinit as p

    if seccomp_filter is not None and seccomp_filter.notifies:
        return None
    b = p.Builder({0, 1, 2, p.CHANNEL_FD, SLOT_STATUS_FD, SLOT_WAITER_FD})
    b.call("prctl", linux.PR_SET_DUMPABLE, 0, why="prctl(PR_SET_DUMPABLE)")
    b.call("close_range", SLOT_WAITER_FD + 1, 0xFFFFFFFF, 0, why="close_range")
    # agent._fresh_mounts
    flags = _SCRATCH_FLAGS
    b.call("mount", 0, b.string("/"), 0, linux.MS_REC | linux.MS_PRIVATE, 0, why="mount /")
    for target in ("/tmp", "/work"):
        b.call("mount", b.string("tmpfs"), b.string(target), b.string("tmpfs"), flags,
               b.string(f"mode=1777,size={scratch}"), why=f"mount {target}")
    b.call("mount", 0, b.string("/dev"), 0, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | dev_flags, 0,
           why="mount /dev read-only")
    b.call("mount", b.string("shm"), b.string("/dev/shm"), b.string("tmpfs"), flags | linux.MS_NOEXEC,
           b.string(f"mode=1777,size={shm_size}"), why="mount /dev/shm", soft=_ENOENT)
    b.call("mount", b.string("mqueue"), b.string("/dev/mqueue"), b.string("mqueue"), flags | linux.MS_NOEXEC, 0,
           why="mount /dev/mqueue", soft=_ENOENT)
    b.call("mount", b.string("proc"), b.string("/proc"), b.string("proc"), flags | linux.MS_NOEXEC, 0, why="mount /proc")
    root = b.open("openat", linux.AT_FDCWD, b.string("/"), posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC, why="open /")
    dev_null = p.open_dev_null(b)
    proc = p.open_procfs_root(b, root)
    for path in masked:
        p.mask(b, root, proc, path, dev_null)
    for path in readonly:
        p.read_only(b, root, proc, path)
    for fd in (proc, dev_null, root):
        b.close(fd)
    # agent._slot
    if not network:
        p.loopback_up(b)
    p.set_rlimits(b, process)
    # init._become_process with the filter: loaded before the drop without no_new_privs, else
    # right after it; then the umask and the signals.
    no_new_privs = bool(process.get("noNewPrivileges"))
    if seccomp_filter is not None and not no_new_privs:
        p.load_seccomp(b, seccomp_filter)
    p.become_user(b, process)
    if no_new_privs:
        b.call("prctl", linux.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, why="prctl(PR_SET_NO_NEW_PRIVS)")
        if seccomp_filter is not None:
            p.load_seccomp(b, seccomp_filter)
    umask = (process.get("user") or {}).get("umask")
    b.call("umask", 0o022 if umask is None else umask, why="umask")
    p.reset_signals(b, every=True)  # planned in the zygote, run by a child of the agent: whatever each has
    # agent._exec_waiter: the socket at 0, the status pipe at 3, nothing else
    b.call("dup3", SLOT_STATUS_FD, 3, 0, why="dup3")
    b.close(SLOT_STATUS_FD)
    b.call("close_range", 4, 0xFFFFFFFF, 4, why="close_range")  # CLOSE_RANGE_CLOEXEC: the waiter's memfd too
    argv = p.pointers(b, ["capsa-slot"])
    b.call("execveat", SLOT_WAITER_FD, b.string(""), argv, p.pointers(b, []), linux.AT_EMPTY_PATH, why="exec:")
    b.fail("exec:")
    return b.encode()



def _exec_waiter(waiter_fd: int, status_w: int) -> None:
    """Exec the waiter (see capsa.api.waiter): the socket at fd 0, the status pipe at fd 3, no
    other fd."""
    if waiter_fd == 3:
        waiter_fd = posix.dup(waiter_fd)  # close-on-exec, as the one it copies
    posix.set_inheritable(0, True)
    if status_w == 3:
        posix.set_inheritable(3, True)
    else:
        posix.dup2(status_w, 3)  # inheritable
    linux.close_range_cloexec(4)
    posix.execve(waiter_fd, ["capsa-slot"], {})


def _receive(control: int) -> tuple:
    """The run's request: argv, env (NAME=value strings), cwd and its three stdio fds; EOF (the
    pool closed the socket) ends the slot."""
    sock = _socket.socket(fileno=posix.dup(control))
    try:
        while True:
            data, ancillary, _, _ = sock.recvmsg(MESSAGE_MAX, _socket.CMSG_SPACE(3 * 4))
            fds = []
            for level, kind, payload in ancillary:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    fds += [int.from_bytes(payload[i:i + 4], "little") for i in range(0, len(payload) - 3, 4)]
            if not data:
                posix._exit(0)  # the pool closed the socket
            if data[:1] == RUN and len(fds) == 3:
                break
            for fd in fds:
                posix.close(fd)
    finally:
        sock.close()
    argv, env, cwd = marshal.loads(data[1:])
    return argv, env, cwd, fds


def _fresh_mounts(settings: Settings, masked: list, readonly: list) -> None:
    """The run's own /tmp, /work, /dev/shm, mqueue and /proc over the container's; /dev read-only
    (a run could otherwise leave a file there for the next)."""
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)  # nothing of ours propagates back
    scratch = f"mode=1777,size={settings.scratch}"
    linux.mount("tmpfs", "/tmp", "tmpfs", _SCRATCH_FLAGS, scratch)
    linux.mount("tmpfs", "/work", "tmpfs", _SCRATCH_FLAGS, scratch)
    linux.mount(None, "/dev", None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | rootfs._mount_flags_of("/dev"))
    _mount_if_there("shm", "/dev/shm", "tmpfs", _SCRATCH_FLAGS | linux.MS_NOEXEC, f"mode=1777,size={settings.shm_size}")
    _mount_if_there("mqueue", "/dev/mqueue", "mqueue", _SCRATCH_FLAGS | linux.MS_NOEXEC, None)
    linux.mount("proc", "/proc", "proc", _SCRATCH_FLAGS | linux.MS_NOEXEC, None)
    root = rootfs.Rootfs("/")
    dev_null = posix.open("/dev/null", posix.O_PATH | posix.O_CLOEXEC)
    proc = rootfs.open_procfs_root(root, "the run's /proc")
    try:
        rootfs.mask_paths(root, masked, dev_null, proc)
        rootfs.readonly_paths(root, readonly, proc)
    finally:
        for fd in (proc, dev_null):
            posix.close(fd)
        root.close()


def _mount_if_there(source: str, target: str, fstype: str, flags: int, data: str | None) -> None:
    try:
        linux.mount(source, target, fstype, flags, data)
    except FileNotFoundError:
        pass  # a spec without it: the run has none either


def init_message(err: BaseException) -> str:
    """A failure's message as capsa.init reports it (a CapsaError's text, an OSError's reason)."""
    if isinstance(err, OSError):
        return f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
    return str(err) or type(err).__name__
