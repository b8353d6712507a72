"""Creating a container: one sequence of named steps, driven by a typed configuration.

    validate(config) -> Prepared          config.json read and checked, the rootfs found, the
                                          cgroup chosen; nothing is touched yet
    allocate(store, prepared) -> Allocation
                                          the state directory (locked); a cgroup that a manager
                                          or a rootless caller makes, made
    make_cgroup(allocation)               capsa's own cgroup made: by the launch, before the
                                          init's child is born in it or joins it (a planned
                                          init's child that joins it is cloned first, and makes
                                          its namespaces meanwhile)
    record_creating(allocation)           the record "creating", with what capsa made of the
                                          cgroup: written by the launch once it has cloned the
                                          init's child
    launch(allocation)                    the process started, its pid in allocation.pid: the
                                          init (launch_init: capsa.launch's plan for a container
                                          or a sandbox member), or CRIU's restored tree (restore)
    commit(allocation)                    the record says allocation.status ("created"; restore:
                                          "running") and names the init, the config is kept
                                          beside it (both written while a planned init sets
                                          itself up, if it is one); the lock is released
    abandon(allocation)                   the one clean-up, for a failure anywhere after
                                          allocate: the init killed, the cgroup capsa made
                                          removed, the record removed

create(store, prepared, launch, status) runs allocate, launch and commit, and abandon on any
failure: Container.create (capsa create and run), checkpoint.restore and sandbox members go
through it. The library reads no environment and writes no pid file: socket activation
(LISTEN_FDS), --preserve-fds and --pid-file are the command line's (capsa.cli.create), which
gives their result here as CreateConfig.inherited_fds and listen_fds.
"""

from __future__ import annotations

import posix

from capsa import OCI_VERSION, posixlite, procfs
from capsa import state as st
from capsa.errors import CapsaError, ConfigError, UnsupportedError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from capsa.cgroups import Cgroup
    from capsa.launch import Console


class CreateConfig:
    """What to create: the container `id` from the bundle at `bundle`.

    spec: config.json already read and validated (capsa.spec.validate); None: read from the bundle.
    console: where the pty master goes when process.terminal is true (capsa.launch.Console).
    inherited_fds: how many fds after stdio the container inherits (they must be open);
        listen_fds: how many of them, the first ones, are socket-activation listeners (the process
        gets LISTEN_FDS and LISTEN_PID), None when there is no socket activation.
    no_pivot: move the rootfs onto / instead of pivot_root (rootfs on a ramfs).
    no_new_keyring: keep the caller's session keyring.
    rootless_cgroups: a cgroup the caller may not create is skipped, unless linux.cgroupsPath names
        it (runc's rootless cgroup manager); None, the default: when capsa is not root or runs in
        a user namespace (runc's --rootless=auto).
    systemd_cgroup: the cgroup is a systemd scope unit, made over D-Bus (capsa/cgroups/systemd.py);
        linux.cgroupsPath is then slice:prefix:name.
    cgroup_parent: a sandbox's cgroup (capsa.cgroups.parent): the container's cgroup is its
        child(id), and linux.cgroupsPath is not used.
    join_namespaces: namespace type -> path the container joins (a sandbox's), whatever
        linux.namespaces says of that type; the config kept with the container says so too.
    warn: called with the text of each setting the host ignores (memory.kernel, unknown capabilities).
    stdio: the init's fds 0-2, fds of the caller's above 2 (None: the caller's own 0-2, as runc).
    exec_at_once: the init execs as soon as it is set up, without waiting for start (the
        record then says "created" of a running container: for a caller that deletes it itself).
    serve: instead of exec'ing, the set-up init calls serve(plan, seccomp_filter, trampoline_fd)
        (capsa.api.agent); it never returns. Library use only, as exec_at_once.
    cgroup_controllers: on cgroup v1 (and hybrid) hosts, the container gets a directory only in
        the hierarchies that hold one of these controllers (None: in every one, as runc); a
        library caller that knows what it uses (the Python API) makes and removes fewer.
    """

    __slots__ = ("id", "bundle", "spec", "console", "inherited_fds", "listen_fds", "no_pivot", "no_new_keyring",
                 "rootless_cgroups", "systemd_cgroup", "cgroup_parent", "join_namespaces", "warn", "stdio",
                 "exec_at_once", "serve", "cgroup_controllers")

    def __init__(
        self, id: str, bundle: str, *, spec: dict[str, Any] | None = None, console: Console | None = None,
        inherited_fds: int = 0, listen_fds: int | None = None, no_pivot: bool = False, no_new_keyring: bool = False,
        rootless_cgroups: bool | None = None, systemd_cgroup: bool = False, cgroup_parent: Cgroup | None = None,
        join_namespaces: dict[str, str] | None = None, warn: Callable[[str], None] | None = None,
        stdio: tuple[int, int, int] | None = None, exec_at_once: bool = False, serve: Callable[..., Any] | None = None,
        cgroup_controllers: frozenset[str] | None = None,
    ):
        self.id = id
        self.bundle = bundle
        self.spec = spec
        self.console = console
        self.inherited_fds = inherited_fds
        self.listen_fds = listen_fds
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.rootless_cgroups = rootless_cgroups
        self.systemd_cgroup = systemd_cgroup
        self.cgroup_parent = cgroup_parent
        self.join_namespaces = join_namespaces
        self.warn = warn
        self.stdio = stdio
        self.exec_at_once = exec_at_once
        self.serve = serve
        self.cgroup_controllers = cgroup_controllers


class Prepared:
    """A validated CreateConfig: the config, the bundle's absolute path, the rootfs, the cgroup
    (not made yet; None: the container runs in the caller's) and the rootless-cgroups decision."""

    __slots__ = ("config", "id", "bundle", "spec", "rootfs", "cgroup", "rootless_cgroups")

    def __init__(self, *, config: CreateConfig, bundle: str, spec: dict[str, Any], rootfs: str, cgroup: Cgroup | None,
                 rootless_cgroups: bool):
        self.config = config
        self.id = config.id
        self.bundle = bundle
        self.spec = spec
        self.rootfs = rootfs
        self.cgroup = cgroup
        self.rootless_cgroups = rootless_cgroups


class Allocation:
    """What allocate made for a container, and what abandon undoes: its state directory (locked
    until commit), its record, its cgroup, and, once launched, its init's pid."""

    __slots__ = ("store", "prepared", "directory", "record", "cgroup", "lock", "pid", "status", "recorded")

    def __init__(self, store: st.StateStore, prepared: Prepared):
        self.store = store
        self.prepared = prepared
        self.directory = store.path(prepared.id)
        self.record: dict[str, Any] = {}
        self.cgroup: Cgroup | None = None
        self.lock: st.ContainerLock | None = None
        self.pid = 0
        self.status = st.CREATED  # what commit records (create sets it)
        self.recorded = False  # the committed record and the config are written (_record_launch)

    @property
    def id(self) -> str:
        return self.prepared.id


# -- the sequence ---------------------------------------------------------------------------------
def create(store: st.StateStore, prepared: Prepared, launch: Callable[[Allocation], None] | None = None,
           status: str = st.CREATED) -> Allocation:
    """allocate, launch (launch_init unless given), commit with `status`; abandon on any failure,
    so that nothing of a failed create remains."""
    allocation = allocate(store, prepared)
    allocation.status = status
    try:
        if launch is None:
            launch_init(allocation)  # makes the cgroup and writes the record "creating" on the way
        else:
            make_cgroup(allocation)
            record_creating(allocation)
            launch(allocation)
        commit(allocation)
    except BaseException:
        abandon(allocation)
        raise
    return allocation


def validate(config: CreateConfig) -> Prepared:
    """Check everything that can be checked before anything is made; touch nothing."""
    from capsa import launch, rootless
    from capsa import spec as specmod
    from capsa.caps import warn_unavailable

    # First of all, before any fd of ours exists: the fds the container inherits must all be open.
    launch.require_inherited_fds(config.inherited_fds)
    bundle = posixlite.abspath(config.bundle)
    st.validate_id(config.id)
    spec = config.spec if config.spec is not None else specmod.load_bundle(bundle)
    if config.join_namespaces:
        spec = specmod.with_joined_namespaces(spec, config.join_namespaces)
    specmod.refuse_unsupported(spec)
    warn_unavailable(spec["process"], spec, config.warn)
    if posix.geteuid() != 0:
        rootless.check_spec(spec)
    rootless.check_mapped(spec)
    rootless_cgroups = config.rootless_cgroups
    if rootless_cgroups is None:
        rootless_cgroups = rootless.rootless_cgroups("auto")
    rootfs = rootfs_path(bundle, spec)
    cgroup = _choose_cgroup(config, spec, rootless_cgroups)
    return Prepared(config=config, bundle=bundle, spec=spec, rootfs=rootfs, cgroup=cgroup, rootless_cgroups=rootless_cgroups)


def allocate(store: st.StateStore, prepared: Prepared) -> Allocation:
    """The container's state directory, locked; its record, "creating", made (record_creating
    writes it). A rootless caller's cgroup is made here (what it may not make is dropped, or an
    error); capsa's own is left to make_cgroup, and a manager's (systemd) to the launch, which
    makes it with the init in it."""
    try:
        store.create(prepared.id)
    except PermissionError as err:
        if posix.geteuid() == 0:
            raise
        raise CapsaError(
            f"cannot create the container's state in {store.root}: {err.strerror}: capsa is not root; set "
            "XDG_RUNTIME_DIR (the state then goes to $XDG_RUNTIME_DIR/capsa) or give --root"
        ) from None
    allocation = Allocation(store, prepared)
    try:
        allocation.cgroup = cgroup = prepared.cgroup
        if cgroup is not None and not cgroup.placed_by_manager and prepared.rootless_cgroups:
            allocation.cgroup = _rootless_cgroup(cgroup, prepared.spec)
        allocation.lock = store.lock(prepared.id)
        allocation.lock.__enter__()
        allocation.record = _new_record(prepared)
        allocation.record.update(allocation.cgroup.record() if allocation.cgroup is not None else {"cgroupPaths": {}})
    except BaseException:
        abandon(allocation)
        raise
    return allocation


def make_cgroup(allocation: Allocation) -> None:
    """capsa's own cgroup for the container (not a manager's, not a rootless caller's: allocate
    made those), made before the record names it, so that the record says which directories
    capsa made: delete removes those, and leaves one that was there before (joined)."""
    cgroup = allocation.cgroup
    if cgroup is None or cgroup.placed_by_manager or allocation.prepared.rootless_cgroups:
        return
    cgroup.create()
    allocation.record.update(cgroup.record())


def record_creating(allocation: Allocation) -> None:
    """Write the record "creating" (the config is written with the committed record). Until
    then the directory has no record: a creator that dies before it is cleaned up as one that
    died before its record (capsa.api.session), or by delete."""
    allocation.store.write(allocation.id, allocation.record)


def launch_init(allocation: Allocation) -> None:
    """Start the container's init (capsa.launch), which waits, set up, for `start` on the start
    socket in the state directory."""
    from capsa import launch

    prepared = allocation.prepared
    config = prepared.config
    # No start socket for an init that is never started: it execs at once, or serves (-1).
    listen_fd = -1 if config.exec_at_once or config.serve is not None else _start_listener(allocation.directory)
    try:
        arguments = dict(
            spec=prepared.spec, rootfs=prepared.rootfs, container_id=prepared.id, listen_fd=listen_fd,
            # runc and the runtime-tools validation suite give create-time hooks the status "created".
            state=st.hook_state(allocation.record, st.CREATED), cgroup=allocation.cgroup, console=config.console,
            inherited_fds=config.inherited_fds, listen_fds=config.listen_fds, no_pivot=config.no_pivot,
            no_new_keyring=config.no_new_keyring, rootless_cgroups=prepared.rootless_cgroups, warn=config.warn,
            seccomp_cache=posixlite.join(allocation.store.root, st.SECCOMP_CACHE),
            stdio=config.stdio, exec_at_once=config.exec_at_once, serve=config.serve,
        )
        if config.join_namespaces:
            plan = launch.plan_for_member(config.join_namespaces, **arguments)
        else:
            plan = launch.plan_for_container(**arguments)
        plan.make_cgroup = lambda: make_cgroup(allocation)
        plan.cloned = lambda: record_creating(allocation)
        plan.meanwhile = lambda pid: _record_launch(allocation, pid)
        # The allocation's own cgroup object: what the launch learns (did systemd start the
        # unit?) commit records and abandon needs.
        allocation.pid = launch.start(plan)
    finally:
        if listen_fd >= 0:
            posix.close(listen_fd)  # ours: the init has its own copy


def commit(allocation: Allocation) -> None:
    """The record says allocation.status and names the init (pid and start time), the config is
    kept beside it (unless the launch had them written already); the lock is released."""
    if not allocation.recorded:
        _record_launch(allocation, allocation.pid)
    _unlock(allocation)


def _record_launch(allocation: Allocation, pid: int) -> None:
    """Write the container's config and its committed record (allocation.status, the init's pid):
    at commit, or earlier, while a planned init sets itself up (launch calls plan.meanwhile, the
    parent having nothing else to do then). A launch that fails after it is abandoned all the
    same: the directory goes, record and config with it."""
    record = allocation.record
    record.update(status=allocation.status, pid=pid, pidStartTime=procfs.start_time(pid))
    if allocation.cgroup is not None:
        record.update(allocation.cgroup.record())  # a cgroup systemd made in the launch is now known to be ours
    record.pop("creator", None)
    from capsa import linux  # loaded already: every launch goes through it

    allocation.store.write_config(allocation.id, allocation.prepared.spec)
    allocation.store.write(allocation.id, record, exchange=linux.exchange)
    allocation.recorded = True


def abandon(allocation: Allocation) -> None:
    """Undo a create that failed after allocate: kill the init if there is one (and wait until it
    is dead, so that its cgroup can go), remove the cgroup capsa made, then the record."""
    if allocation.pid:
        from capsa.launch import kill_init

        # Left alive, the init would wait in accept() for ever, holding the caller's stdio.
        kill_init(allocation.pid)
        allocation.pid = 0
    if allocation.cgroup is not None:
        try:
            allocation.cgroup.destroy()  # only what capsa made: a joined cgroup stays
        except CapsaError:
            pass
    allocation.store.remove(allocation.id)
    _unlock(allocation)


# -- the steps' parts -----------------------------------------------------------------------------
def rootfs_path(bundle: str, spec: dict[str, Any]) -> str:
    path = posixlite.realpath(posixlite.join(bundle, spec["root"]["path"]))
    if not posixlite.isdir(path):
        raise ConfigError("root.path", f"{path} does not exist or is not a directory")
    return path


def _choose_cgroup(config: CreateConfig, spec: dict[str, Any], rootless_cgroups: bool) -> Cgroup | None:
    from capsa import cgroups

    if config.systemd_cgroup and rootless_cgroups:
        raise UnsupportedError("--systemd-cgroup: capsa drives only the system instance of systemd, as root "
                               "(not a user's systemd, not inside a user namespace)")
    if config.cgroup_parent is not None:
        return config.cgroup_parent.child(config.id)
    try:
        return cgroups.for_spec(spec, config.id, systemd=config.systemd_cgroup, controllers=config.cgroup_controllers)
    except UnsupportedError:
        # A cgroup v2-only host: rootless, a container that asks for no cgroup and no limits
        # runs without one, as it would on a host where it may not create any.
        if not rootless_cgroups or (spec.get("linux") or {}).get("cgroupsPath") or _has_limits(spec):
            raise
        return None


def _has_limits(spec: dict[str, Any]) -> bool:
    resources = (spec.get("linux") or {}).get("resources") or {}
    return any(value for key, value in resources.items() if key != "devices")


def _rootless_cgroup(cgroup: Cgroup, spec: dict[str, Any]) -> Cgroup | None:
    """runc's rootless cgroupfs manager: a hierarchy the caller may not make the container's
    directory in (or not move a process into) is dropped, and the container stays in the
    caller's cgroup there; unless linux.cgroupsPath asked for that cgroup, then it is an error.
    Limits for a dropped hierarchy are an error too: they would silently not apply.
    Returns the cgroup, or None if nothing is left of it."""
    from capsa.cgroups import v1_settings

    linux_spec = spec.get("linux") or {}
    dropped = cgroup.create(ignore_denied=not linux_spec.get("cgroupsPath"))
    resources = {k: v for k, v in (linux_spec.get("resources") or {}).items() if k != "devices"}
    for field, controller, _, _ in v1_settings(resources, with_devices=False):
        if cgroup.path_for(controller) is None and any(controller in c.split(",") for c in dropped):
            raise ConfigError(
                field,
                f"cannot set {controller} limit: container could not join or create cgroup "
                "(capsa is rootless and may not create cgroups there; give it a delegated, writable one "
                "in linux.cgroupsPath)",
            )
    if not cgroup.paths and resources:  # cgroup v2: the one directory was given up
        raise ConfigError(
            "linux.resources",
            "cannot set limits: container could not join or create cgroup (capsa is rootless and may "
            "not create cgroups there; give it a delegated, writable one in linux.cgroupsPath)",
        )
    return cgroup if cgroup.paths else None


def _new_record(prepared: Prepared) -> dict[str, Any]:
    spec = prepared.spec
    return {
        "id": prepared.id,
        "ociVersion": spec.get("ociVersion", OCI_VERSION),
        "status": st.CREATING,
        "pid": 0,
        "bundle": prepared.bundle,
        "rootfs": prepared.rootfs,
        "created": st.now_rfc3339(),
        "annotations": spec.get("annotations") or {},
        "creator": _creator(),
        "hooks": {k: v for k, v in (spec.get("hooks") or {}).items() if k in ("poststart", "poststop") and v},
    }


def _creator() -> dict[str, Any]:
    pid, started = procfs.own_identity()
    return {"pid": pid, "startTime": started}


def _unlock(allocation: Allocation) -> None:
    if allocation.lock is not None:
        allocation.lock.__exit__(None, None, None)
        allocation.lock = None


def _start_listener(directory: str) -> int:
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    dirfd = posix.open(directory, posix.O_PATH | posix.O_CLOEXEC)
    try:
        # Through /proc/self/fd the path stays short whatever the length of --root (sun_path is 108 bytes).
        sock.bind(f"/proc/self/fd/{dirfd}/{st.START_SOCKET}")
        sock.listen(1)
    except BaseException:
        sock.close()
        raise
    finally:
        posix.close(dirfd)
    return sock.detach()

