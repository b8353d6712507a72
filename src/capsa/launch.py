"""Starting a process in a container: one typed launch plan, and the one path that carries it out.

A LaunchPlan says everything a launch needs: the process to exec, the namespaces to create or to
join (by path or by fd), where the cgroup comes from and whether its limits are written, the
console, the inherited fds, the state the hooks and the seccomp listener get, seccomp, and what
the process is: a new container's init (`init`: rootfs setup, start socket) or a process in
existing namespaces (exec). Three builders make plans, as youki's init and tenant builders do:
plan_for_container (create, run), plan_for_exec (exec) and plan_for_member (a new container that
joins a sandbox's namespaces by path).

start(plan) carries out any of them on one path, with one protocol:

    parent (start)                    child                             payload process
    --------------                    -----                             ---------------
    console, seccomp listener,
    idmapped trees, channel: fds
    above the inherited ones
    fork (clone3 into the cgroup) ──▶ non-dumpable; loads its modules
                                      (systemd: waits for "cgroup")
                                      joins the cgroup ("0" > tasks)
                                      new user ns ─"userns"─▶ maps ─"ok"─▶
                                      setns(paths, fds: user first, mount last), unshare(rest)
                                      fork, if a pid/time namespace needs it ─▶ (child exits)
    ◀──────────────"pid N"──────────  (reports the payload's host pid)
    limits, oom_score_adj, "go" ──────────────────────────────────────────────▶ init: mounts, /dev,
    ◀───────"mountfd" / "hooks" ─────────────────────────────────────────────── console, hooks,
    detached source / hooks, "ok" ────────────────────────────────────────────▶ pivot_root, ...
    ◀────────────"ready"─────────────────────────────────────────────────────── init: waits for start
    ◀────────────EOF─────────────────────────────────────────────────────────── exec: execve closed
                                                                                the channel
    An "error <message>" at any point: the parent kills what it started and raises.
"""

from __future__ import annotations

import posix

from capsa import hooks, init, linux, posixlite, procfs
from capsa.errors import CapsaError, ContainerStartError
from capsa.syncpipe import Channel

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    from capsa.cgroups import Cgroup

# The namespaces a planned init's child is cloned in: a new PID namespace holds only the children
# of the process that unshares it, and the parent writes the user namespace's maps unasked, as
# soon as it can (~10 us each). The child makes the others itself while the parent goes on
# (capsa.spawn): a network namespace alone is ~0.4 ms of the kernel's.
_CLONED_NAMESPACES = linux.CLONE_NEWUSER | linux.CLONE_NEWPID
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

# Where the process's cgroup comes from (LaunchPlan.cgroup_placement).
CGROUP_CHILD = "child"  # the child is born in it (clone3 CLONE_INTO_CGROUP) or joins it first thing
CGROUP_MANAGER = "manager"  # a manager (systemd) makes it with the waiting child in it (create_with)


# -- the plan ---------------------------------------------------------------------------------------
class Namespace:
    """One namespace of a plan: a new one of `type`, or an existing one joined by `path` or by `fd`
    (an fd of the caller's, above the inherited ones; the child closes its copy once joined)."""

    __slots__ = ("type", "path", "fd")

    def __init__(self, type: str, *, path: str | None = None, fd: int = -1):
        if type not in NAMESPACE_FLAGS:
            raise CapsaError(f"unknown namespace type {type!r}")
        self.type = type
        self.path = path
        self.fd = fd

    @property
    def joined(self) -> bool:
        return self.path is not None or self.fd >= 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Namespace) and (self.type, self.path, self.fd) == (other.type, other.path, other.fd)

    def __repr__(self) -> str:
        how = f" path={self.path!r}" if self.path is not None else f" fd={self.fd}" if self.fd >= 0 else " new"
        return f"Namespace({self.type}{how})"


class Console:
    """Where the pty master of a process with a terminal goes: to the AF_UNIX socket at `socket`
    (runc's --console-socket), or over `fd`, a socket of the caller's already connected (capsa run's
    terminal proxy). The plan's process must have process.terminal; the launch checks both ways."""

    __slots__ = ("socket", "fd")

    def __init__(self, *, socket: str | None = None, fd: int | None = None):
        if (socket is None) == (fd is None):
            raise CapsaError("a console is a socket path or a connected fd: give one of them")
        self.socket = socket
        self.fd = fd


class InitConfig:
    """What makes a plan a new container's init: its config, its rootfs, the start socket it
    waits on, and the flags of its setup. An exec's plan has none."""

    __slots__ = ("spec", "rootfs", "container_id", "listen_fd", "no_pivot", "no_new_keyring", "cgroup_sources",
                 "exec_at_once", "serve")

    def __init__(self, *, spec: dict[str, Any], rootfs: str, container_id: str, listen_fd: int,
                 no_pivot: bool = False, no_new_keyring: bool = False, cgroup_sources: dict[str, str] | None = None,
                 exec_at_once: bool = False, serve: Any = None):
        self.spec = spec
        self.rootfs = rootfs
        self.container_id = container_id
        self.listen_fd = listen_fd
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        # Directory name under /sys/fs/cgroup -> the cgroup directory a cgroup mount shows there.
        self.cgroup_sources = cgroup_sources or {}
        # The init execs as soon as it is ready, without waiting for `start` (a caller whose
        # create is its start: capsa.api's one-shot runs).
        self.exec_at_once = exec_at_once
        # Instead of exec'ing the process, the set-up init calls serve(plan, seccomp_filter,
        # trampoline_fd), which never returns (capsa.api.agent: a pooled sandbox's agent).
        self.serve = serve


class LaunchPlan:
    """Everything start() needs to start one process in a container; see the module's doc."""

    __slots__ = (
        "process", "namespaces", "fork", "cgroup", "cgroup_placement", "cgroup_limits", "rootless_cgroups", "warn",
        "console", "inherited_fds", "listen_fds", "state", "listener_status", "seccomp", "seccomp_cache",
        "memory_policy", "id_mappings", "time_offsets", "oom_score_adj", "init", "stdio", "make_cgroup", "cloned",
        "meanwhile",
    )

    def __init__(
        self, *, process: dict[str, Any], namespaces: list[Namespace], fork: bool, state: dict[str, Any],
        listener_status: str, cgroup: Cgroup | None = None, cgroup_placement: str = CGROUP_CHILD,
        cgroup_limits: tuple[Any, Any] | None = None,
        rootless_cgroups: bool = False, warn: Any = None, console: Console | None = None, inherited_fds: int = 0,
        listen_fds: int | None = None, seccomp: dict[str, Any] | None = None, seccomp_cache: str | None = None,
        memory_policy: dict[str, Any] | None = None, id_mappings: dict[str, Any] | None = None,
        time_offsets: dict[str, Any] | None = None, oom_score_adj: int | None = None, init: InitConfig | None = None,
        stdio: tuple[int, int, int] | None = None,
    ):
        self.process = process  # the OCI process the payload execs
        self.namespaces = namespaces  # entered in this order, but user first and mount last
        self.fork = fork  # the child forks the payload (a pid namespace applies to children only)
        self.cgroup = cgroup
        self.cgroup_placement = cgroup_placement  # CGROUP_CHILD or CGROUP_MANAGER
        # (linux.resources, linux.devices) written to the cgroup before "go": the container's own
        # cgroup. None: a cgroup joined as it is (exec).
        self.cgroup_limits = cgroup_limits
        self.rootless_cgroups = rootless_cgroups
        self.warn = warn
        self.console = console
        self.inherited_fds = inherited_fds  # fds 3 .. 3+N-1 pass to the process
        # Socket activation (sd_listen_fds): the first N of them listen; the process gets LISTEN_FDS=N
        # and LISTEN_PID (None: no socket activation).
        self.listen_fds = listen_fds
        self.state = state  # the OCI state the hooks get (an init's gets its pid at "pid")
        self.listener_status = listener_status  # the status seccomp's listener is told
        self.seccomp = seccomp
        self.seccomp_cache = seccomp_cache
        self.memory_policy = memory_policy
        self.id_mappings = id_mappings  # linux's uidMappings and gidMappings, written for a new user namespace
        self.time_offsets = time_offsets
        self.oom_score_adj = oom_score_adj
        self.init = init  # a new container's init; None: a process in existing namespaces (exec)
        # The payload's fds 0-2: fds of the caller's (above 2) the child puts there first thing;
        # None: the caller's own 0-2, as runc's. A library caller gives the run's pipes this way
        # without ever pointing its own stdio at them.
        self.stdio = stdio
        # Makes the cgroup, which the caller left to the launch (capsa.create); called before the
        # child is born in it or joins it: a planned init's child that joins it (cgroup v1) is
        # cloned first, and makes its namespaces and execs meanwhile. None: made already, or none.
        self.make_cgroup: Callable[[], None] | None = None
        # Called once the child is cloned (and the cgroup made): work of the caller's that needs
        # no child, done while the child makes its namespaces or execs a planned init
        # (capsa.create writes the record "creating"); None: nothing.
        self.cloned: Callable[[], None] | None = None
        # Called with the payload's pid while a planned init sets itself up, the parent having
        # nothing else to do then (capsa.create writes the container's record); None: nothing.
        self.meanwhile: Callable[[int], None] | None = None


# -- the builders -----------------------------------------------------------------------------------
def plan_for_container(
    *, spec: dict[str, Any], rootfs: str, container_id: str, state: dict[str, Any], listen_fd: int,
    cgroup: Cgroup | None, console: Console | None = None, inherited_fds: int = 0, listen_fds: int | None = None,
    no_pivot: bool = False, no_new_keyring: bool = False, rootless_cgroups: bool = False, warn: Any = None,
    seccomp_cache: str | None = None, stdio: tuple[int, int, int] | None = None, exec_at_once: bool = False,
    serve: Any = None,
) -> LaunchPlan:
    """A new container's init: the namespaces of linux.namespaces (new, or joined by path), the
    container's own cgroup with its limits, the init that sets the rootfs up and waits on
    `listen_fd` for `start` (-1: an init that execs at once or serves). `state` is what the
    create-time hooks get."""
    linux_spec = spec.get("linux") or {}
    namespaces = [Namespace(ns["type"], path=ns.get("path")) for ns in linux_spec.get("namespaces") or []]
    process = spec["process"]
    return LaunchPlan(
        process=process, namespaces=namespaces, fork=_needs_fork(namespaces), state=state,
        listener_status="creating",  # as runc: the seccomp listener of an init is told "creating"
        cgroup=cgroup, cgroup_placement=CGROUP_MANAGER if cgroup is not None and cgroup.placed_by_manager else CGROUP_CHILD,
        cgroup_limits=(linux_spec.get("resources"), linux_spec.get("devices")),
        rootless_cgroups=rootless_cgroups, warn=warn, console=console, inherited_fds=inherited_fds,
        listen_fds=listen_fds, seccomp=linux_spec.get("seccomp"), seccomp_cache=seccomp_cache,
        memory_policy=linux_spec.get("memoryPolicy"), id_mappings=linux_spec, time_offsets=linux_spec.get("timeOffsets"),
        oom_score_adj=process.get("oomScoreAdj"), stdio=stdio,
        init=InitConfig(spec=spec, rootfs=rootfs, container_id=container_id, listen_fd=listen_fd, no_pivot=no_pivot,
                        no_new_keyring=no_new_keyring, cgroup_sources=cgroup_sources(spec, cgroup),
                        exec_at_once=exec_at_once, serve=serve),
    )


def plan_for_member(sandbox_namespaces: dict[str, str], **container: Any) -> LaunchPlan:
    """A sandbox member: a new container (plan_for_container's arguments) that joins the
    sandbox's namespaces, type -> path, whatever its own linux.namespaces say of those types.
    Its cgroup is the member's child of the sandbox's parent cgroup (Cgroup.child), made by create."""
    plan = plan_for_container(**container)
    plan.namespaces = join_namespaces(plan.namespaces, sandbox_namespaces)
    plan.fork = _needs_fork(plan.namespaces)
    return plan


def plan_for_exec(container: Any, process: dict[str, Any], *, console: Console | None = None, inherited_fds: int = 0,
                  listen_fds: int | None = None, cgroup: Cgroup | None = None, seccomp_cache: str | None = None) -> LaunchPlan:
    """A process in the running container `container` (a capsa.container.Container): it joins,
    by path, every namespace of the container's init that differs from ours, and `cgroup` (the
    container's, or a sub-cgroup) as it is; it gets the container's seccomp filter and memory
    policy, as runc's exec does."""
    linux_spec = container.spec.get("linux") or {}
    return LaunchPlan(
        process=process, namespaces=namespaces_of(container.pid),
        fork=True,  # always, as runc's exec: the process is not the caller's child
        state=container.hook_state("running"),
        listener_status="running",  # as runc: an exec'd process's listener is told "running" and its own pid
        cgroup=cgroup, cgroup_placement=CGROUP_CHILD,  # it exists: the child joins it, under systemd too
        console=console, inherited_fds=inherited_fds, listen_fds=listen_fds, seccomp=linux_spec.get("seccomp"), seccomp_cache=seccomp_cache, memory_policy=linux_spec.get("memoryPolicy"),
    )


def join_namespaces(namespaces: list[Namespace], joins: dict[str, str]) -> list[Namespace]:
    """`namespaces` with each type of `joins` joined by its path (added if it was not there)."""
    result = [Namespace(ns.type, path=joins[ns.type]) if ns.type in joins else ns for ns in namespaces]
    present = {ns.type for ns in namespaces}
    return result + [Namespace(kind, path=path) for kind, path in joins.items() if kind not in present]


def namespaces_of(pid: int) -> list[Namespace]:
    """The namespaces of `pid` that differ from ours, each joined by its /proc path."""
    joined = []
    for kind, name in NAMESPACE_FILES.items():
        path = f"/proc/{pid}/ns/{name}"
        try:
            if posix.readlink(path) != posix.readlink(f"/proc/self/ns/{name}"):
                joined.append(Namespace(kind, path=path))
        except FileNotFoundError:
            continue  # a namespace type this kernel does not have
    return joined


def _needs_fork(namespaces: list[Namespace]) -> bool:
    # A new or joined pid namespace applies to children only; so does a new time namespace.
    return any(ns.type in ("pid", "time") for ns in namespaces)


def cgroup_sources(spec: dict[str, Any], cgroup: Cgroup | None) -> dict[str, str]:
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


# -- the parent's side ------------------------------------------------------------------------------
class ChildFds:
    """The fds of its own a launch hands the child, all above the inherited range."""

    __slots__ = ("sync", "console", "seccomp_listener", "mount_trees", "cgroup_join", "born_in_namespaces",
                 "maps_unasked", "trampoline")

    def __init__(self, sync: int, console: int, seccomp_listener: int, mount_trees: dict[int, int]):
        self.sync = sync
        self.console = console  # -1: no terminal
        self.seccomp_listener = seccomp_listener  # -1: no SCMP_ACT_NOTIFY
        self.mount_trees = mount_trees  # index in mounts -> detached idmapped tree (init only)
        self.cgroup_join: list[str] = []  # files the child writes "0" to, to join the rest of its cgroup
        self.born_in_namespaces = False  # the child was cloned in the plan's namespaces (_born_namespaces)
        self.maps_unasked = False  # ... and the parent writes its user namespace's maps unasked (_maps_unasked)
        # The parent's sealed exec trampoline (capsa.trampoline.shared_fd; None: none here), which
        # stays open in the parent: not in all().
        self.trampoline: int | None = None

    def all(self) -> set[int]:
        return {self.sync, self.console, self.seccomp_listener, *self.mount_trees.values()} - {-1}


def start(plan: LaunchPlan) -> int:
    """Carry the plan out; return the payload's host pid once it is ready (an init waiting for
    `start`) or has exec'd (exec). On failure whatever was started is killed, and a CapsaError
    says what went wrong.

    The fds the plan passes (3 .. 3+inherited_fds-1) must be open, and every fd of the caller's
    that the plan names (the start socket, namespaces joined by fd) above them: true when the
    caller checked them (require_inherited_fds) before it opened anything."""
    keep = require_inherited_fds(plan.inherited_fds)
    _check_own_fds(plan, 3 + keep)
    # Compiled (or read from the cache) here, with the host's files in reach and before anything
    # is started: a bad profile is an error with nothing to undo, and the child, on the way to
    # the container, has that much less to do.
    seccomp_filter = init.build_seccomp(plan.seccomp, plan.seccomp_cache)
    pid = _start_planned(plan, seccomp_filter, 3 + keep)
    if pid is not None:
        return pid
    parent_fd, fds = _child_fds(plan, 3 + keep)
    fds.trampoline = init.trampoline_fd()
    managed = plan.cgroup is not None and plan.cgroup_placement == CGROUP_MANAGER
    # Under a manager the cgroup is made with the child in it: the child is forked outside and waits.
    maps_unasked = _maps_unasked(plan)
    try:
        _call_once(plan, "make_cgroup")
        child, fds.cgroup_join, fds.born_in_namespaces = _fork_into(None if managed else plan.cgroup,
                                                                    _born_namespaces(plan))
        fds.maps_unasked = fds.born_in_namespaces and maps_unasked
    except BaseException:
        _close_if_open(parent_fd, *fds.all())
        raise
    if child == 0:
        # Drop every fd the child does not need, above all the state directory's flock, which
        # would otherwise stay held for the whole life of the container.
        _close_fds_except(set(range(3 + keep)) | fds.all() | _own_fds(plan) | {fds.trampoline} - {None})
        _child(plan, fds, seccomp_filter)
    _close_if_open(*fds.all())
    restore_cpus = _leave_cpu_to(child)
    driver = _Driver(plan, Channel(parent_fd), child)
    try:
        _call_once(plan, "cloned")
        if managed:
            plan.cgroup.create_with(child, (plan.cgroup_limits or (None, None))[0])
            driver.channel.send("cgroup")
        else:
            if fds.maps_unasked:
                from capsa import idmap

                idmap.write_mappings(child, plan.id_mappings or {})
                driver.channel.send("ok")
            # While the child sets itself up: the limits hold before "go", and so before any code
            # of the container's runs (the cgroup is the container's own and new, nothing in it yet
            # or only the child).
            driver.apply_limits()
            if fds.born_in_namespaces and (fds.maps_unasked or not _new_user_namespace_in(plan)):
                driver.go(child)  # the child, born in its namespaces, is the payload: no "pid" to wait for
        driver.run()
    except BaseException:
        if driver.pid:
            kill_init(driver.pid)  # reaps it too when it is the child itself
        if driver.pid != child:
            _kill_quietly(child)
            _reap(child)
            if driver.pid:
                # Had the intermediate not exited yet when kill_init looked, the payload's zombie
                # is re-parented to us (a subreaper) only now.
                _reap_if_ours(driver.pid)
        raise
    finally:
        driver.channel.close()
        if restore_cpus is not None:
            posix.sched_setaffinity(0, restore_cpus)
    if driver.pid != child:
        _reap(child)  # the intermediate child, which exited once it had forked the payload
    return driver.pid


def _leave_cpu_to(child: int) -> set[int] | None:
    """If the kernel started the child on this thread's CPU, move this thread to another of the
    CPUs it may use until the launch is over; the affinity to take back then, None if it did not
    move. There, the child waited ~1 ms for
    the parent (maps, limits, "go") to block before it first ran, another CPU idle (`perf record
    -e sched:*`); moved, the parent's part and the child's run side by side. The child's own
    affinity is not touched: the container inherits what the caller has."""
    shared = _sharing_this_cpu(child)
    if shared is None:
        return None
    allowed, here = shared
    others = sorted(allowed - {here})
    try:
        posix.sched_setaffinity(0, {next((cpu for cpu in others if cpu > here), others[0])})
    except OSError:
        return None
    return allowed


class _StalePlan(Exception):
    """What a remembered plan was made from no longer holds (plannedinit.still_true): its child
    was killed before "go"; the plan is made again."""


def _start_planned(plan: LaunchPlan, seccomp_filter: Any, lowest: int) -> int | None:
    """The container's init as a planned init (capsa.plannedinit): its pid once it has exec'd;
    None where the Python init must do it (the plan cannot be one, the kernel refused the clone).
    A remembered plan is checked while its child sets itself up, and made again if it no longer
    holds (the child killed before "go": nothing of the container's ran)."""
    if not _plannable(plan):
        return None  # before _child_fds: it connects to a console socket, which the Python path does
    fresh = False
    while True:
        parent_fd, fds = _child_fds(plan, lowest)
        planned = None
        try:
            planned = _planned_init(plan, seccomp_filter, fds.sync, fresh)
            if planned is not None and planned.born_in_cgroup:
                _call_once(plan, "make_cgroup")  # its cgroup2 directory must be there for the clone
            child = planned.spawn(_born_namespaces(plan), plan.cgroup, parent_fd) if planned is not None else None
        except BaseException:
            _close_if_open(parent_fd, *fds.all())
            if planned is not None:
                planned.close()
            raise
        if child is None:
            _close_if_open(parent_fd, *fds.all())
            if planned is not None:
                planned.close()
            return None
        try:
            return _drive_planned(plan, child, parent_fd, planned, lambda fds=fds: _close_if_open(*fds.all()))
        except _StalePlan:
            if fresh:
                raise ContainerStartError("internal error: a plan made just now does not hold") from None
            fresh = True


class _PlannedLaunch:
    """The parent's side of a planned init (capsa.plannedinit): the plan, as a memfd, and the
    fds the child takes at the numbers the plan says, each above them (dup2 in any order is then
    safe); the copies made for that are closed again in the parent. `joins`: the cgroup files
    the child joins (v1), sent after "m" (send_joins); `born_in_cgroup`: the child is cloned in
    the cgroup's cgroup2 directory (v2, or a hybrid host's unified hierarchy)."""

    def __init__(self, planned: Any, stdio: list[int], channel: int, joins: list[str], born_in_cgroup: bool):
        from capsa import plannedinit, spawn

        self.planned = planned
        self.joins = joins
        self.born_in_cgroup = born_in_cgroup
        self.memfd = memfd = posix.memfd_create("capsa-plan", posix.MFD_CLOEXEC)
        self.ours: list[int] = [memfd]  # closed by close()
        # Targets: 0-2 stdio, PLAN_FD, CHANNEL_FD; then the program, which no dup2 of the child's
        # may land on either.
        fds = [*stdio, memfd, channel]
        sources, copies = spawn.sources_above([*fds, plannedinit.shared_fd()], len(fds) + 1)
        self.ours += copies
        self.sources, self.executable = sources[:-1], sources[-1]

    def spawn(self, namespaces: int, cgroup: Cgroup | None, parent_end: int) -> int | None:
        """The child, sharing our memory until it execs the planned init (capsa.spawn), in the
        `namespaces` and born in the cgroup's cgroup2 directory (if any); None if the kernel
        refuses that clone (the Python init then makes what it can and says why). It is cloned
        in its user and PID namespaces and makes the others itself, while we go on (the plan is
        written to its memfd then, before "m")."""
        from capsa import spawn
        from capsa.plannedinit import CHANNEL_FD

        directory = cgroup.cgroup2_dir() if cgroup is not None else None
        fd = posix.open(directory, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC) if directory else None
        try:
            cloned = namespaces & _CLONED_NAMESPACES
            return spawn.spawner().spawn(cloned, fd, self.sources[CHANNEL_FD], self.sources, self.executable, parent_end,
                                         unshare=namespaces & ~cloned)
        except OSError:
            return None
        finally:
            if fd is not None:
                posix.close(fd)

    def write_plan(self) -> None:
        """The plan into the memfd the child reads it from once it has exec'd (after "m")."""
        view = memoryview(self.planned.plan)
        while view:
            view = view[posix.write(self.memfd, view):]

    def send_joins(self, parent_fd: int) -> None:
        """The cgroup files the child joins, opened (the cgroup is made by now) and sent after
        "m": the child receives them first thing (plannedinit.build)."""
        from capsa.syncpipe import send_fds

        if not self.joins:
            return
        opened: list[int] = []
        try:
            for path in self.joins:
                opened.append(posix.open(path, posix.O_WRONLY | posix.O_CLOEXEC))
            try:
                send_fds(parent_fd, b"j", opened)
            except BrokenPipeError:
                pass  # it failed before it read "m": its report is queued for us
        except OSError as err:
            raise ContainerStartError(f"cannot join cgroup {err.filename}: {err.strerror}") from None
        finally:
            _close_if_open(*opened)

    def close(self) -> None:
        _close_if_open(*self.ours)
        self.ours = []


def _plannable(plan: LaunchPlan) -> bool:
    """Whether the init can be a planned one: it execs at once, is born in all its namespaces
    (root writing its maps), its stdio given, its cgroup made by capsa (plannedinit.eligible)."""
    from capsa import plannedinit

    if plan.stdio is None or not plannedinit.enabled() or not plannedinit.eligible(plan) or not _born_namespaces(plan):
        return False
    return plan.cgroup is None or plan.cgroup_placement != CGROUP_MANAGER


def _planned_init(plan: LaunchPlan, seccomp_filter: Any, channel: int, fresh: bool = False) -> _PlannedLaunch | None:
    """The container's init as a plan (capsa.plannedinit), _plannable(plan) being true; None if
    its spec cannot be one (plannedinit.build). fresh: made again, not remembered."""
    from capsa import plannedinit

    born_in_cgroup = plan.cgroup is not None and plan.cgroup.cgroup2_dir() is not None
    joins = plan.cgroup.self_join_files(with_cgroup2=not born_in_cgroup) if plan.cgroup is not None else []
    planned = plannedinit.plan_for(plan, seccomp_filter, joins, fresh)
    if planned is None:
        return None
    return _PlannedLaunch(planned, list(plan.stdio), channel, joins, born_in_cgroup)


def _drive_planned(plan: LaunchPlan, child: int, parent_fd: int, launch: _PlannedLaunch, close_fds: Any) -> int:
    """The parent's part of a planned init, its child cloned: while the child makes its
    namespaces, the plan into its memfd and the maps, then "m"; while it execs the planned init,
    the caller's work that needs no child (plan.make_cgroup, plan.cloned), then the cgroup files
    it joins (the child's and `launch`'s fds closed, `close_fds`, then); the limits and a
    remembered plan checked again while it sets itself up; "go", which it waits for only before
    it execs the process; then its report: nothing (it has exec'd the process: EOF) or the step
    that failed."""
    driver = _Driver(plan, Channel(parent_fd), child)
    try:
        # First: the child makes its namespaces (~0.5 ms) on another CPU while we go on.
        child_cpus = _send_child_elsewhere(child)
        try:
            launch.write_plan()
            if _new_user_namespace_in(plan):
                from capsa import idmap

                idmap.write_mappings(child, plan.id_mappings or {})
            try:
                posix.write(parent_fd, b"m")  # the child becomes root in it and execs the plan
            except BrokenPipeError:
                pass  # its unshare failed: its report is queued for us
            # While it execs the planned init, which then waits for the cgroup files first thing:
            _call_once(plan, "make_cgroup")
            _call_once(plan, "cloned")
            launch.send_joins(parent_fd)
        finally:
            launch.close()
            close_fds()
        driver.apply_limits()
        driver.pid = child
        plan.state["pid"] = child
        if plan.oom_score_adj is not None:
            _set_oom_score_adj(child, plan.oom_score_adj)
        if launch.planned.recheck is not None:
            from capsa import plannedinit

            if not plannedinit.still_true(launch.planned.recheck):
                raise _StalePlan
        if child_cpus is not None:
            _set_affinity_quietly(child, child_cpus)  # before "go": the container's code has the caller's
        try:
            posix.write(parent_fd, b"g")
        except BrokenPipeError:
            pass  # a set-up step failed before it: its report is queued for us
        if plan.meanwhile is not None:
            plan.meanwhile(child)
        report = b""
        while len(report) < 8:
            try:
                chunk = posix.read(parent_fd, 8 - len(report))
            except ConnectionResetError:  # it ended with our "g" unread: as EOF
                chunk = b""
            if not chunk:
                break
            report += chunk
        if report:
            step, errno = int.from_bytes(report[:4], "little"), int.from_bytes(report[4:8], "little")
            if step == 0xFFFFFFFF:
                raise ContainerStartError(f"cannot run the container's init: {posix.strerror(errno)}")
            if step == 0xFFFFFFFE:
                raise ContainerStartError(f"cannot create the container's namespaces: {posix.strerror(errno)}")
            raise ContainerStartError(launch.planned.error(step, errno))
    except BaseException:
        kill_init(child)
        raise
    finally:
        posix.close(parent_fd)
    return child


def _call_once(plan: LaunchPlan, hook: str) -> None:
    """The caller's work the plan's `hook` names (make_cgroup, cloned), once."""
    work = getattr(plan, hook)
    if work is not None:
        setattr(plan, hook, None)
        work()


def _send_child_elsewhere(child: int) -> set[int] | None:
    """If the kernel put the new child on this thread's CPU, allow it only the others until "go"
    (it is asleep, waiting for "m", or queued here: moving it is a mask and a queue, not a
    migration the caller waits for); the affinity to give it back then, None if untouched. Left
    there, it first ran when the parent blocked, the parent's part (maps, limits, the record)
    and the child's set-up one after the other while another CPU idled (_leave_cpu_to, which the
    planned init used before: moving the parent itself instead waits for the other CPU, up to a
    time slice when that one is busy)."""
    shared = _sharing_this_cpu(child)
    if shared is None:
        return None
    allowed, here = shared
    return allowed if _set_affinity_quietly(child, allowed - {here}) else None


def _sharing_this_cpu(child: int) -> tuple[set[int], int] | None:
    """(this thread's affinity, its CPU) if the child is on that CPU and another is allowed."""
    allowed = posix.sched_getaffinity(0)
    if len(allowed) < 2:
        return None
    fields = procfs.stat_fields(child)
    here = linux.current_cpu()
    if not fields or len(fields) < 37 or fields[36] != str(here):  # field 39: the CPU it is on
        return None
    return allowed, here


def _set_affinity_quietly(pid: int, cpus: set[int]) -> bool:
    try:
        posix.sched_setaffinity(pid, cpus)
    except OSError:
        return False  # gone (its end is reported), or refused: it runs where the kernel puts it
    return True


class _Driver:
    """The parent's end of the protocol: answers the child's requests until the final step."""

    def __init__(self, plan: LaunchPlan, channel: Channel, child: int):
        self.plan = plan
        self.channel = channel
        self.child = child
        self.pid = 0  # the payload's host pid, once reported

    def run(self) -> None:
        # An init's last step is "ready"; an exec's is the EOF of its execve (the channel is close-on-exec).
        final = "ready" if self.plan.init is not None else "eof"
        while True:
            kind, payload = self.channel.receive()
            if kind == final and self.pid:
                return
            if kind == "error":
                raise ContainerStartError(payload)
            handler = _HANDLERS.get(kind)
            if handler is None or (kind in _INIT_ONLY and self.plan.init is None):
                if self.plan.init is not None:
                    raise ContainerStartError("container init exited before it was ready")
                raise ContainerStartError(f"container setup was interrupted (expected 'pid', got {kind!r})")
            handler(self, payload)

    def on_userns(self, payload: str) -> None:
        from capsa import idmap

        idmap.write_mappings(self.child, self.plan.id_mappings or {})
        self.channel.send("ok")
        if payload == "born":
            self.go(self.child)  # a child born in its namespaces asks for its maps, and sends no "pid"

    def apply_limits(self) -> None:
        """The container's limits (linux.resources, linux.devices) written to its cgroup; an
        exec's plan has none (it joins a cgroup as it is)."""
        plan = self.plan
        if plan.cgroup is not None and plan.cgroup_limits is not None:
            resources, devices = plan.cgroup_limits
            plan.cgroup.apply(resources, devices, rootless=plan.rootless_cgroups, warn=plan.warn)

    def on_pid(self, payload: str) -> None:
        if self.plan.cgroup_placement == CGROUP_MANAGER:
            # The process is in its cgroup (the manager made it so); the limits are in place
            # before "go", so no user code ever runs outside them.
            self.apply_limits()
        self.go(int(payload))

    def go(self, pid: int) -> None:
        """The payload is `pid`: oomScoreAdj, then "go" with the seccomp listener's state."""
        plan = self.plan
        self.pid = pid
        if plan.init is not None:
            plan.state["pid"] = self.pid  # the init is the container's process: the hooks get its pid
        if plan.oom_score_adj is not None:
            _set_oom_score_adj(self.pid, plan.oom_score_adj)
        self.channel.send("go", _listener_state(plan.seccomp, self.pid, dict(plan.state, status=plan.listener_status)))

    def on_hooks(self, payload: str) -> None:
        spec = self.plan.init.spec
        hooks.run_hooks(spec, "prestart", self.plan.state)
        hooks.run_hooks(spec, "createRuntime", self.plan.state)
        self.channel.send("ok")

    def on_mountfd(self, payload: str) -> None:
        _send_detached_source(self.channel, self.plan.init.spec, payload)


_HANDLERS = {"userns": _Driver.on_userns, "pid": _Driver.on_pid, "hooks": _Driver.on_hooks, "mountfd": _Driver.on_mountfd}
_INIT_ONLY = ("hooks", "mountfd")


def _own_fds(plan: LaunchPlan) -> set[int]:
    """The caller's fds the plan names, which the child keeps."""
    fds = {ns.fd for ns in plan.namespaces if ns.fd >= 0}
    if plan.init is not None and plan.init.listen_fd >= 0:
        fds.add(plan.init.listen_fd)
    if plan.stdio is not None:
        fds.update(plan.stdio)
    return fds


def _check_own_fds(plan: LaunchPlan, lowest: int) -> None:
    if plan.stdio is not None and (len(plan.stdio) != 3 or min(plan.stdio) < 3):
        raise ContainerStartError(f"internal error: the launch's stdio {plan.stdio!r} must be three fds above 2")
    for fd in sorted(_own_fds(plan)):
        if fd < lowest:
            raise ContainerStartError(f"internal error: fd {fd} of the launch is among the fds the container inherits")


def _child_fds(plan: LaunchPlan, lowest: int) -> tuple[int, ChildFds]:
    """Connect the console and the seccomp listener, make the idmapped trees and the channel
    (the parent's end, and the child's fds moved above the inherited range); all closed again
    if any of it fails."""
    opened: list[int] = []
    try:
        console = _connect_console(plan.process.get("terminal"), plan.console)
        opened.append(console)
        listener = _connect_seccomp_listener(plan.seccomp)
        opened.append(listener)
        trees = _idmapped_trees(plan.init.spec) if plan.init is not None else {}
        opened += trees.values()
        parent_fd, child_fd = _socketpair()
        opened += [parent_fd, child_fd]
        moved = _move_above([child_fd, console, listener, *trees.values()], lowest)
    except BaseException:
        _close_if_open(*opened)
        raise
    return parent_fd, ChildFds(moved[0], moved[1], moved[2], dict(zip(trees, moved[3:], strict=True)))


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


def _connect_seccomp_listener(seccomp: dict[str, Any] | None) -> int:
    """The socket to seccomp's listenerPath (-1 without SCMP_ACT_NOTIFY), connected here, on the
    host side: the path resolves as the caller sees it, whatever the container's namespaces."""
    if not seccomp:
        return -1
    from capsa.seccomp import connect_listener

    return connect_listener(seccomp)


def _listener_state(seccomp: dict[str, Any] | None, pid: int, state: dict[str, Any]) -> str:
    """The payload of "go": the ContainerProcessState for the seccomp listener, or nothing."""
    if not seccomp:
        return ""
    from capsa.seccomp import process_state, uses_notify

    return process_state(seccomp, pid, state) if uses_notify(seccomp) else ""


def _idmapped_trees(spec: dict[str, Any]) -> dict[int, int]:
    """The detached trees of the idmapped mounts, made here, on the host's side (capsa.idmapped)."""
    from capsa.mountopts import is_idmapped

    if not any(is_idmapped(mount) for mount in spec.get("mounts") or []):
        return {}
    from capsa import idmapped

    return idmapped.prepare(spec)


def _close_if_open(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            posix.close(fd)


def _set_oom_score_adj(pid: int, value: int) -> None:
    try:
        procfs.write_file(f"/proc/{pid}/oom_score_adj", str(value))
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


def _reap_if_ours(pid: int) -> None:
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


def _close_fds_except(keep: set[int]) -> None:
    linux.close_fds_except({fd for fd in keep if fd >= 0})


def _socketpair() -> tuple[int, int]:
    import _socket

    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    return a.detach(), b.detach()


def _move_above(fds: list[int], lowest: int) -> list[int]:
    """Fds of ours out of the range the container inherits (3 .. 3+inherited-1): a second guard,
    require_inherited_fds keeps them out already. The originals are closed only once every copy
    is made, so a failure leaves the caller's list of fds to close true (no double close)."""
    import fcntl

    moved: list[int] = []
    try:
        for fd in fds:
            moved.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest) if 0 <= fd < lowest else fd)
    except BaseException:
        _close_if_open(*(new for new, old in zip(moved, fds, strict=False) if new != old))
        raise
    _close_if_open(*(old for new, old in zip(moved, fds, strict=True) if new != old))
    return moved


def require_inherited_fds(count: int) -> int:
    """Check that the `count` fds after stdio a process is to inherit are all open; return count.

    Call it before opening anything that outlives the call: the kernel gives a new fd the lowest
    free number, so an fd of capsa's (the state directory's lock, the start socket) would fill a
    hole in the range and reach the container (the CVE-2024-21626 pattern). With every fd of the
    range open, and never closed by capsa, every fd capsa opens is numbered above it. (The CLI
    checks them first, naming LISTEN_FDS or --preserve-fds: capsa.cli.create.inherited_fds.)
    """
    if count < 0:
        raise CapsaError(f"the number of inherited fds must not be negative (got {count})")
    for fd in range(3, 3 + count):
        try:
            posix.fstat(fd)
        except OSError:
            passed = "fd 3" if count == 1 else f"fds 3 to {2 + count}"
            raise CapsaError(f"fd {fd} is not open (the container is to inherit {passed}; each must be open)") from None
    return count


def _connect_console(terminal: bool, console: Console | None) -> int:
    if console is not None and console.fd is not None:
        return posix.dup(console.fd) if terminal else -1
    socket = console.socket if console is not None else None
    if not terminal:
        if socket:
            raise CapsaError("--console-socket given but process.terminal is false")
        return -1
    if not socket:
        raise CapsaError("process.terminal is true: a --console-socket is needed to receive the terminal")
    from capsa import console as console_module

    try:
        return console_module.connect(socket)
    except OSError as err:
        raise CapsaError(f"cannot connect to console socket {socket}: {err.strerror or err}") from None


# -- the child's side ---------------------------------------------------------------------------------
def _child(plan: LaunchPlan, fds: ChildFds, seccomp_filter: Any) -> NoReturn:
    """The one child path: into the cgroup, into the namespaces, fork if a pid or time namespace
    needs it, report the payload's pid, then run the payload (capsa.init)."""
    channel = Channel(fds.sync)
    tenant = None
    try:
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        if plan.stdio is not None:
            _take_stdio(plan.stdio)
        # The host's files (capsa, Python, libseccomp) are out of reach once in the namespaces.
        init.load_modules(plan.process, plan.init.spec if plan.init is not None else None)
        if plan.init is None:
            # Through the host's procfs too, before setns(mnt).
            tenant = init.prepare_tenant(plan, seccomp_filter, fds.trampoline)
        if plan.cgroup_placement == CGROUP_MANAGER and plan.cgroup is not None:
            channel.expect("cgroup")  # the manager has moved this process into the cgroup
        # Into the cgroup while still the host's root (or user): the process forked below inherits it.
        _join_cgroup(fds.cgroup_join)
        if fds.born_in_namespaces:
            # No "pid": the parent has it (this process, born in the namespaces, is the payload),
            # and sends "go" unasked.
            _finish_born_namespaces(plan.namespaces, channel, fds.maps_unasked)
        else:
            _enter_namespaces(plan.namespaces, channel, plan.time_offsets)
            if plan.fork:
                pid = posix.fork()
                if pid:
                    channel.send("pid", str(pid))
                    posix._exit(0)
            else:
                channel.send("pid", str(posix.getpid()))
    except BaseException as err:  # noqa: BLE001 - every failure must reach the parent, then _exit
        init._report(channel, err)
        posix._exit(1)
    if plan.init is not None:
        init.run(plan, fds, channel, seccomp_filter)
    init.run_tenant(plan, fds, channel, tenant)


def _take_stdio(stdio: tuple[int, int, int]) -> None:
    """Make the plan's stdio fds (all above 2: _check_own_fds) our 0-2, and close them."""
    for target, fd in enumerate(stdio):
        posix.dup2(fd, target)
    for fd in set(stdio):
        posix.close(fd)


# What the child and the init import as they need it. A threaded caller imports them before it
# forks: a module that another thread is importing at the instant of the fork stays locked (its
# import lock held) in the child, where no thread will ever finish importing it.
_CHILD_IMPORTS = ("fcntl", "_sha256", "subprocess", "capsa.console", "capsa.lsm", "capsa.rootless", "capsa.seccomp",
                  "capsa.trampoline")


def _fork_into(cgroup: Cgroup | None, namespaces: int = 0) -> tuple[int, list[str], bool]:
    """fork(), the child born in the cgroup's cgroup2 directory where there is one, and in new
    `namespaces` (CLONE_NEW* flags; see _born_namespaces) where it can be; returns the pid (0 in
    the child), the files the child still writes "0" to, to join the rest of its cgroup, and
    whether the child was born in the namespaces (else it makes them itself).

    A caller with other threads (a Python program may have some; the capsa command has none) gets glibc's fork()
    (linux.clone_child says why) and imports the child's modules first."""
    threaded = linux.thread_count() > 1
    if threaded:
        for name in _CHILD_IMPORTS:
            __import__(name)
    if cgroup is None and not namespaces:
        return posix.fork(), [], False
    if threaded:
        # clone_child would say no (it re-checks): not even asked, as the interpreter's
        # fork hooks it runs around its check are not for threads racing each other (a second
        # thread's hooks in between release the first's import lock: "release unlocked lock").
        return posix.fork(), cgroup.self_join_files() if cgroup is not None else [], False
    directory = cgroup.cgroup2_dir() if cgroup is not None else None
    if directory is None and not namespaces:
        return posix.fork(), cgroup.self_join_files(), False
    fd = posix.open(directory, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC) if directory else None
    try:
        for flags in (namespaces, 0) if namespaces else (0,):
            try:
                child = linux.clone_child(fd, flags)
            except OSError:
                if not flags:
                    raise
                continue  # the child makes them itself, and says why if it cannot
            if child is not None:
                joins = cgroup.self_join_files(with_cgroup2=fd is None) if cgroup is not None else []
                return child, joins, bool(flags)
    finally:
        if fd is not None:
            posix.close(fd)
    return posix.fork(), cgroup.self_join_files() if cgroup is not None else [], False


def _new_user_namespace_in(plan: LaunchPlan) -> bool:
    return any(ns.type == "user" and not ns.joined for ns in plan.namespaces)


def _maps_unasked(plan: LaunchPlan) -> bool:
    """Whether root writes the maps of a child born in a new user namespace as soon as it is
    cloned, unasked (one round trip less); rootless, newuidmap needs the child dumpable first,
    so the child asks ("userns") once it is. Asked before the fork: in the child, unmapped,
    geteuid() is the overflow id."""
    return posix.geteuid() == 0 and _new_user_namespace_in(plan)


def _born_namespaces(plan: LaunchPlan) -> int:
    """The namespaces a container's init can be born in (one clone3 instead of a fork, unshare()
    and a second fork): all of its namespaces, if every one is new, none is a time namespace
    (its clock offsets must be written before a process is in it) and no manager places the
    cgroup (the child waits outside it). The cgroup namespace is left out: the init makes it once
    in its cgroup."""
    if plan.init is None or (plan.cgroup is not None and plan.cgroup_placement == CGROUP_MANAGER):
        return 0
    flags = 0
    for ns in plan.namespaces:
        if ns.joined or ns.type == "time":
            return 0
        if ns.type != "cgroup":
            flags |= NAMESPACE_FLAGS[ns.type]
    return flags


def _join_cgroup(task_files: list[str]) -> None:
    """Move this (single-threaded) process into a cgroup; see Cgroup.self_join_files."""
    for path in task_files:
        try:
            procfs.write_file(path, "0")
        except OSError as err:
            raise ContainerStartError(f"cannot join cgroup {posixlite.dirname(path)}: {err.strerror}") from None


def _enter_namespaces(namespaces: list[Namespace], channel: Channel, time_offsets: dict[str, Any] | None) -> None:
    """Join and create the plan's namespaces: a user namespace first (joined, or new with its
    maps written by the parent), then the other joins, mount last, then the new ones at once."""
    # Open every path first: after setns(mnt) the paths would resolve in the container's mounts.
    joins = []
    for ns in namespaces:
        if ns.path is not None:
            try:
                fd = posix.open(ns.path, posix.O_RDONLY | posix.O_CLOEXEC)
            except OSError as err:
                raise ContainerStartError(f"cannot open {ns.type} namespace {ns.path}: {err.strerror}") from None
            joins.append((ns.type, fd, ns.path))
        elif ns.fd >= 0:
            joins.append((ns.type, ns.fd, f"(fd {ns.fd})"))
    joins.sort(key=lambda j: (j[0] != "user", j[0] == "mount"))
    new_flags = 0
    for ns in namespaces:
        if not ns.joined:
            new_flags |= NAMESPACE_FLAGS[ns.type]
    if joins and joins[0][0] == "user":
        _setns(*joins.pop(0))
    elif new_flags & linux.CLONE_NEWUSER:
        _new_user_namespace(channel)
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


def _finish_born_namespaces(namespaces: list[Namespace], channel: Channel, maps_unasked: bool) -> None:
    """Born in new namespaces (_born_namespaces): a new user namespace's maps, written by the
    parent (unasked: see _maps_unasked), and root in it; then non-dumpable, as _enter_namespaces
    leaves it."""
    if maps_unasked:
        channel.expect("ok")
        _become_root_in_user_namespace()
    elif any(ns.type == "user" for ns in namespaces):
        linux.prctl(linux.PR_SET_DUMPABLE, 1)  # rootless: for the maps (see _new_user_namespace)
        _map_user_namespace(channel, "born")
    linux.prctl(linux.PR_SET_DUMPABLE, 0)


def _map_user_namespace(channel: Channel, born: str = "") -> None:
    """Our new user namespace's maps, written by the parent ("userns" ... "ok"); root in it.
    born: "born" when this process was born in its namespaces (the parent then sends "go" too)."""
    channel.send("userns", born)
    channel.expect("ok")
    _become_root_in_user_namespace()


def _become_root_in_user_namespace() -> None:
    posix.setresgid(0, 0, 0)
    posix.setresuid(0, 0, 0)


def _new_user_namespace(channel: Channel) -> None:
    """unshare(CLONE_NEWUSER), the maps written by the parent ("userns" ... "ok"), root in it."""
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
        # namespaces are set up (end of _enter_namespaces), as runc's nsexec. Nothing of the
        # container runs yet.
        linux.prctl(linux.PR_SET_DUMPABLE, 1)
    _map_user_namespace(channel)


def _write_time_offsets(offsets: dict[str, Any]) -> None:
    """Clock offsets of a new time namespace: settable only before a process enters it."""
    lines = "".join(f"{clock} {value.get('secs', 0)} {value.get('nanosecs', 0)}\n" for clock, value in offsets.items())
    try:
        procfs.write_file("/proc/self/timens_offsets", lines)
    except OSError as err:
        raise ContainerStartError(f"linux.timeOffsets: cannot set the clock offsets: {err.strerror}") from None


def _setns(kind: str, fd: int, where: str) -> None:
    try:
        linux.setns(fd, NAMESPACE_FLAGS[kind])
    except OSError as err:
        raise ContainerStartError(f"cannot join {kind} namespace {where}: {err.strerror}") from None
    finally:
        posix.close(fd)
