"""Starting a container's init process: the parent's side of create.

    capsa create (parent)          child                         init (pid 1 of the container)
    ---------------------          -----                         -----------------------------
    mkdir cgroups
    fork ───────────────────────▶  joins the cgroups ("0" > tasks)
                                   unshare(user) ─"userns"─▶ write uid/gid maps ─"ok"─▶
                                   setns(paths), unshare(rest)
                                   fork ──────────────────────▶  (child exits, init is reparented)
    ◀──────────────"pid N"───────  (reports the init's host pid)
    cgroup limits, "go" ───────────────────────────────────────▶ mounts, devices, console
    ◀────────────"hooks"──────────────────────────────────────── (if prestart/createRuntime hooks)
    run hooks, "ok" ───────────────────────────────────────────▶ createContainer hooks, pivot_root,
                                                                 sysctl, rlimits, cwd, lookup of args[0]
    ◀────────────"ready"─────────────────────────────────────── accept() on start.sock ... exec
"""

from __future__ import annotations

import posix

from capsa import hooks, linux, posixlite
from capsa.errors import CapsaError, ContainerStartError
from capsa.init import InitConfig
from capsa.procfs import write_file
from capsa.syncpipe import Channel

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

    from capsa.cgroups import Cgroup

NAMESPACE_FLAGS = {
    "pid": linux.CLONE_NEWPID,
    "network": linux.CLONE_NEWNET,
    "mount": linux.CLONE_NEWNS,
    "ipc": linux.CLONE_NEWIPC,
    "uts": linux.CLONE_NEWUTS,
    "user": linux.CLONE_NEWUSER,
    "cgroup": linux.CLONE_NEWCGROUP,
    "time": linux.CLONE_NEWTIME,
}
# The /proc/PID/ns file of each namespace type.
NAMESPACE_FILES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
                   "user": "user", "cgroup": "cgroup", "time": "time"}


class LaunchOptions:
    __slots__ = ("console_socket", "console_fd", "no_pivot", "no_new_keyring", "preserve_fds", "state_dir", "container_id", "bundle", "state",
                 "rootless_cgroups", "warn", "seccomp_cache")

    def __init__(self, **values: Any):
        for name in self.__slots__:
            setattr(self, name, values.get(name))


def spawn_init(spec: dict[str, Any], rootfs_path: str, options: LaunchOptions, listen_fd: int, cgroup: Cgroup | None) -> int:
    """Fork the container's init and drive it until it waits for `start`; return its host pid.
    The cgroup is made already (Container.create), unless a manager makes it with the child in
    it (placed_by_manager: systemd).

    `listen_fd` (the start socket) stays the caller's to close, and must be above the inherited
    fds: it is, when the caller checked them (check_inherited_fds) before opening anything.
    On failure the init is killed and a CapsaError says what went wrong.
    """
    namespaces = spec.get("linux", {}).get("namespaces") or []
    new = {ns["type"] for ns in namespaces if not ns.get("path")}
    keep = check_inherited_fds(options.preserve_fds)
    if listen_fd < 3 + keep:
        raise ContainerStartError(f"internal error: the start socket (fd {listen_fd}) is among the fds the container inherits")
    console_fd = _connect_console(spec["process"].get("terminal"), options.console_socket, options.console_fd)
    seccomp_fd = _connect_seccomp_listener((spec.get("linux") or {}).get("seccomp"), console_fd)
    trees = _idmapped_trees(spec, console_fd, seccomp_fd)
    parent_fd, child_fd = _socketpair()
    internal = _move_above([child_fd, console_fd, seccomp_fd, *trees.values()], 3 + keep)
    child_fd, console_fd, seccomp_fd = internal[:3]
    trees = dict(zip(trees, internal[3:], strict=True))
    config = InitConfig(
        spec=spec, rootfs=rootfs_path, bundle=options.bundle, container_id=options.container_id,
        sync_fd=child_fd, listen_fd=listen_fd, console_fd=console_fd, keep_fds=keep,
        no_pivot=options.no_pivot, no_new_keyring=options.no_new_keyring, new_namespaces=new, in_userns="user" in _all_types(namespaces),
        state=options.state, cgroups=_cgroup_sources(spec, cgroup), seccomp_listener_fd=seccomp_fd,
        seccomp_cache=options.seccomp_cache, mount_trees=trees,
    )
    managed = cgroup is not None and cgroup.placed_by_manager
    # Under systemd the cgroup is made with the child in it: the child is forked here and waits.
    child, config.cgroup_join = (posix.fork(), []) if managed else _fork_into(cgroup)
    config.cgroup_wait = managed
    if child == 0:
        # Drop every fd the child does not need, above all the state directory's flock, which
        # would otherwise stay held for the whole life of the container.
        _close_fds_except(set(range(3 + keep)) | {child_fd, listen_fd, console_fd, seccomp_fd, *trees.values()})
        _child(config, namespaces)
    posix.close(child_fd)
    _close_if_open(console_fd, seccomp_fd, *trees.values())
    channel = Channel(parent_fd)
    try:
        if managed:
            cgroup.create_with(child, (spec.get("linux") or {}).get("resources"))
            channel.send("cgroup")
        init_pid = _drive(channel, spec, child, options, cgroup)
    except BaseException:
        init_pid = options.state.get("pid") or 0
        if init_pid:
            kill_init(init_pid)  # reaps it too when it is the child itself
        if init_pid != child:
            _kill_quietly(child)
            _reap(child)
        raise
    finally:
        channel.close()
    if init_pid != child:
        _reap(child)  # the intermediate child, which exited once it had forked the init
    return init_pid


def _drive(channel: Channel, spec: dict[str, Any], child: int, options: LaunchOptions, cgroup: Cgroup | None) -> int:
    init_pid = 0
    while True:
        kind, payload = channel.receive()
        if kind == "userns":
            from capsa import idmap

            idmap.write_mappings(child, spec["linux"])
            channel.send("ok")
        elif kind == "pid":
            init_pid = int(payload)
            options.state["pid"] = init_pid
            if cgroup is not None:
                # The init is already in its cgroup (the child joined it first thing); the limits
                # are in place before "go", so no user code ever runs outside them.
                linux_spec = spec.get("linux") or {}
                cgroup.apply(linux_spec.get("resources"), linux_spec.get("devices"), rootless=bool(options.rootless_cgroups),
                             warn=options.warn)
            if "oomScoreAdj" in spec["process"]:
                _set_oom_score_adj(init_pid, spec["process"]["oomScoreAdj"])
            # runc gives the seccomp listener the state "creating" and the init's pid.
            channel.send("go", _listener_state((spec.get("linux") or {}).get("seccomp"), init_pid,
                                               dict(options.state, pid=init_pid, status="creating")))
        elif kind == "hooks":
            hooks.run_hooks(spec, "prestart", options.state)
            hooks.run_hooks(spec, "createRuntime", options.state)
            channel.send("ok")
        elif kind == "mountfd":
            _send_detached_source(channel, spec, payload)
        elif kind == "ready":
            return init_pid
        elif kind == "error":
            raise ContainerStartError(payload)
        else:
            raise ContainerStartError("container init exited before it was ready")


def _send_detached_source(channel: Channel, spec: dict[str, Any], index: str) -> None:
    """The init (mapped root of a user namespace) cannot reach the source of bind mounts[index]:
    as runc and crun, the runtime opens it with the host's credentials, as a detached mount."""
    from capsa.rootfs import open_detached_source

    mounts = spec.get("mounts") or []
    try:
        fd = open_detached_source(mounts[int(index)])
    except (ValueError, IndexError):
        channel.send("nofd", f"no mount {index!r}")
        return
    except OSError as err:
        channel.send("nofd", f"open_tree: {err.strerror or err}")
        return
    try:
        channel.send_fd("mountfd", fd)
    finally:
        posix.close(fd)


def _connect_seccomp_listener(seccomp: dict[str, Any] | None, console_fd: int) -> int:
    """The socket to seccomp's listenerPath (-1 without SCMP_ACT_NOTIFY), connected here, on the
    host side: the path resolves as the caller sees it, whatever the container's namespaces."""
    if not seccomp:
        return -1
    from capsa.seccomp import connect_listener

    try:
        return connect_listener(seccomp)
    except BaseException:
        _close_if_open(console_fd)
        raise


def _listener_state(seccomp: dict[str, Any] | None, pid: int, state: dict[str, Any]) -> str:
    """The payload of "go": the ContainerProcessState for the seccomp listener, or nothing."""
    if not seccomp:
        return ""
    from capsa.seccomp import process_state, uses_notify

    return process_state(seccomp, pid, state) if uses_notify(seccomp) else ""


def _idmapped_trees(spec: dict[str, Any], *close_on_failure: int) -> dict[int, int]:
    """The detached trees of the idmapped mounts, made here, on the host's side (capsa.idmapped)."""
    from capsa.mountopts import is_idmapped

    if not any(is_idmapped(mount) for mount in spec.get("mounts") or []):
        return {}
    from capsa import idmapped

    try:
        return idmapped.prepare(spec)
    except BaseException:
        _close_if_open(*close_on_failure)
        raise


def _close_if_open(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            posix.close(fd)


def _set_oom_score_adj(pid: int, value: int) -> None:
    try:
        write_file(f"/proc/{pid}/oom_score_adj", str(value))
    except PermissionError:
        raise ContainerStartError(
            f"process.oomScoreAdj: cannot set {value}: permission denied (lowering it below the "
            "caller's own needs CAP_SYS_RESOURCE, which the caller lacks: a rootless caller, or root on a host "
            "that withholds it)"
        ) from None


def kill_init(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL an init that will never be started, and wait until it is dead (a zombie at most),
    so that its cgroup can be removed; reaped if it is our child (`capsa run` is a subreaper)."""
    import time

    from capsa.procfs import is_alive

    _kill_quietly(pid)
    deadline = time.monotonic() + timeout
    while is_alive(pid, None) and time.monotonic() < deadline:
        time.sleep(0.002)
    try:
        posix.waitpid(pid, posix.WNOHANG)
    except ChildProcessError:
        pass


def _reap(pid: int) -> None:
    try:
        posix.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _kill_quietly(pid: int) -> None:
    if pid > 0:
        try:
            posix.kill(pid, 9)
        except ProcessLookupError:
            pass


def _cgroup_sources(spec: dict[str, Any], cgroup: Cgroup | None) -> dict[str, str]:
    """Directory name under /sys/fs/cgroup -> the container's cgroup directory in that hierarchy:
    what a cgroup mount in config.json shows the container.

    Where the container has no cgroup of its own (rootless: one it could not create), it lives
    in the caller's, and that is what it is shown, as runc does.
    """
    if not any(m.get("type") in ("cgroup", "cgroup2") for m in spec.get("mounts") or []):
        return {}
    from capsa.cgroups import CGROUP_ROOT, hierarchies, own_cgroups

    paths = cgroup.paths if cgroup is not None else {}
    found = hierarchies()
    own = own_cgroups() if set(found.values()) - set(paths) else {}
    sources = {}
    for point, controllers in found.items():
        if not point.startswith(CGROUP_ROOT):
            continue
        if controllers in paths:
            sources[point[len(CGROUP_ROOT):].lstrip("/")] = paths[controllers]
            continue
        key = next((c for c in controllers.split(",") if c in own), "" if not controllers else None)
        if key is not None and key in own:
            sources[point[len(CGROUP_ROOT):].lstrip("/")] = point + own[key].rstrip("/")
    return sources


def _close_fds_except(keep: set[int]) -> None:
    for name in posix.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                posix.close(fd)
            except OSError:
                pass


def _socketpair() -> tuple[int, int]:
    import _socket

    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    return a.detach(), b.detach()


def _move_above(fds: list[int], lowest: int) -> list[int]:
    """Fds of ours (closed here when moved) out of the range the container inherits (3 .. 3+preserved-1):
    a second guard, check_inherited_fds keeps them out already."""
    import fcntl

    moved = []
    for fd in fds:
        if 0 <= fd < lowest:
            new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
            posix.close(fd)
            fd = new
        moved.append(fd)
    return moved


def check_inherited_fds(preserve_fds: int | None) -> int:
    """How many fds after stdio the container inherits: the socket activation fds (LISTEN_FDS),
    then --preserve-fds; each must be open, as runc requires of the preserved ones.

    Call it before opening anything that outlives the call: the kernel gives a new fd the lowest
    free number, so an fd of capsa's (the state directory's lock, the start socket) would fill a
    hole in the range and reach the container (the CVE-2024-21626 pattern). With every fd of the
    range open, and never closed by capsa, every fd capsa opens is numbered above it.
    """
    if preserve_fds and preserve_fds < 0:
        raise CapsaError("--preserve-fds must not be negative")
    listen = posixlite.getenv("LISTEN_FDS", "")
    listen_count = int(listen) if listen.isdigit() else 0
    count = listen_count + (preserve_fds or 0)
    for fd in range(3, 3 + count):
        try:
            posix.fstat(fd)
        except OSError:
            if fd < 3 + listen_count:
                what, first, last = f"LISTEN_FDS={listen_count}", 3, 2 + listen_count
            else:
                what, first, last = f"--preserve-fds {preserve_fds}", 3 + listen_count, 2 + count
            passed = f"fd {first}" if first == last else f"fds {first} to {last}"
            raise CapsaError(f"{what}: fd {fd} is not open (the container is to get {passed}; each must be open)") from None
    return count


def _connect_console(terminal: bool, console_socket: str | None, console_fd: int | None) -> int:
    if console_fd is not None:
        return posix.dup(console_fd) if terminal else -1
    if not terminal:
        if console_socket:
            raise CapsaError("--console-socket given but process.terminal is false")
        return -1
    if not console_socket:
        raise CapsaError("process.terminal is true: a --console-socket is needed to receive the terminal")
    from capsa import console

    try:
        return console.connect(console_socket)
    except OSError as err:
        raise CapsaError(f"cannot connect to console socket {console_socket}: {err.strerror or err}") from None


def _all_types(namespaces: list[dict[str, Any]]) -> set[str]:
    return {ns["type"] for ns in namespaces}


# -- the child's side ---------------------------------------------------------------------------
def _child(config: InitConfig, namespaces: list[dict[str, Any]]) -> None:
    """Enter the namespaces, fork the init if a pid or time namespace needs it, then run it."""
    from capsa import init

    channel = Channel(config.sync_fd)
    try:
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        init.load_modules(config.spec["process"], config.spec)  # the host's files are out of reach later
        if config.cgroup_wait:
            channel.expect("cgroup")  # systemd has moved this process into the container's scope
        # Into the container's cgroup while still in the host's namespaces: the init forked
        # below inherits it.
        _join_cgroup(config.cgroup_join)
        _enter_namespaces(namespaces, channel, config.spec.get("linux", {}).get("timeOffsets"))
        if any(ns["type"] in ("pid", "time") for ns in namespaces):
            pid = posix.fork()
            if pid:
                channel.send("pid", str(pid))
                posix._exit(0)
        else:
            channel.send("pid", str(posix.getpid()))
    except BaseException as err:  # noqa: BLE001
        init._report(channel, err)
        posix._exit(1)
    init.run(config, channel)


# What the child and the init import as they need it. A threaded caller imports them before it
# forks: a module that another thread is importing at the instant of the fork stays locked (its
# import lock held) in the child, where no thread will ever finish importing it.
_CHILD_IMPORTS = ("fcntl", "_sha256", "subprocess", "capsa.console", "capsa.lsm", "capsa.rootless", "capsa.seccomp",
                  "capsa.trampoline")


def _fork_into(cgroup: Cgroup | None) -> tuple[int, list[str]]:
    """fork(), the child born in the cgroup's cgroup2 directory where there is one; returns the
    pid (0 in the child) and the files the child still writes "0" to, to join the rest.

    A caller with other threads (a Python program; the capsa command has one) gets glibc's fork()
    (linux.fork_into_cgroup says why) and imports the child's modules first."""
    if linux.thread_count() > 1:
        for name in _CHILD_IMPORTS:
            __import__(name)
    if cgroup is None:
        return posix.fork(), []
    directory = cgroup.cgroup2_dir()
    if directory is not None:
        fd = posix.open(directory, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
        try:
            child = linux.fork_into_cgroup(fd)
        finally:
            posix.close(fd)
        if child is not None:
            return child, cgroup.self_join_files(with_cgroup2=False)
    return posix.fork(), cgroup.self_join_files()


def _join_cgroup(task_files: list[str]) -> None:
    """Move this (single-threaded) process into a cgroup; see Cgroup.self_join_files."""
    for path in task_files:
        try:
            write_file(path, "0")
        except OSError as err:
            raise ContainerStartError(f"cannot join cgroup {posixlite.dirname(path)}: {err.strerror}") from None


def _enter_namespaces(namespaces: list[dict[str, Any]], channel: Channel, time_offsets: dict | None) -> None:
    # Open every path first: after setns(mnt) the paths would resolve in the container's mounts.
    joins = []
    for ns in namespaces:
        if ns.get("path"):
            try:
                fd = posix.open(ns["path"], posix.O_RDONLY | posix.O_CLOEXEC)
            except OSError as err:
                raise ContainerStartError(f"cannot open {ns['type']} namespace {ns['path']}: {err.strerror}") from None
            joins.append((ns["type"], fd, ns["path"]))
    joins.sort(key=lambda j: (j[0] != "user", j[0] == "mount"))
    new_flags = 0
    for ns in namespaces:
        if not ns.get("path"):
            new_flags |= NAMESPACE_FLAGS[ns["type"]]
    if joins and joins[0][0] == "user":
        _setns(*joins.pop(0))
    elif new_flags & linux.CLONE_NEWUSER:
        rootless = posix.geteuid() != 0
        try:
            linux.unshare(linux.CLONE_NEWUSER)
        except OSError as err:
            from capsa.rootless import running_in_userns

            hint = (" (this host may forbid unprivileged user namespaces: see the sysctls "
                    "kernel.unprivileged_userns_clone, kernel.apparmor_restrict_unprivileged_userns "
                    "and user.max_user_namespaces)") if rootless or running_in_userns() else ""
            raise ContainerStartError(f"cannot create a user namespace: {err.strerror}{hint}") from None
        if rootless:
            # An unprivileged parent (and newuidmap, which checks who owns /proc/PID) can write
            # our maps only while our /proc files are ours, not root's: dumpable until the
            # namespaces are set up (end of this function), as runc's nsexec. Nothing of the
            # container runs yet.
            linux.prctl(linux.PR_SET_DUMPABLE, 1)
        channel.send("userns")
        channel.expect("ok")
        posix.setresgid(0, 0, 0)
        posix.setresuid(0, 0, 0)
    for join in joins:
        _setns(*join)
    # The cgroup namespace is created by the init once it is in its cgroup (after "go"), so that
    # its cgroup, not the caller's, becomes the namespace's root.
    rest = new_flags & ~(linux.CLONE_NEWUSER | linux.CLONE_NEWCGROUP)
    if rest:
        try:
            linux.unshare(rest)
        except OSError as err:
            raise ContainerStartError(f"cannot create namespaces: {err.strerror}") from None
    if rest & linux.CLONE_NEWTIME and time_offsets:
        _write_time_offsets(time_offsets)
    # Rootless, the child was left dumpable for its maps, and for /proc/self/timens_offsets,
    # which it could not open while its /proc files belonged to the host's root.
    linux.prctl(linux.PR_SET_DUMPABLE, 0)


def _write_time_offsets(offsets: dict[str, Any]) -> None:
    """Clock offsets of a new time namespace: settable only before a process enters it."""
    lines = "".join(f"{clock} {value.get('secs', 0)} {value.get('nanosecs', 0)}\n" for clock, value in offsets.items())
    try:
        write_file("/proc/self/timens_offsets", lines)
    except OSError as err:
        raise ContainerStartError(f"linux.timeOffsets: cannot set the clock offsets: {err.strerror}") from None


def _setns(kind: str, fd: int, path: str) -> None:
    try:
        linux.setns(fd, NAMESPACE_FLAGS[kind])
    except OSError as err:
        raise ContainerStartError(f"cannot join {kind} namespace {path}: {err.strerror}") from None
    finally:
        posix.close(fd)


# -- joining a running container (exec) ------------------------------------------------------------
def spawn_tenant(init_pid: int, process: dict[str, Any], options: LaunchOptions, cgroup: Cgroup | None, seccomp: Any = None,
                 memory_policy: dict[str, Any] | None = None) -> int:
    """Start `process` inside the namespaces and cgroup of the container whose init is `init_pid`;
    `seccomp` and `memory_policy` are the container's.

    The same path as the init's: a child joins the namespaces (user first, mount last), forks
    the process that will exec (a pid namespace applies to children only), and that process
    reports through the channel until exec closes it. Returns the new process's host pid.
    """
    namespaces = namespaces_of(init_pid)
    keep = check_inherited_fds(options.preserve_fds)
    console_fd = _connect_console(process.get("terminal"), options.console_socket, options.console_fd)
    seccomp_fd = _connect_seccomp_listener(seccomp, console_fd)
    parent_fd, child_fd = _socketpair()
    child_fd, console_fd, seccomp_fd = _move_above([child_fd, console_fd, seccomp_fd], 3 + keep)
    child, join = _fork_into(cgroup)
    if child == 0:
        _close_fds_except(set(range(3 + keep)) | {child_fd, console_fd, seccomp_fd})
        _tenant_child(child_fd, namespaces, process, console_fd, keep, seccomp, join, seccomp_fd, options.seccomp_cache,
                      memory_policy)
    posix.close(child_fd)
    _close_if_open(console_fd, seccomp_fd)
    channel = Channel(parent_fd)
    pid = 0
    try:
        pid = int(channel.expect("pid"))  # already in the cgroup: forked after the child joined it
        # runc gives the seccomp listener of an exec'd process its own pid and the state "running".
        channel.send("go", _listener_state(seccomp, pid, dict(options.state or {}, status="running")))
        kind, payload = channel.receive()  # EOF: the exec closed the channel
        if kind == "error":
            raise ContainerStartError(payload)
        return pid
    except BaseException:
        _kill_quietly(pid or child)
        raise
    finally:
        channel.close()
        if pid != child:
            _reap(child)


def namespaces_of(pid: int) -> list[dict[str, Any]]:
    """The namespaces of `pid` that differ from ours, as config.json entries joining them by path."""
    joined = []
    for kind, name in NAMESPACE_FILES.items():
        path = f"/proc/{pid}/ns/{name}"
        try:
            if posix.readlink(path) != posix.readlink(f"/proc/self/ns/{name}"):
                joined.append({"type": kind, "path": path})
        except FileNotFoundError:
            continue  # a namespace type this kernel does not have
    return joined


def _tenant_child(
    sync_fd: int, namespaces: list[dict[str, Any]], process: dict[str, Any], console_fd: int, keep: int, seccomp: Any,
    cgroup_join: list[str], seccomp_fd: int, seccomp_cache: str | None = None, memory_policy: dict[str, Any] | None = None,
) -> None:
    from capsa import init

    channel = Channel(sync_fd)
    try:
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        # Modules, libseccomp and the trampoline are loaded here: after setns(mnt) the host's files are out of reach.
        init.load_modules(process)
        seccomp_filter = init.build_seccomp(seccomp, seccomp_cache)
        exec_trampoline = init.trampoline_fd()
        labels = init.exec_labels(process)  # through the host's procfs, opened before setns(mnt)
        _join_cgroup(cgroup_join)
        _enter_namespaces(namespaces, channel, None)
        pid = posix.fork()
        if pid:
            channel.send("pid", str(pid))
            posix._exit(0)
    except BaseException as err:  # noqa: BLE001
        init._report(channel, err)
        posix._exit(1)
    init.run_tenant(process, channel, console_fd, keep, seccomp_filter, exec_trampoline, seccomp_fd, labels, memory_policy)
