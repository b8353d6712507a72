"""Sandboxes: several containers sharing one set of namespaces and one parent cgroup (a pod), as
gVisor's runsc and Kata's virtcontainers run them.

A sandbox is held by its first container (the "infra" or pause container; the sandbox id is that
container's id): its namespaces (network, IPC, UTS; PID where the sandbox shares it) are the ones
every member joins, and its cgroup, like every member's, is a child of the sandbox's parent cgroup.

On disk, beside the containers under the state root ("@" is never in a container id)::

    <root>/@sandbox/<id>/sandbox.json        the record, replaced atomically (state.write_atomic)
    <root>/@sandbox/<id>/members/<member>    one file per member: written before its create, removed
                                             after its delete (its oomScoreAdj, for the OOM rule)
    <root>/@sandbox/<id>/oom.lock            serialises the recomputation of the holder's oom_score_adj

Locks, as Kata's rLockSandbox/rwLockSandbox: a shared flock on the sandbox's directory to read it
and to add or remove one member (so that parallel member creates each add their own file and none
is lost), an exclusive one for sandbox-wide changes (create, pause, resume, kill, delete), so that a
delete waits for every member being added and the adds that come after it find the sandbox gone.

This module is the layer above capsa.container: it rewrites a member's config.json (namespace
paths, cgroupsPath) and calls Container.create with it. It never prints; errors are CapsaErrors.
"""

from __future__ import annotations

import posix

from capsa import jsonfast, posixlite, procfs
from capsa import state as st
from capsa.errors import EEXIST, ENOTEMPTY, CapsaError, ConfigError, ExistsError, StateError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

    from capsa.cgroups import Cgroup
    from capsa.container import Container

SANDBOX_DIR = "@sandbox"  # beside the containers' directories: "@" is never in an id
RECORD_FILE = "sandbox.json"
MEMBERS_DIR = "members"
OOM_LOCK = "oom.lock"

# -- annotations (runsc's specutils/cri.go, Kata's oci/utils.go) -------------------------------------
# (container type key, sandbox id key, value meaning "sandbox"), in the order of precedence: containerd's
# CRI wins, then CRI-O's (runsc's order), then dockershim's (Kata also reads it).
ANNOTATION_FAMILIES = (
    ("io.kubernetes.cri.container-type", "io.kubernetes.cri.sandbox-id", "sandbox"),
    ("io.kubernetes.cri-o.ContainerType", "io.kubernetes.cri-o.SandboxID", "sandbox"),
    ("io.kubernetes.docker.type", "io.kubernetes.sandbox.id", "podsandbox"),
)
TYPE_KEYS = tuple(family[0] for family in ANNOTATION_FAMILIES)
# CRI-O writes the pod's NamespaceOption on the sandbox's spec: {"pid": 0} (or no "pid") is POD, a
# PID namespace shared by the pod's containers (shareProcessNamespace).
CRIO_NAMESPACE_OPTIONS = "io.kubernetes.cri-o.NamespaceOptions"
# capsa's own way for a sandbox's config.json to ask for a shared PID namespace ("true").
SHARE_PID = "capsa.sandbox.share-pid"

SANDBOX = "sandbox"
CONTAINER = "container"

# -- the state machine (Kata's virtcontainers/types/sandbox.go) ---------------------------------------
READY = "ready"
RUNNING = "running"
PAUSED = "paused"
STOPPED = "stopped"
TRANSITIONS = {
    READY: (RUNNING, STOPPED),
    RUNNING: (PAUSED, STOPPED),
    PAUSED: (RUNNING, STOPPED),
    STOPPED: (RUNNING,),  # only where the holder still lives: see check_transition
}

# The namespaces a sandbox always shares, and the file of each under /proc/PID/ns.
ALWAYS_SHARED = ("network", "ipc", "uts")
_NS_FILES = {"network": "net", "ipc": "ipc", "uts": "uts", "pid": "pid", "mount": "mnt", "user": "user",
             "cgroup": "cgroup", "time": "time"}


class SandboxStateError(StateError):
    """An operation the sandbox's state does not allow (the message names both states)."""


def parse_annotations(annotations: dict[str, str] | None) -> tuple[str, str | None] | None:
    """What config.json's annotations make of a container: None (a standalone container: no
    container-type annotation of any family), (SANDBOX, None) or (CONTAINER, sandbox id).

    The first family whose type key is present decides, type and id alike (containerd's, then
    CRI-O's, then dockershim's). An unknown type and a member without a sandbox id are errors."""
    annotations = annotations or {}
    for type_key, id_key, sandbox_value in ANNOTATION_FAMILIES:
        if type_key not in annotations:
            continue
        value = annotations[type_key]
        if value == sandbox_value:
            return SANDBOX, None
        if value == CONTAINER:
            sandbox_id = annotations.get(id_key)
            if not sandbox_id:
                raise ConfigError(f"annotations.{id_key}",
                                  f"{type_key} is {CONTAINER!r} but no sandbox id is given: which sandbox should it join?")
            return CONTAINER, sandbox_id
        raise ConfigError(f"annotations.{type_key}",
                          f"unknown container type {value!r}: use {sandbox_value!r} or {CONTAINER!r}")
    return None


def shares_pid(spec: dict[str, Any]) -> bool:
    """Does the sandbox's own config.json ask for one PID namespace for all its members? Only if it
    has a PID namespace of its own, and says so (capsa's annotation, or CRI-O's NamespaceOptions
    with the pid mode POD). Otherwise each member keeps what its spec says (Kubernetes' default:
    a PID namespace per container; containerd's CRI writes the sandbox's path for a shared one)."""
    annotations = spec.get("annotations") or {}
    if not any(ns.get("type") == "pid" for ns in (spec.get("linux") or {}).get("namespaces") or []):
        return False
    if annotations.get(SHARE_PID) == "true":
        return True
    options = annotations.get(CRIO_NAMESPACE_OPTIONS)
    if options:
        try:
            mode = jsonfast.loads(options).get("pid", 0)
        except (jsonfast.JSONError, AttributeError):
            raise ConfigError(f"annotations.{CRIO_NAMESPACE_OPTIONS}", "not a JSON object") from None
        return mode == 0
    return False


def check_transition(sandbox_id: str, current: str, target: str, holder_alive: bool = True) -> None:
    """Raise SandboxStateError unless the sandbox may go from `current` to `target` (Kata's rules:
    ready → running|stopped, running → paused|stopped, paused → running|stopped, stopped → running
    only while the holder lives)."""
    if target in TRANSITIONS.get(current, ()) and (current != STOPPED or holder_alive):
        return
    why = " (its holder is gone)" if current == STOPPED and target == RUNNING else ""
    raise SandboxStateError(f"sandbox {sandbox_id}: cannot go from {current} to {target}{why}")


def derived_state(recorded: str, holder_status: str) -> str:
    """The sandbox's live state: stopped once its holder (the infra container) is; ready while the
    holder waits for start; otherwise what sandbox-wide operations recorded (paused, stopped)."""
    if holder_status in (st.STOPPED, st.CREATING):
        return STOPPED
    if holder_status == st.CREATED:
        return READY if recorded != STOPPED else STOPPED
    if recorded in (PAUSED, STOPPED):
        return recorded
    return PAUSED if holder_status == st.PAUSED else RUNNING


# -- namespaces --------------------------------------------------------------------------------------
def _ns_identity(path: str, field: str) -> tuple[int, int]:
    try:
        info = posix.stat(path)
    except OSError as err:
        raise ConfigError(field, f"cannot open namespace {path}: {err.strerror}") from None
    return info.st_dev, info.st_ino


def join_namespaces(member: list[dict[str, Any]], sandbox: list[dict[str, Any]], holder_pid: int,
                    share_pid: bool, identity: Any = _ns_identity) -> list[dict[str, Any]]:
    """The member's linux.namespaces rewritten to join the sandbox's.

    For each kind the sandbox shares (network, IPC, UTS; PID with share_pid): where the sandbox has
    a namespace of its own, a member entry without a path gets the holder's
    (/proc/<holder>/ns/<kind>), one with a path must name the same namespace (compared by device
    and inode, never by string: containerd writes /proc/<pid>/ns paths, a CNI netns is a bind
    mount of the same one), and a missing entry is an error (the member would run in the host's).
    Where the sandbox is in the host's namespace of that kind (a hostNetwork pod), a member entry
    without a path is dropped: the member is in the host's too. Other kinds are left alone."""
    own = {ns.get("type") for ns in sandbox}
    kinds = ALWAYS_SHARED + (("pid",) if share_pid else ())
    result = [dict(ns) for ns in member]
    for kind in kinds:
        holder_ns = f"/proc/{holder_pid}/ns/{_NS_FILES[kind]}"
        index = next((i for i, ns in enumerate(result) if ns is not None and ns.get("type") == kind), None)
        field = f"linux.namespaces[{index}]" if index is not None else "linux.namespaces"
        if index is None:
            if kind in own:
                raise ConfigError(field, f"has no {kind} namespace, but the sandbox shares its own: the member would "
                                         f"run in the host's (leave out the path to join the sandbox's)")
            continue
        entry = result[index]
        if not entry.get("path"):
            if kind in own:
                entry["path"] = holder_ns
            else:
                result[index] = None  # the sandbox is in the host's: so is the member
            continue
        if identity(entry["path"], f"{field}.path") != identity(holder_ns, "sandbox"):
            where = "the sandbox's" if kind in own else "the host's (the sandbox has none of its own)"
            raise ConfigError(f"{field}.path", f"{entry['path']} is not {where} {kind} namespace: a sandbox's "
                                               f"members share it (leave out the path to join it)")
    return [ns for ns in result if ns is not None]


# -- cgroups -----------------------------------------------------------------------------------------
def parent_of(cgroups_path: str | None) -> str | None:
    """The sandbox's parent cgroup from its infra container's linux.cgroupsPath: the directory
    above it (containerd, CRI-O and podman put a pod's containers side by side in the pod's
    cgroup); None where that is the root or the caller's own cgroup (one path component), which
    capsa neither makes nor removes. systemd's slice:prefix:name gives the slice."""
    if not cgroups_path:
        return None
    if ":" in cgroups_path and "/" not in cgroups_path:
        slice_name = cgroups_path.split(":", 1)[0]
        return slice_name or None
    parent = posixlite.dirname(cgroups_path.rstrip("/"))
    return parent if parent.strip("/") else None


def member_cgroups_path(given: str | None, parent: str | None, member_id: str, field: str = "linux.cgroupsPath") -> str | None:
    """A member's linux.cgroupsPath: its own where it is in the sandbox's parent, the parent's
    child named after it where it gives none; one outside the parent is an error."""
    if parent is None:
        return given
    systemd = ":" in parent or parent.endswith(".slice")
    if not given:
        return f"{parent}:capsa:{member_id}" if systemd else f"{parent}/{member_id}"
    if parent_of(given) != parent:
        raise ConfigError(field, f"{given} is not in the sandbox's cgroup {parent}: a member's cgroup is nested in it")
    return given


# -- the record --------------------------------------------------------------------------------------
class _SandboxLock:
    """A flock on the sandbox's directory: shared (read, add or remove a member) or exclusive
    (sandbox-wide changes). Entering fails with a NotFoundError-like error if the sandbox is gone
    (deleted while we waited)."""

    def __init__(self, directory: str, sandbox_id: str, exclusive: bool):
        self.directory, self.sandbox_id, self.exclusive = directory, sandbox_id, exclusive
        self.fd = -1

    def __enter__(self) -> _SandboxLock:
        try:
            self.fd = posix.open(self.directory, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
        except FileNotFoundError:
            raise SandboxNotFoundError(self.sandbox_id) from None
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH)
        if posix.fstat(self.fd).st_nlink == 0:  # deleted while we waited for the lock
            posix.close(self.fd)
            self.fd = -1
            raise SandboxNotFoundError(self.sandbox_id, " (it was deleted)")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            posix.close(self.fd)
        self.fd = -1


class SandboxNotFoundError(CapsaError):
    def __init__(self, sandbox_id: str, detail: str = ""):
        super().__init__(f"sandbox {sandbox_id} does not exist{detail}")


def sandboxes_dir(root: str) -> str:
    return posixlite.join(posixlite.abspath(root), SANDBOX_DIR)


def is_holder(root: str, container_id: str) -> bool:
    """Does `container_id` hold a sandbox (one stat)?"""
    return posixlite.isdir(posixlite.join(sandboxes_dir(root), container_id))


def sandbox_of(root: str, container_id: str, annotations: dict[str, str] | None) -> str | None:
    """The id of the sandbox a container belongs to (its own if it holds one), else None."""
    try:
        parsed = parse_annotations(annotations)
    except ConfigError:
        parsed = None
    if parsed is not None and parsed[0] == CONTAINER:
        return parsed[1]
    if is_holder(root, container_id):
        return container_id
    return None


class Sandbox:
    """A sandbox under a state root: its record, its holder (the infra container) and members."""

    def __init__(self, root: str, record: dict[str, Any]):
        self.store = st.StateStore(root)
        self.record = record

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def directory(self) -> str:
        return _directory(self.store.root, self.id)

    def _lock(self, exclusive: bool) -> _SandboxLock:
        return _SandboxLock(self.directory, self.id, exclusive)

    # -- lookup ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: str, sandbox_id: str) -> Sandbox:
        """The sandbox `sandbox_id`; an error if there is none (a member's id, or a standalone
        container's, is named as such)."""
        if not sandbox_id or "/" in sandbox_id or sandbox_id in (".", ".."):
            raise SandboxNotFoundError(sandbox_id)
        record = _read_record(root, sandbox_id)
        if record is None:
            raise _not_a_sandbox(root, sandbox_id)
        return cls(root, record)

    @classmethod
    def list(cls, root: str) -> list[Sandbox]:
        try:
            names = sorted(posix.listdir(sandboxes_dir(root)))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if name.startswith("."):
                continue  # a sandbox being made (_make_directory)
            record = _read_record(root, name)
            found.append(cls(root, record if record is not None else {"id": name, "state": "creating"}))
        return found

    def holder(self) -> Container | None:
        """The infra container, None if its record is gone (or not written yet)."""
        from capsa.container import Container
        from capsa.errors import NotFoundError

        try:
            return Container(self.store, self.store.read(self.id))
        except (NotFoundError, CapsaError):
            return None

    def members(self) -> list[str]:
        """The member ids, the infra container not included, joined or joining."""
        try:
            return sorted(posix.listdir(posixlite.join(self.directory, MEMBERS_DIR)))
        except FileNotFoundError:
            return []

    def _member(self, member_id: str) -> Container | None:
        from capsa.container import Container
        from capsa.errors import NotFoundError

        try:
            return Container(self.store, self.store.read(member_id))
        except (NotFoundError, CapsaError):
            return None

    # -- state -----------------------------------------------------------------------------------
    def status(self) -> str:
        holder = self.holder()
        if holder is None:
            return STOPPED
        return derived_state(self.record.get("state", READY), holder.status())

    def state(self) -> dict[str, Any]:
        """The sandbox's record as `capsa sandbox state` shows it: id, state, holder pid, members
        with their states, the parent cgroup and what it shares."""
        holder = self.holder()
        status = self.status()
        members = []
        for member_id in self.members():
            member = self._member(member_id)
            members.append({"id": member_id, "status": member.status() if member else st.CREATING})
        return {
            "id": self.id,
            "state": status,
            "pid": holder.pid if holder is not None and status != STOPPED else 0,
            "members": members,
            "cgroupParent": self.record.get("cgroupParent") or "",
            "sharedNamespaces": self.record.get("sharedNamespaces") or [],
            "created": self.record.get("created", ""),
        }

    # -- create ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str, sandbox_id: str, bundle: str, spec: dict[str, Any], *,
               systemd_cgroup: bool = False, **create_args: Any) -> Sandbox:
        """Create a sandbox: its record, its parent cgroup and its infra container (`spec`, the
        validated config.json, whose cgroup goes in the parent). create_args go to Container.create."""
        from capsa.container import Container

        st.validate_id(sandbox_id)
        linux = spec.setdefault("linux", {})
        parent_path = parent_of(linux.get("cgroupsPath"))
        if parent_path is None and not linux.get("cgroupsPath") and not systemd_cgroup:
            parent_path = f"sandbox@{sandbox_id}"  # relative: under the caller's cgroup, as a container's default
        linux["cgroupsPath"] = member_cgroups_path(linux.get("cgroupsPath"), parent_path, sandbox_id)
        creator_pid, creator_started = procfs.own_identity()
        record = {"id": sandbox_id, "state": "creating", "created": st.now_rfc3339(), "cgroupParent": parent_path,
                  "sharedNamespaces": [k for k in ALWAYS_SHARED + ("pid",) if k in _own_kinds(spec)
                                       and (k != "pid" or shares_pid(spec))],
                  "sharePid": shares_pid(spec), "namespaces": linux.get("namespaces") or [],
                  "holderOomScoreAdj": (spec.get("process") or {}).get("oomScoreAdj"),
                  "creator": {"pid": creator_pid, "startTime": creator_started}}
        sandbox = cls(root, record)
        lock = _make_directory(root, sandbox_id, record)
        parent = None
        try:
            if parent_path is not None and not systemd_cgroup:
                parent = _parent_cgroup(parent_path)
                parent.create()
                record["cgroupParentRecord"] = parent.record()
                _write_record(root, record)
            holder = Container.create(root, sandbox_id, bundle, spec=spec, systemd_cgroup=systemd_cgroup, **create_args)
            if record["holderOomScoreAdj"] is None:
                record["holderOomScoreAdj"] = _oom_score_adj(holder.pid)
            record["state"] = READY
            record.pop("creator", None)
            _write_record(root, record)
        except BaseException:
            if parent is not None:
                _destroy_quietly(parent)
            _remove_directory(sandbox.directory)
            raise
        finally:
            lock.__exit__()
        return sandbox

    @classmethod
    def adopt(cls, root: str, holder_id: str) -> Sandbox:
        """A standalone container that a member names as its sandbox (podman's infra container has
        no annotation; its members name it in CRI-O's): it becomes the holder of a sandbox whose
        parent cgroup is the directory above its own (joined: capsa does not remove it)."""
        from capsa.container import Container
        from capsa.errors import NotFoundError

        try:
            holder = Container.load(root, holder_id)
        except NotFoundError:
            raise SandboxNotFoundError(holder_id) from None
        if holder.id != holder_id:  # Container.load takes prefixes; a sandbox id must be exact
            raise SandboxNotFoundError(holder_id)
        if holder.status() in (st.STOPPED, st.CREATING):
            raise SandboxStateError(f"sandbox {holder_id} is stopped (its container is {holder.status()}): cannot add a member")
        spec = holder.spec
        record = {"id": holder_id, "state": READY if holder.status() == st.CREATED else RUNNING,
                  "created": st.now_rfc3339(), "adopted": True,
                  "cgroupParent": parent_of((spec.get("linux") or {}).get("cgroupsPath")),
                  "sharedNamespaces": [k for k in ALWAYS_SHARED if k in _own_kinds(spec)],
                  "sharePid": shares_pid(spec), "namespaces": (spec.get("linux") or {}).get("namespaces") or [],
                  "holderOomScoreAdj": (spec.get("process") or {}).get("oomScoreAdj")}
        if record["holderOomScoreAdj"] is None:
            record["holderOomScoreAdj"] = _oom_score_adj(holder.pid)
        try:
            lock = _make_directory(root, holder_id, record)
        except ExistsError:
            return cls.load(root, holder_id)  # another member adopted it meanwhile
        lock.__exit__()
        return cls(root, record)

    # -- members ---------------------------------------------------------------------------------
    def add(self, member_id: str, bundle: str, spec: dict[str, Any], *, warn: Any = None, **create_args: Any) -> Container:
        """Create container `member_id` in the sandbox from `spec` (its validated config.json): its
        namespaces join the sandbox's (join_namespaces), its cgroup goes in the sandbox's parent
        (member_cgroups_path). Under the shared lock: parallel adds each register their own member;
        a delete waits until the member is fully created, or refused."""
        from capsa.container import Container

        st.validate_id(member_id)
        with self._lock(exclusive=False):
            self.record = _read_record(self.store.root, self.id) or self.record
            holder = self.holder()
            status = self.status()
            if holder is None or status not in (READY, RUNNING):
                raise SandboxStateError(f"sandbox {self.id} is {status if holder else 'being created'}: cannot add "
                                        f"container {member_id} to it (a member joins a ready or running sandbox)")
            linux = spec.setdefault("linux", {})
            linux["namespaces"] = join_namespaces(linux.get("namespaces") or [], self.record.get("namespaces") or [],
                                                  holder.pid, bool(self.record.get("sharePid")))
            linux["cgroupsPath"] = member_cgroups_path(linux.get("cgroupsPath"), self.record.get("cgroupParent"), member_id)
            if posixlite.isdir(self.store.path(member_id)):
                raise ExistsError(member_id)
            marker = posixlite.join(self.directory, MEMBERS_DIR, member_id)
            _write_member(marker, (spec.get("process") or {}).get("oomScoreAdj"))
            try:
                container = Container.create(self.store.root, member_id, bundle, spec=spec, warn=warn, **create_args)
            except BaseException:
                st.unlink_quietly(marker)
                raise
            self._apply_oom_rule(holder, warn)
            return container

    def remove(self, member_id: str, force: bool = False, warn: Any = None) -> None:
        """Delete member `member_id` (Container.delete) and take it out of the sandbox."""
        with self._lock(exclusive=False):
            member = self._member(member_id)
            if member is not None:
                member.delete(force=force, warn=warn)
            st.unlink_quietly(posixlite.join(self.directory, MEMBERS_DIR, member_id))
            holder = self.holder()
            if holder is not None:
                self._apply_oom_rule(holder, warn)

    def _apply_oom_rule(self, holder: Container, warn: Any) -> None:
        """runsc's rule: the holder gets the lowest oom_score_adj of its members (and of its own
        config's), so that the kernel kills a workload before the process every member depends on.
        Serialised by oom.lock, so that the last writer has seen every member file written before."""
        import fcntl

        fd = posix.open(posixlite.join(self.directory, OOM_LOCK), posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            values = [v for v in (self._member_oom(m) for m in self.members()) if v is not None]
            own = self.record.get("holderOomScoreAdj")
            target = min(values + ([own] if own is not None else [])) if values else (own if own is not None else 0)
            if not procfs.is_alive(holder.pid, holder.record.get("pidStartTime")):
                return
            try:
                procfs.write_file(f"/proc/{holder.pid}/oom_score_adj", str(target))
            except PermissionError:
                if warn is not None:
                    warn(f"sandbox {self.id}: cannot set its holder's oom_score_adj to {target}: lowering it needs "
                         "CAP_SYS_RESOURCE")
            except OSError:
                pass  # the holder exited meanwhile
        finally:
            posix.close(fd)

    def _member_oom(self, member_id: str) -> int | None:
        try:
            with open(posixlite.join(self.directory, MEMBERS_DIR, member_id), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        value = jsonfast.loads(raw).get("oomScoreAdj") if raw else None
        return value if isinstance(value, int) else None

    # -- sandbox-wide operations -----------------------------------------------------------------
    def _live_containers(self) -> list[Container]:
        """Members then the holder, those whose record exists."""
        found = [c for c in (self._member(m) for m in self.members()) if c is not None]
        holder = self.holder()
        return found + ([holder] if holder is not None else [])

    def pause(self) -> None:
        """Freeze every member and the holder (each container's freezer), then record paused."""
        with self._lock(exclusive=True):
            self._reload()
            check_transition(self.id, self.status(), PAUSED)
            for container in self._live_containers():
                if container.status() in (st.RUNNING, st.CREATED):
                    container.pause()
            self._set_state(PAUSED)

    def resume(self) -> None:
        """Thaw every member and the holder, then record running."""
        with self._lock(exclusive=True):
            self._reload()
            check_transition(self.id, self.status(), RUNNING, self._holder_alive())
            for container in self._live_containers():
                if container.status() == st.PAUSED:
                    container.resume()
            self._set_state(RUNNING)

    def start(self, warn: Any = None) -> None:
        """ready → running (start the holder); stopped → running while the holder lives."""
        with self._lock(exclusive=True):
            self._reload()
            status = self.status()
            check_transition(self.id, status, RUNNING, self._holder_alive())
            holder = self.holder()
            if holder is not None and holder.status() == st.CREATED:
                holder.start(warn=warn)
            self._set_state(RUNNING)

    def kill(self, signal: int) -> None:
        """Send `signal` to every member's init, then the holder's."""
        with self._lock(exclusive=True):
            self._reload()
            status = self.status()
            if status == STOPPED:
                raise SandboxStateError(f"sandbox {self.id} is stopped: nothing to signal")
            for container in self._live_containers():
                if container.status() not in (st.STOPPED, st.CREATING):
                    try:
                        container.kill(signal)
                    except StateError:
                        pass  # it exited meanwhile

    def delete(self, force: bool = False, warn: Any = None) -> None:
        """Delete the sandbox: its members, its holder, its parent cgroup (if capsa made it), its
        record. Without force, live members are an error naming them (stopped ones are deleted
        with it); with force every member is killed and deleted first. A half-created sandbox
        (no holder, no record) is cleaned up as far as it got."""
        with self._lock(exclusive=True):
            self._reload()
            self._delete_locked(force, warn)

    def _delete_locked(self, force: bool, warn: Any) -> None:
        members = [(m, self._member(m)) for m in self.members()]
        if not force:
            live = [m for m, c in members if c is not None and c.status() != st.STOPPED]
            if live:
                raise SandboxStateError(f"cannot delete sandbox {self.id}: its members {', '.join(live)} still live "
                                        "(delete them first, or use --force)")
            holder = self.holder()
            if holder is not None and holder.status() != st.STOPPED:
                check_transition(self.id, self.status(), STOPPED)
                raise SandboxStateError(f"cannot delete sandbox {self.id} that is not stopped: {self.status()} "
                                        "(stop its holder first, or use --force)")
        for member_id, container in members:
            if container is not None:
                container.delete(force=True, warn=warn)
            st.unlink_quietly(posixlite.join(self.directory, MEMBERS_DIR, member_id))
        holder = self.holder()
        if holder is not None:
            holder.delete(force=True, warn=warn)
        elif not self.record.get("adopted"):
            from capsa.container import delete_leftovers

            delete_leftovers(self.store.root, self.id)  # a create that never wrote the holder's state
        parent = self.record.get("cgroupParentRecord")
        if parent:
            from capsa.cgroups import from_record

            cgroup = from_record(parent)
            if cgroup is not None:
                if cgroup.is_frozen():
                    cgroup.thaw()
                cgroup.destroy()
        _remove_directory(self.directory)

    def _holder_alive(self) -> bool:
        holder = self.holder()
        return holder is not None and holder.status() not in (st.STOPPED, st.CREATING)

    def _set_state(self, state: str) -> None:
        self.record["state"] = state
        _write_record(self.store.root, self.record)

    def _reload(self) -> None:
        self.record = _read_record(self.store.root, self.id) or self.record


def delete_sandbox(root: str, sandbox_id: str, force: bool = False, warn: Any = None) -> None:
    """`capsa sandbox delete [--force]`: with force, a sandbox that is not there is no error, and a
    half-created one (a directory without a complete record) is removed as far as it got."""
    if not force:
        Sandbox.load(root, sandbox_id).delete(warn=warn)
        return
    if not sandbox_id or "/" in sandbox_id or sandbox_id in (".", ".."):
        return
    record = _read_record(root, sandbox_id)
    if record is None and not posixlite.isdir(_directory(root, sandbox_id)):
        return
    try:
        Sandbox(root, record or {"id": sandbox_id}).delete(force=True, warn=warn)
    except SandboxNotFoundError:
        pass  # deleted meanwhile


def create_container(root: str, container_id: str, bundle: str, spec: dict[str, Any], warn: Any = None,
                     systemd_cgroup: bool = False, **create_args: Any) -> Container:
    """`capsa create`/`run` of a config.json with sandbox annotations: a sandbox (its infra
    container), or a member of the sandbox the annotations name."""
    kind, sandbox_id = parse_annotations(spec.get("annotations"))
    if kind == SANDBOX:
        from capsa.container import Container

        sandbox = Sandbox.create(root, container_id, bundle, spec, systemd_cgroup=systemd_cgroup, warn=warn, **create_args)
        return Container.load(root, sandbox.id)
    sandbox = _find_for_member(root, sandbox_id, container_id)
    return sandbox.add(container_id, bundle, spec, warn=warn, systemd_cgroup=systemd_cgroup, **create_args)


def _find_for_member(root: str, sandbox_id: str, member_id: str) -> Sandbox:
    if sandbox_id == member_id:
        raise ConfigError("annotations", f"container {member_id} names itself as its sandbox")
    try:
        return Sandbox.load(root, sandbox_id)
    except SandboxNotFoundError:
        pass
    st.validate_id(sandbox_id)
    from capsa.errors import NotFoundError

    try:
        st.StateStore(root).read(sandbox_id)
    except NotFoundError:
        raise SandboxNotFoundError(sandbox_id, f": container {member_id} cannot join it") from None
    # A standalone container (Sandbox.load said so: not a member): podman's infra container.
    return Sandbox.adopt(root, sandbox_id)


def delete_container(root: str, container: Container, force: bool = False, warn: Any = None) -> None:
    """`capsa delete` of a container in a sandbox: a member leaves it; the holder deletes the
    sandbox (an error naming the live members, unless force)."""
    sandbox_id = sandbox_of(root, container.id, container.record.get("annotations"))
    if sandbox_id == container.id:
        try:
            sandbox = Sandbox.load(root, sandbox_id)
        except SandboxNotFoundError:
            container.delete(force=force, warn=warn)
            return
        sandbox.delete(force=force, warn=warn)  # live members are named first, then a live holder
        return
    try:
        sandbox = Sandbox.load(root, sandbox_id)
    except SandboxNotFoundError:
        container.delete(force=force, warn=warn)  # the sandbox went first
        return
    try:
        sandbox.remove(container.id, force=force, warn=warn)
    except SandboxNotFoundError:
        container.delete(force=force, warn=warn)


# -- helpers -----------------------------------------------------------------------------------------
def _directory(root: str, sandbox_id: str) -> str:
    return posixlite.join(sandboxes_dir(root), sandbox_id)


def _own_kinds(spec: dict[str, Any]) -> set[str]:
    return {ns.get("type") for ns in (spec.get("linux") or {}).get("namespaces") or []}


def _read_record(root: str, sandbox_id: str) -> dict[str, Any] | None:
    try:
        with open(posixlite.join(_directory(root, sandbox_id), RECORD_FILE), "rb") as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        record = jsonfast.loads(raw)
    except jsonfast.JSONError:
        return None
    return record if isinstance(record, dict) and record.get("id") == sandbox_id else None


def _write_record(root: str, record: dict[str, Any]) -> None:
    st.write_atomic(posixlite.join(_directory(root, record["id"]), RECORD_FILE), jsonfast.dumps(record))


def _write_member(path: str, oom_score_adj: int | None) -> None:
    try:
        fd = posix.open(path, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise ExistsError(posixlite.basename(path)) from None
    try:
        posix.write(fd, jsonfast.dumps({"oomScoreAdj": oom_score_adj}).encode())
    finally:
        posix.close(fd)


def _make_directory(root: str, sandbox_id: str, record: dict[str, Any]) -> _SandboxLock:
    """Make the sandbox's directory with its record and members/ in it, exclusively locked, in
    one rename: nobody ever sees it without a record, and of two creates of one id one wins."""
    parent = sandboxes_dir(root)
    posixlite.makedirs(parent, mode=0o700, exist_ok=True)
    temporary = posixlite.join(parent, f".new-{sandbox_id}-{posix.getpid()}")
    _remove_directory(temporary)
    posix.mkdir(temporary, 0o700)
    lock = _SandboxLock(temporary, sandbox_id, exclusive=True)
    try:
        posix.mkdir(posixlite.join(temporary, MEMBERS_DIR), 0o700)
        st.write_atomic(posixlite.join(temporary, RECORD_FILE), jsonfast.dumps(record))
        lock.__enter__()
        try:
            posix.rename(temporary, _directory(root, sandbox_id))
        except OSError as err:
            lock.__exit__()
            if err.errno in (EEXIST, ENOTEMPTY):  # the id is taken
                raise ExistsError(sandbox_id) from None
            raise
    except BaseException:
        _remove_directory(temporary)
        raise
    if posixlite.isdir(st.StateStore(root).path(sandbox_id)) and not record.get("adopted"):
        lock.__exit__()
        _remove_directory(_directory(root, sandbox_id))
        raise ExistsError(sandbox_id)
    return lock


def _oom_score_adj(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/oom_score_adj", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _remove_directory(directory: str) -> None:
    for sub in (MEMBERS_DIR,):
        path = posixlite.join(directory, sub)
        try:
            for name in posix.listdir(path):
                st.unlink_quietly(posixlite.join(path, name))
            posix.rmdir(path)
        except FileNotFoundError:
            pass
    st.StateStore(posixlite.dirname(directory)).remove(posixlite.basename(directory))


def _parent_cgroup(path: str) -> Cgroup:
    from capsa import cgroups

    return cgroups.parent(path)


def _destroy_quietly(cgroup: Cgroup) -> None:
    try:
        cgroup.destroy()
    except CapsaError:
        pass


def _not_a_sandbox(root: str, sandbox_id: str) -> CapsaError:
    """Why `sandbox_id` names no sandbox: nothing by that id, a member, or a standalone container."""
    store = st.StateStore(root)
    try:
        record = store.read(sandbox_id)
    except CapsaError:
        return SandboxNotFoundError(sandbox_id)
    owner = sandbox_of(root, sandbox_id, record.get("annotations"))
    if owner is not None and owner != sandbox_id:
        return CapsaError(f"{sandbox_id} is a member of sandbox {owner}, not a sandbox")
    return SandboxNotFoundError(sandbox_id, " (a standalone container has that id)")
