"""The Container: create, start, kill, delete and state, as runc's libcontainer offers them.

This is the library the CLI, and later sandboxes and the manager, stand on. It raises CapsaError
subclasses with messages meant for users and never prints.
"""

from __future__ import annotations

import posix
import time

from capsa import OCI_VERSION, posixlite, procfs
from capsa import state as st
from capsa.errors import CapsaError, ConfigError, UnsupportedError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

    from capsa.cgroups import Cgroup

DEFAULT_ROOT = "/run/capsa"
# Why a container may have no cgroup at all.
_NO_CGROUP_HINT = " (a rootless container gets one only where the caller may create it: see docs/rootless.md)"


class Container:
    """One container as recorded under the state root."""

    def __init__(self, store: st.StateStore, record: dict[str, Any], spec: dict[str, Any] | None = None):
        self.store = store
        self.record = record
        self._spec = spec

    # -- lookup ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: str, id_or_prefix: str) -> Container:
        store = st.StateStore(root)
        container_id = store.resolve(id_or_prefix)
        return cls(store, store.read(container_id))

    @classmethod
    def list(cls, root: str, warn: Any = None) -> list[Container]:
        store = st.StateStore(root)
        return [cls(store, record) for record in store.iter_records(warn)]

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def pid(self) -> int:
        return self.record.get("pid") or 0

    @property
    def directory(self) -> str:
        return self.store.path(self.id)

    @property
    def spec(self) -> dict[str, Any]:
        """The container's config.json as it was at create (kept beside the state, read on demand)."""
        if self._spec is None:
            self._spec = self.store.read_config(self.id)
        return self._spec

    def _hook_spec(self) -> dict[str, Any]:
        # start and delete run hooks from the small copy in the record, not the whole config.
        return {"hooks": self.record.get("hooks") or {}}

    def _run_hooks(self, phase: str, status: str, warn: Any) -> None:
        """poststart or poststop: each failure is a warning. capsa.hooks is loaded only when the
        container has hooks of that phase (most have none)."""
        if not (self.record.get("hooks") or {}).get(phase):
            return
        from capsa import hooks

        hooks.run_hooks(self._hook_spec(), phase, self.hook_state(status), warn=warn or _ignore)

    def cgroup(self) -> Cgroup | None:
        from capsa.cgroups import from_record

        return from_record(self.record)

    # -- status ----------------------------------------------------------------------------------
    def status(self) -> str:
        """The live status: the recorded one, or stopped once the init is gone."""
        recorded = self.record["status"]
        if recorded == st.STOPPED:
            return st.STOPPED
        if recorded == st.CREATING:
            creator = self.record.get("creator") or {}
            if procfs.is_alive(creator.get("pid", 0), creator.get("startTime")):
                return st.CREATING
            return st.STOPPED
        if procfs.is_alive(self.pid, self.record.get("pidStartTime")):
            return recorded
        return st.STOPPED

    def state(self) -> dict[str, Any]:
        """The OCI state of the container, with runc's extra fields (rootfs, created, owner)."""
        status = self.status()
        result: dict[str, Any] = {
            "ociVersion": self.record.get("ociVersion", OCI_VERSION),
            "id": self.id,
            "pid": self.pid if status not in (st.STOPPED, st.CREATING) else 0,
            "status": status,
            "bundle": self.record["bundle"],
            "rootfs": self.record["rootfs"],
            "created": self.record["created"],
            "owner": "",
        }
        if self.record.get("annotations"):
            result["annotations"] = self.record["annotations"]
        return result

    def hook_state(self, status: str) -> dict[str, Any]:
        """The state hooks receive on stdin (the runtime-spec's fields only)."""
        result = {"ociVersion": self.record.get("ociVersion", OCI_VERSION), "id": self.id,
                  "status": status, "pid": self.pid, "bundle": self.record["bundle"]}
        if self.record.get("annotations"):
            result["annotations"] = self.record["annotations"]
        return result

    # -- create ----------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: str,
        container_id: str,
        bundle: str,
        *,
        console_socket: str | None = None,
        console_fd: int | None = None,
        pid_file: str | None = None,
        no_pivot: bool = False,
        no_new_keyring: bool = False,
        preserve_fds: int = 0,
        spec: dict[str, Any] | None = None,
        rootless_cgroups: bool | None = None,
        systemd_cgroup: bool = False,
        warn: Any = None,
    ) -> Container:
        """Create a container whose init waits, fully set up, for start().

        rootless_cgroups (runc's --rootless; None: when not root or in a user namespace):
        a cgroup the caller may not create is skipped unless linux.cgroupsPath names it.
        systemd_cgroup (runc's --systemd-cgroup): the cgroup is a systemd scope unit, made over
        D-Bus (capsa/cgroups/systemd.py); linux.cgroupsPath is then slice:prefix:name.
        warn: called with the text of each setting the host ignores (memory.kernel, unknown
        capabilities).
        """
        from capsa import launch, rootless
        from capsa import spec as specmod

        # First of all, before any fd of ours exists: the fds the container inherits must all be open.
        launch.check_inherited_fds(preserve_fds)
        bundle = posixlite.abspath(bundle)
        st.validate_id(container_id)
        if spec is None:
            spec = specmod.load_bundle(bundle)
        refuse_unsupported(spec)
        _warn_unavailable_capabilities(spec["process"], spec, warn)
        if posix.geteuid() != 0:
            rootless.check_spec(spec)
        rootless.check_mapped(spec)
        if rootless_cgroups is None:
            rootless_cgroups = posix.geteuid() != 0 or rootless.running_in_userns()
        rootfs_path = _rootfs_path(bundle, spec)
        from capsa import cgroups

        if systemd_cgroup and rootless_cgroups:
            raise UnsupportedError("--systemd-cgroup: capsa drives only the system instance of systemd, as root "
                                   "(not a user's systemd, not inside a user namespace)")
        try:
            cgroup = cgroups.for_spec(spec, container_id, systemd=systemd_cgroup)
        except UnsupportedError:
            # A cgroup v2-only host: rootless, a container that asks for no cgroup and no limits
            # runs without one, as it would on a host where it may not create any.
            if not rootless_cgroups or (spec.get("linux") or {}).get("cgroupsPath") or _has_limits(spec):
                raise
            cgroup = None
        store = st.StateStore(root)
        try:
            store.create(container_id)
        except PermissionError as err:
            if posix.geteuid() == 0:
                raise
            raise CapsaError(
                f"cannot create the container's state in {root}: {err.strerror}: capsa is not root; set "
                "XDG_RUNTIME_DIR (the state then goes to $XDG_RUNTIME_DIR/capsa) or give --root"
            ) from None
        try:
            if cgroup is not None and not cgroup.placed_by_manager:
                # Made before the record names it, so that the record says which directories capsa
                # made: delete removes those, and leaves one that was there before (joined).
                if rootless_cgroups:
                    cgroup = _rootless_cgroup(cgroup, spec)
                else:
                    cgroup.create()
            with store.lock(container_id):
                container = cls(store, _new_record(container_id, bundle, rootfs_path, spec), spec)
                container.record.update(cgroup.record() if cgroup is not None else {"cgroupPaths": {}})
                store.write_config(container_id, spec)
                store.write(container_id, container.record)
                container._launch(
                    rootfs_path, console_socket, console_fd, preserve_fds, cgroup, no_pivot=no_pivot,
                    no_new_keyring=no_new_keyring, rootless_cgroups=rootless_cgroups, warn=warn,
                )
        except BaseException:
            # Nothing of a failed create may remain: the launcher killed the init; drop its
            # cgroup and the record.
            if cgroup is not None:
                _destroy_quietly(cgroup)
            store.remove(container_id)
            raise
        if pid_file:
            try:
                _write_pid_file(pid_file, container.pid)
            except OSError as err:
                container.delete(force=True)
                raise CapsaError(f"cannot write pid file {pid_file}: {err.strerror}") from None
        return container

    def _launch(
        self, rootfs_path: str, console_socket: str | None, console_fd: int | None, preserve_fds: int, cgroup: Cgroup | None,
        **flags: Any,
    ) -> None:
        from capsa import launch

        # runc and the runtime-tools validation suite give create-time hooks the status "created".
        hook_state = self.hook_state(st.CREATED)
        options = launch.LaunchOptions(
            console_socket=console_socket, console_fd=console_fd, preserve_fds=preserve_fds, **flags,
            state_dir=self.directory, container_id=self.id, bundle=self.record["bundle"], state=hook_state,
            seccomp_cache=posixlite.join(self.store.root, st.SECCOMP_CACHE),
        )
        listen_fd = _start_listener(self.directory)
        try:
            # create's own cgroup object: what launch learns (did systemd start the unit?) the
            # clean-up of a failed create needs.
            pid = launch.spawn_init(self.spec, rootfs_path, options, listen_fd, cgroup)
        finally:
            posix.close(listen_fd)  # ours: the init has its own copy
        try:
            self.record.update(status=st.CREATED, pid=pid, pidStartTime=procfs.start_time(pid))
            if cgroup is not None:
                self.record.update(cgroup.record())  # a cgroup systemd made in the launch is now known to be ours
            self.record.pop("creator", None)
            self.store.write(self.id, self.record)
        except BaseException:
            # Left alive, the init would wait in accept() for ever, holding the caller's stdio.
            launch.kill_init(pid)
            raise

    # -- start -----------------------------------------------------------------------------------
    def start(self, warn: Any = None) -> None:
        """Release the waiting init to exec the user's program, then run poststart hooks."""
        with self.store.lock(self.id):
            self._reload()
            st.check_transition("start", self.id, self.status())
            _signal_start(self.directory)
            self.record["status"] = st.RUNNING
            self.store.write(self.id, self.record)
        st.unlink_quietly(posixlite.join(self.directory, st.START_SOCKET))
        self._run_hooks("poststart", st.RUNNING, warn)

    # -- kill ------------------------------------------------------------------------------------
    def kill(self, signal: int, all_processes: bool = False) -> None:
        status = self.status()
        if all_processes and status == st.STOPPED:
            self._kill_leftovers(signal)
            return
        st.check_transition("kill", self.id, status)
        try:
            if all_processes:
                self._kill_all(signal)
                return
            posix.kill(self.pid, signal)
        except ProcessLookupError:
            raise st.StateError(f"container {self.id} is not running") from None
        except PermissionError:
            raise self._signal_refused(signal) from None

    def _signal_refused(self, signal: int) -> CapsaError:
        """Root's signal refused: an LSM's doing (AppArmor mediates signals on the receiving side too)."""
        profile = (self.spec.get("process") or {}).get("apparmorProfile")
        hint = (f": its AppArmor profile {profile!r} must let it receive signals from capsa, which is unconfined "
                "(`signal (receive) peer=unconfined,` as docker's profile has)") if profile else ": refused by a security module"
        return CapsaError(f"container {self.id}: the kernel refused signal {signal}{hint}")

    def _kill_leftovers(self, signal: int) -> None:
        """kill --all once the init has exited: signal what is left in its cgroup, and succeed, as runc does.

        Processes of a container without a pid namespace of its own (a Kubernetes pod's shared one, --pid host)
        outlive its init. containerd's runc.v2 shim calls `kill --all ID 9` right after such an init exits and
        fails the task (CRI's StopContainer with it) if that call fails.
        """
        cgroup = self.cgroup()
        if cgroup is not None and cgroup.pids():
            self._kill_all(signal)

    def _kill_all(self, signal: int) -> None:
        """Signal every process in the container's cgroup, frozen so that none can fork away."""
        cgroup = self.cgroup()
        if cgroup is None:
            raise UnsupportedError(f"container {self.id} has no cgroup to find its processes in{_NO_CGROUP_HINT}")
        cgroup.kill_all(signal)

    def processes(self) -> list[int]:
        """Host pids of every process in the container (from its cgroup)."""
        cgroup = self.cgroup()
        if self.status() == st.STOPPED:
            return []
        if cgroup is None:
            raise UnsupportedError(f"container {self.id} has no cgroup to find its processes in{_NO_CGROUP_HINT}")
        return cgroup.pids()

    # -- exec ------------------------------------------------------------------------------------
    def exec(
        self,
        process: dict[str, Any],
        *,
        console_socket: str | None = None,
        console_fd: int | None = None,
        preserve_fds: int = 0,
        ignore_paused: bool = False,
        sub_cgroup: str | None = None,
        warn: Any = None,
    ) -> int:
        """Run `process` (an OCI Process, validated) in the running container; return its host pid.

        warn: called with the text of each setting that is ignored (unknown capabilities)."""
        from capsa import launch
        from capsa.spec import validate_process

        launch.check_inherited_fds(preserve_fds)  # before any fd of ours exists, as in create
        validate_process(process)
        _refuse_unsupported_process(process, "process")
        _warn_unavailable_capabilities(process, self.spec, warn)
        self._check_process_ids(process)
        status = self.status()
        if not (ignore_paused and status == st.PAUSED):
            st.check_transition("exec", self.id, status)
        cgroup = self.cgroup()
        if cgroup is not None and sub_cgroup:
            cgroup = cgroup.sub(sub_cgroup)
        options = launch.LaunchOptions(console_socket=console_socket, console_fd=console_fd, preserve_fds=preserve_fds,
                                       state=self.hook_state(st.RUNNING),
                                       seccomp_cache=posixlite.join(self.store.root, st.SECCOMP_CACHE))
        # The exec'd process gets the container's seccomp filter and memory policy, as runc does.
        linux_spec = self.spec.get("linux") or {}
        return launch.spawn_tenant(self.pid, process, options, cgroup, linux_spec.get("seccomp"), linux_spec.get("memoryPolicy"))

    def _check_process_ids(self, process: dict[str, Any]) -> None:
        from capsa import rootless

        linux_spec = self.spec.get("linux") or {}
        rootless.check_mapped(self.spec, process)
        if (process.get("user") or {}).get("additionalGids") and rootless.setgroups_denied(linux_spec):
            raise ConfigError("process.user.additionalGids", "cannot set additional groups in a rootless container "
                              "that maps only the caller's own gid (setgroups is denied in its user namespace)")

    # -- resources -----------------------------------------------------------------------------
    def update(self, resources: dict[str, Any], warn: Any = None) -> None:
        """Change the container's cgroup limits (an OCI LinuxResources object) while it runs.

        warn: called with the text of each setting the host ignores (memory.kernel)."""
        with self.store.lock(self.id):
            self._reload()
            status = self.status()
            if status == st.STOPPED:
                raise st.StateError(f"container {self.id} is not running: cannot update it")
            cgroup = self._require_cgroup("update")
            cgroup.update({k: v for k, v in resources.items() if k != "devices"}, warn=warn)
            spec = self.spec
            merged = spec.setdefault("linux", {}).setdefault("resources", {})
            for key, value in resources.items():
                merged[key] = dict(merged.get(key) or {}, **value) if isinstance(value, dict) else value
            self.store.write_config(self.id, spec)

    def stats(self) -> dict[str, Any]:
        from capsa.cgroups import stats

        if self.status() == st.STOPPED:
            raise st.StateError(f"container {self.id} is not running")
        data = stats(self._require_cgroup("read the statistics of"))
        interfaces = procfs.network_interfaces(self.pid)
        if interfaces:
            data["network_interfaces"] = interfaces
        return data

    # -- pause / resume --------------------------------------------------------------------------
    def pause(self) -> None:
        with self.store.lock(self.id):
            self._reload()
            st.check_transition("pause", self.id, self.status())
            self._require_cgroup("pause").freeze()
            self.record["status"] = st.PAUSED
            self.store.write(self.id, self.record)

    def resume(self) -> None:
        with self.store.lock(self.id):
            self._reload()
            st.check_transition("resume", self.id, self.status())
            self._require_cgroup("resume").thaw()
            self.record["status"] = st.RUNNING
            self.store.write(self.id, self.record)

    def _require_cgroup(self, operation: str) -> Cgroup:
        cgroup = self.cgroup()
        if cgroup is None or (operation in ("pause", "resume") and not cgroup.can_freeze()):
            raise UnsupportedError(
                f"cannot {operation} container {self.id}: no {'freezer ' if operation in ('pause', 'resume') else ''}cgroup"
                f"{_NO_CGROUP_HINT if cgroup is None else ''}"
            )
        return cgroup

    # -- checkpoint / restore (CRIU) -------------------------------------------------------------
    def checkpoint(self, criu: str, options: Any) -> None:
        """Dump the container with CRIU (capsa.checkpoint.CriuOptions); see capsa.checkpoint."""
        from capsa import checkpoint

        checkpoint.checkpoint(self, criu, options)

    @classmethod
    def restore(cls, root: str, container_id: str, bundle: str, criu: str, options: Any, *,
                console_socket: str | None = None, pid_file: str | None = None) -> Container:
        """A new, running container `container_id` restored by CRIU from options.image_path."""
        from capsa import checkpoint

        return checkpoint.restore(root, container_id, bundle, criu, options, console_socket=console_socket,
                                  pid_file=pid_file)

    # -- delete ----------------------------------------------------------------------------------
    def delete(self, force: bool = False, warn: Any = None) -> None:
        """Remove a stopped container; with force, any container (it is killed first).

        As the runtime-spec requires, and unlike runc, deleting a created container without force
        is an error that leaves the container as it was.
        """
        with self.store.lock(self.id):
            self._reload()
            status = self.status()
            if not force:
                st.check_transition("delete", self.id, status)
            if status != st.STOPPED:
                self._kill_and_wait()
            cgroup = self.cgroup()
            if cgroup is not None:
                cgroup.destroy()
            self._run_hooks("poststop", st.STOPPED, warn)
            self.store.remove(self.id)

    def _kill_and_wait(self, timeout: float = 10.0) -> None:
        cgroup = self.cgroup()
        refused = False
        if cgroup is not None:
            if cgroup.is_frozen():
                cgroup.thaw()  # a frozen task cannot die
            for pid in cgroup.pids():
                refused |= not _signal_quietly(pid, 9)
        for pid in (self.pid, (self.record.get("creator") or {}).get("pid", 0)):
            if pid and procfs.is_alive(pid, None if pid != self.pid else self.record.get("pidStartTime")):
                refused |= not _signal_quietly(pid, 9)
        if refused and cgroup is not None:
            # A security module refused (an AppArmor profile that does not let the container receive
            # signals from unconfined): cgroup v2's cgroup.kill is the kernel's own kill, which no LSM checks.
            try:
                cgroup.kill_all(9)
            except PermissionError:
                pass
        deadline = time.monotonic() + timeout
        while procfs.is_alive(self.pid, self.record.get("pidStartTime")):
            if time.monotonic() > deadline:
                if refused:
                    raise self._signal_refused(9)
                raise CapsaError(f"container {self.id}: init {self.pid} did not die after SIGKILL")
            time.sleep(0.002)

    def _reload(self) -> None:
        self.record = self.store.read(self.id)

    # -- waiting (capsa.process) -----------------------------------------------------------------
    def init_process(self):
        """A handle (capsa.process.Process) on the container's init, the same one on every call:
        wait for it, signal it, or select on its pidfd (fileno()). ProcessLookupError once the
        init is gone and cannot be waited for (reaped by someone else)."""
        handle = self.__dict__.get("_init_process")
        if handle is None or handle.pid != self.pid:
            from capsa.process import Process

            handle = self.__dict__["_init_process"] = Process.open(self.pid, self.record.get("pidStartTime"))
        return handle

    def wait(self, timeout: float | None = None):
        """Wait until the init exits (TimeoutError after `timeout` seconds); record how it ended in
        the container's state (see record_exit) and return it (a capsa.process.ExitStatus).

        Its exit code is known only to its parent: a caller that made itself a subreaper before
        creating the container (capsa.process.become_subreaper(), as `capsa run` does), or any
        creator of a container without a pid namespace. Anyone else learns when, not how: the
        status is then ExitStatus.known False. Once recorded, every later wait() returns it.
        """
        recorded = self.exit_status()
        if recorded is not None:
            return recorded
        from capsa.process import ExitStatus

        try:
            process = self.init_process()
        except ProcessLookupError:
            return ExitStatus()  # gone before we looked, reaped by another: neither how nor when is known
        status = process.wait(timeout)
        try:
            self.record_exit(status)
        except st.NotFoundError:
            return status  # deleted meanwhile (delete --force elsewhere): nothing to record it in
        recorded = self.exit_status()  # another waiter may have recorded it first, and known more
        return status if status.known or recorded is None else recorded

    def record_exit(self, status) -> None:
        """Keep how the init ended in state.json, under the lock: exitCode (the shell's number,
        128 + signal if killed), exitSignal, finishedAt (RFC 3339, UTC) and oomKilled (the OOM
        killer killed a process of the container). `capsa state` prints only the OCI state, as
        runc's does: these stay in the record."""
        from capsa.process import oom_kill_count

        with self.store.lock(self.id):
            self._reload()
            if "finishedAt" in self.record:
                return  # the first waiter recorded it
            self.record.update(status.record(), status=st.STOPPED, finishedAt=st.now_rfc3339(),
                               oomKilled=oom_kill_count(self.cgroup()) > 0)
            self.store.write(self.id, self.record)

    def exit_status(self):
        """How the init ended (a capsa.process.ExitStatus), if a waiter recorded it; else None."""
        if "finishedAt" not in self.record:
            return None
        from capsa.process import ExitStatus

        return ExitStatus.from_record(self.record)

    def oom_watch(self):
        """Something to select() on that becomes readable when the container hits its memory limit
        (v1: an eventfd on memory.oom_control; v2: inotify on memory.events), with fired() and
        close(); None without a memory cgroup. See capsa.process.wait_for_oom."""
        cgroup = self.cgroup()
        return None if cgroup is None else cgroup.oom_watch()


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


def delete_leftovers(root: str, container_id: str) -> None:
    """delete --force of a container whose state was never written (or a crash left corrupt):
    remove its directory."""
    try:
        st.validate_id(container_id)
    except CapsaError:
        return
    st.StateStore(root).remove(container_id)


def refuse_unsupported(spec: dict[str, Any]) -> None:
    """Features this version cannot honour fail clearly instead of being ignored."""
    from capsa import mountopts

    linux_spec = spec.get("linux") or {}
    if linux_spec.get("seccomp"):
        from capsa.seccomp import validate_profile

        validate_profile(linux_spec["seccomp"])
    _refuse_unsupported_process(spec.get("process") or {}, "process")
    for key in ("intelRdt", "netDevices"):
        if linux_spec.get(key):
            raise UnsupportedError(f"linux.{key} is not supported by this version of capsa")
    personality = linux_spec.get("personality")
    if personality and (personality.get("domain") not in (None, "LINUX") or personality.get("flags")):
        raise UnsupportedError("linux.personality: domains other than LINUX, and flags, are not supported by this version of capsa")
    if linux_spec.get("mountLabel"):
        from capsa import lsm

        lsm.check_available({}, linux_spec["mountLabel"])
    for index, mount in enumerate(spec.get("mounts") or []):
        if "tmpcopyup" in (mount.get("options") or []):
            raise UnsupportedError(f"mounts[{index}]: tmpcopyup (copy-up mounts) not supported by this version of capsa")
        if mountopts.is_idmapped(mount):
            _refuse_unsupported_idmap(mount, f"mounts[{index}]")


def _refuse_unsupported_idmap(mount: dict[str, Any], field: str) -> None:
    """What capsa cannot do with an idmapped mount (capsa.idmapped makes the others)."""
    from capsa import mountopts

    if not (mount.get("type") == "bind" or mountopts.parse_mount_options(mount.get("options") or []).is_bind):
        raise UnsupportedError(f"{field}: idmapped mounts are supported for bind mounts only (as runc), not for a new "
                               f"{mount.get('type') or 'untyped'} filesystem")
    if posix.geteuid() != 0:
        raise UnsupportedError(f"{field}: idmapped mounts need root: mount_setattr(MOUNT_ATTR_IDMAP) needs "
                               "CAP_SYS_ADMIN over the source's filesystem (runc refuses them in rootless containers too)")


def _refuse_unsupported_process(process: dict[str, Any], field: str) -> None:
    if process.get("execCPUAffinity"):
        raise UnsupportedError(f"{field}.execCPUAffinity is not supported by this version of capsa")
    if process.get("apparmorProfile") or process.get("selinuxLabel"):
        from capsa import lsm

        lsm.check_available(process, None, field)


def _rootfs_path(bundle: str, spec: dict[str, Any]) -> str:
    path = spec["root"]["path"]
    path = posixlite.realpath(posixlite.join(bundle, path))
    if not posixlite.isdir(path):
        raise ConfigError("root.path", f"{path} does not exist or is not a directory")
    return path


def _new_record(container_id: str, bundle: str, rootfs_path: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": container_id,
        "ociVersion": spec.get("ociVersion", OCI_VERSION),
        "status": st.CREATING,
        "pid": 0,
        "bundle": bundle,
        "rootfs": rootfs_path,
        "created": st.now_rfc3339(),
        "annotations": spec.get("annotations") or {},
        "creator": {"pid": posix.getpid(), "startTime": procfs.start_time(posix.getpid())},
        "hooks": {k: v for k, v in (spec.get("hooks") or {}).items() if k in ("poststart", "poststop") and v},
    }


def _write_pid_file(path: str, pid: int) -> None:
    path = posixlite.abspath(path)
    st.write_atomic(path, str(pid), 0o644)


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


def _signal_start(directory: str) -> None:
    """Connect to the init's start socket, release it, and wait until it has exec'd (or failed)."""
    import _socket

    from capsa.errors import ContainerStartError

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    dirfd = posix.open(directory, posix.O_PATH | posix.O_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{dirfd}/{st.START_SOCKET}")
        sock.sendall(b"S")
        # The connection is close-on-exec in the init: EOF means the exec happened.
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    except OSError as err:
        raise ContainerStartError(f"cannot reach the container's init to start it: {err.strerror or err}") from None
    finally:
        posix.close(dirfd)
        sock.close()
    if reply:
        message = reply.decode(errors="replace").strip()
        raise ContainerStartError(message.removeprefix("error ").strip())


def _warn_unavailable_capabilities(process: dict[str, Any] | None, spec: dict[str, Any], warn: Any) -> None:
    capabilities = (process or {}).get("capabilities")
    if not capabilities:
        return
    from capsa.caps import grantable_by, unavailable

    ignored = unavailable(capabilities, grantable_by((spec.get("linux") or {}).get("namespaces") or []))
    if ignored and warn is not None:
        warn(f"ignoring unknown or unavailable capabilities: [{' '.join(ignored)}]")


def _destroy_quietly(cgroup: Cgroup) -> None:
    try:
        cgroup.destroy()
    except CapsaError:
        pass


def _signal_quietly(pid: int, signal: int) -> bool:
    """False when the kernel refused the signal (EPERM/EACCES: a security module, for root)."""
    try:
        posix.kill(pid, signal)
    except ProcessLookupError:
        pass
    except PermissionError:
        return False
    return True


def _ignore(message: str) -> None:
    pass
