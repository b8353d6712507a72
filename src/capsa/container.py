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
    from capsa.create import CreateConfig
    from capsa.launch import Console

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
        return st.hook_state(self.record, status)

    # -- create ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str, config: CreateConfig | str, bundle: str | None = None, **options: Any) -> Container:
        """Create a container whose init waits, fully set up, for start(); see capsa.create for
        the steps and CreateConfig for what can be asked. Nothing of a failed create remains.

        Container.create(root, id, bundle, **options) is Container.create(root, CreateConfig(id,
        bundle, **options)): the options are CreateConfig's keywords (any other is a TypeError)."""
        from capsa import create

        if not isinstance(config, create.CreateConfig):
            config = create.CreateConfig(config, bundle, **options)
        elif bundle is not None or options:
            raise TypeError("Container.create: give a CreateConfig, or an id and a bundle with CreateConfig's keywords")
        store = st.StateStore(root)
        allocation = create.create(store, create.validate(config))
        return cls(store, allocation.record, allocation.prepared.spec)

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
        console: Console | None = None,
        inherited_fds: int = 0,
        listen_fds: int | None = None,
        ignore_paused: bool = False,
        sub_cgroup: str | None = None,
        warn: Any = None,
    ) -> int:
        """Run `process` (an OCI Process) in the running container; return its host pid once it
        has exec'd. console, inherited_fds and listen_fds are CreateConfig's; sub_cgroup is an
        existing cgroup below the container's to put it in.

        warn: called with the text of each setting that is ignored (unknown capabilities)."""
        from capsa import launch
        from capsa.caps import warn_unavailable
        from capsa.spec import refuse_unsupported_process, validate_process

        launch.require_inherited_fds(inherited_fds)  # before any fd of ours exists, as in create
        validate_process(process)
        refuse_unsupported_process(process, "process")
        warn_unavailable(process, self.spec, warn)
        self._check_process_ids(process)
        status = self.status()
        if not (ignore_paused and status == st.PAUSED):
            st.check_transition("exec", self.id, status)
        cgroup = self.cgroup()
        if cgroup is not None and sub_cgroup:
            cgroup = cgroup.sub(sub_cgroup)
        plan = launch.plan_for_exec(self, process, console=console, inherited_fds=inherited_fds, listen_fds=listen_fds,
                                    cgroup=cgroup, seccomp_cache=posixlite.join(self.store.root, st.SECCOMP_CACHE))
        return launch.start(plan)

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
    def restore(cls, root: str, config: CreateConfig, criu: str, options: Any) -> Container:
        """A new, running container restored by CRIU from options.image_path (capsa.checkpoint),
        through create's steps. A container of that id that a checkpoint stopped is replaced
        (runc removes it at checkpoint time)."""
        from capsa import checkpoint

        store = st.StateStore(root)
        restoring = checkpoint.prepare_restore(config, criu, options)  # nothing is touched yet
        _replace_checkpointed(store, config.id)
        allocation = checkpoint.restore(store, restoring, criu, options)
        return cls(store, allocation.record, allocation.prepared.spec)

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
            # The init is the caller's child when it was born in its namespaces (launch): a zombie
            # nobody waited for is reaped with its container.
            procfs.reap_if_our_zombie(self.pid, self.record.get("pidStartTime"))
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


def delete_leftovers(root: str, container_id: str) -> None:
    """delete --force of a container whose state was never written (or a crash left corrupt):
    remove its directory."""
    try:
        st.validate_id(container_id)
    except CapsaError:
        return
    st.StateStore(root).remove(container_id)


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


def _replace_checkpointed(store: st.StateStore, container_id: str) -> None:
    """Remove the container of that id that a checkpoint stopped, before its restore; any other
    container of that id is an ExistsError."""
    from capsa.errors import ExistsError, NotFoundError

    try:
        old = Container(store, store.read(container_id))
    except NotFoundError:
        return
    if not old.record.get("checkpoint") or old.status() != st.STOPPED:
        raise ExistsError(container_id)
    old.delete()


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
