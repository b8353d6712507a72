"""Pods: groups of managed containers that share namespaces (podman's pods), on capsa's sandboxes.

A pod is a row of the store's `pods` table (id, name, config, state); its members are the
containers whose config names it ("Pod"). A pod with an infra container (the default) is a
capsa sandbox (capsa.sandbox, docs/sandboxes.md):

- the infra container runs catatonit in pause mode (`/catatonit -P`, podman's pause process) from
  a one-layer image capsactl makes itself from the host's static catatonit,
  `localhost/capsa-pause:<version>` (podman builds its `localhost/podman-pause` the same way);
- its config.json carries containerd's CRI annotation `io.kubernetes.cri.container-type:
  sandbox`, so capsa's library creates it as the sandbox's holder: its network, IPC and UTS
  namespaces (and PID with `--share pid`) are the pod's;
- each member's config.json says `container` with `io.kubernetes.cri.sandbox-id: <infra id>`:
  capsa.sandbox joins it to the holder's namespaces (its entries of those kinds have no path) and
  puts its cgroup in the pod's, /capsactl/pod-<pod id>/<container id>;
- pod-wide pause, unpause and kill go through capsa.sandbox.Sandbox (one exclusive lock, every
  member and the holder), then the store records what became of each container.

The sandbox lives while the infra container runs: a start makes it, the infra's exit deletes it
(capsa.manager.runtime.LibraryRuntime.delete; members still running are killed with it). So a
member's start first starts the infra container, as podman's does. A pod without infra
(`--infra=false`) shares nothing: its members are ordinary containers that pod commands act on
together.
"""

from __future__ import annotations

import os

from capsa.manager import events
from capsa.manager.errors import AmbiguousId, InvalidState, ManagerError, NameInUse
from capsa.manager.store import dumps, is_unique_violation, loads, valid_name

# --share: capsa's sandboxes always share network, IPC and UTS (capsa.sandbox.ALWAYS_SHARED);
# the PID namespace is shared on request. podman's names, and "cgroup" (podman's default has it:
# every member's cgroup is in the pod's anyway).
SHARE_NAMES = {"net": "network", "network": "network", "ipc": "ipc", "uts": "uts", "pid": "pid", "cgroup": "cgroup"}
ALWAYS = ("network", "ipc", "uts")
DEFAULT_SHARE = "cgroup,ipc,net,uts"

# containerd's CRI annotations (capsa.sandbox.ANNOTATION_FAMILIES, the first family).
TYPE_KEY = "io.kubernetes.cri.container-type"
SANDBOX_ID_KEY = "io.kubernetes.cri.sandbox-id"
SHARE_PID_KEY = "capsa.sandbox.share-pid"

PAUSE_COMMAND = ["/catatonit", "-P"]
CATATONIT = ("/usr/libexec/podman/catatonit", "/usr/bin/catatonit")


class NoSuchPod(ManagerError):
    def __init__(self, name_or_id: str):
        super().__init__(f"no pod with name or ID {name_or_id!r} found")


# -- pure rules ----------------------------------------------------------------------------------
def parse_share(text: str | None) -> list[str]:
    """--share's kinds as capsa.sandbox names them (network, ipc, uts[, pid]; cgroup is dropped:
    always shared). Net, IPC and UTS must all be there: a capsa sandbox always shares them."""
    kinds: list[str] = []
    for word in (DEFAULT_SHARE if text is None else text).split(","):
        word = word.strip()
        if not word:
            continue
        kind = SHARE_NAMES.get(word)
        if kind is None:
            raise ManagerError(f"--share {word!r}: unknown namespace (net, ipc, uts, pid, cgroup)")
        if kind != "cgroup" and kind not in kinds:
            kinds.append(kind)
    missing = [k for k in ALWAYS if k not in kinds]
    if missing:
        raise ManagerError(f"--share {text!r}: a capsa pod always shares net, ipc and uts (its sandbox's "
                           f"namespaces); {', '.join(missing)} missing. Only pid is optional")
    return [k for k in ALWAYS + ("pid",) if k in kinds]


def pod_status(statuses: list[str]) -> str:
    """podman's pod status from its containers' (the infra container included): Created, Running,
    Paused or Exited when all agree, Degraded otherwise; a pod without containers is Created."""
    if not statuses:
        return "Created"
    exited = ("exited", "stopped")
    for wanted, word in (("created",), "Created"), (("running", "stopping"), "Running"), \
            (("paused",), "Paused"), (exited, "Exited"):
        if all(s in wanted for s in statuses):
            return word
    return "Degraded"


def cgroup_parent(pod_id: str) -> str:
    return f"/capsactl/pod-{pod_id}"


def infra_name(pod_name: str) -> str:
    return f"{pod_name}-infra"


def apply_to_spec(spec: dict, pod: Pod, container_id: str, infra: bool) -> None:
    """The container's OCI config made a pod's: the CRI annotation that makes the infra container
    the sandbox's holder or a member of it, its cgroup in the pod's, the pod's host name. A
    member's entries for the shared namespaces lose any path (capsa.sandbox joins them to the
    holder's). A pod without infra changes nothing."""
    if not pod.has_infra:
        return  # nothing shared: an ordinary container that pod commands act on with the others
    annotations = spec.setdefault("annotations", {})
    linux = spec.setdefault("linux", {})
    linux["cgroupsPath"] = f"{cgroup_parent(pod.id)}/{container_id}"
    spec["hostname"] = pod.hostname
    shared = pod.config.get("Share") or list(ALWAYS)
    if infra:
        annotations[TYPE_KEY] = "sandbox"
        if "pid" in shared:
            annotations[SHARE_PID_KEY] = "true"
        return
    annotations[TYPE_KEY] = "container"
    annotations[SANDBOX_ID_KEY] = pod.infra_id
    namespaces = [ns for ns in linux.get("namespaces") or [] if ns.get("type") not in shared]
    linux["namespaces"] = namespaces + [{"type": kind} for kind in shared]


def check_runtime(runtime_path: str | None) -> None:
    """A pod's namespaces are shared by capsa's sandboxes: capsa's library (the default) or the
    capsa binary read the CRI annotations; runc and crun would ignore them and run each member in
    namespaces of its own, so they are refused."""
    if runtime_path and os.path.basename(runtime_path) != "capsa":
        raise ManagerError(f"--runtime {runtime_path}: a pod's containers join its namespaces through capsa's "
                           "sandboxes, which runc and crun do not read: use capsa's runtime (the default)")


class Pod:
    """One row of the pods table."""

    __slots__ = ("id", "name", "config", "state", "created")

    def __init__(self, row):
        self.id = row["id"]
        self.name = row["name"]
        self.config = loads(row["config"], f"pod {row['name']}")
        self.state = loads(row["state"], f"pod {row['name']}")
        self.created = row["created"]

    @property
    def infra_id(self) -> str:
        return self.config.get("InfraContainerID") or ""

    @property
    def has_infra(self) -> bool:
        return bool(self.config.get("Infra"))

    @property
    def hostname(self) -> str:
        return self.config.get("Hostname") or self.name


class Pods:
    """The pods of one store, over its containers (capsa.manager.containers.Containers)."""

    def __init__(self, containers):
        self.containers = containers
        self.store = containers.store
        self.paths = containers.paths

    # -- lookup ------------------------------------------------------------------------------------
    def _read(self, pod_id: str, db=None) -> Pod | None:
        if db is not None:
            row = db.one("SELECT * FROM pods WHERE id = ?", (pod_id,))
        else:
            rows = self.store.query("SELECT * FROM pods WHERE id = ?", (pod_id,))
            row = rows[0] if rows else None
        return None if row is None else Pod(row)

    def resolve_id(self, text: str) -> str:
        ids = self.store.ids_named("pods", text)
        if len(ids) == 1:
            return ids[0]
        if ids:
            raise AmbiguousId("pod", text, ids)
        raise NoSuchPod(text)

    def get(self, text: str) -> Pod:
        pod = self._read(self.resolve_id(text))
        if pod is None:
            raise NoSuchPod(text)
        return pod

    def exists(self, text: str) -> bool:
        try:
            self.resolve_id(text)
        except NoSuchPod:
            return False
        return True

    def list(self) -> list[Pod]:
        return [Pod(row) for row in self.store.query("SELECT * FROM pods ORDER BY created")]

    def containers_of(self, pod: Pod, infra: bool = True) -> list:
        """The pod's containers, oldest first, the infra container first (or left out)."""
        found = [c for c in self.containers.list() if c.config.get("Pod") == pod.id
                 and (infra or not c.config.get("IsInfra"))]
        found.sort(key=lambda c: (not c.config.get("IsInfra"), c.created))
        return found

    def members(self, pod: Pod) -> list:
        return self.containers_of(pod, infra=False)

    def infra(self, pod: Pod):
        if not pod.infra_id:
            return None
        try:
            return self.containers.get(pod.infra_id)
        except ManagerError:
            return None

    def status(self, pod: Pod) -> str:
        return pod_status([c.status for c in self.containers_of(pod)])

    # -- create ------------------------------------------------------------------------------------
    def create(self, options: dict) -> Pod:
        """A pod: its row, then its infra container (created, not started) unless infra is False.
        options: name, infra (bool), share (text), ports, network, hostname, labels."""
        import time

        from capsa.manager.ocispec import parse_labels
        from capsa.manager.times import format_rfc3339_nano

        name = options.get("name") or f"pod_{os.urandom(5).hex()}"
        if not valid_name(name):
            raise ManagerError(f"pod name {name!r} is not valid: letters, digits, '_', '.' and '-', "
                               "starting with a letter or digit")
        infra = options.get("infra", True)
        if infra:
            check_runtime(options.get("runtime"))
        share = parse_share(options.get("share"))
        ports = list(options.get("ports") or [])
        if not infra and (ports or options.get("network") or options.get("share") not in (None, "")):
            raise ManagerError("a pod without an infra container shares no namespace: -p, --network and "
                               "--share need --infra=true")
        pod_id = os.urandom(32).hex()
        config = {"Name": name, "Infra": bool(infra), "Share": share if infra else [], "Ports": ports,
                  "Network": options.get("network") or "", "Hostname": options.get("hostname") or name,
                  "Labels": parse_labels(options.get("labels") or []),
                  "CreateCommand": options.get("create_command") or []}
        import sqlite3

        try:
            with self.store.transaction() as db:
                owner = db.one("SELECT id FROM pods WHERE name = ?", (name,))
                if owner is not None:
                    raise NameInUse("pod", name, owner["id"])
                db.execute("INSERT INTO pods (id, name, config, state, created) VALUES (?, ?, ?, ?, ?)",
                           (pod_id, name, dumps(config), dumps({}), format_rfc3339_nano(time.time_ns())))
        except sqlite3.IntegrityError as err:
            if is_unique_violation(err):
                raise NameInUse("pod", name, self.resolve_id(name)) from None
            raise
        if infra:
            try:
                self._create_infra(self._read(pod_id), options)
            except BaseException:
                with self.store.transaction() as db:
                    db.execute("DELETE FROM pods WHERE id = ?", (pod_id,))
                raise
        events.emit(self.paths, "create", "pod", id=pod_id, name=name)
        return self._read(pod_id)

    def _create_infra(self, pod: Pod, options: dict) -> None:
        image = self.pause_image()
        infra = self.containers.create(image, {
            "name": infra_name(pod.name), "pod": pod.id, "pod_infra": True,
            # -p publishes on a bridge (capsactl's default network is none)
            "network": options.get("network") or ("bridge" if options.get("ports") else None),
            "ports": list(options.get("ports") or []), "runtime": options.get("runtime"),
            "hooks_dirs": options.get("hooks_dirs"), "stop_timeout": 10})
        with self.store.transaction() as db:
            current = self._read(pod.id, db)
            current.config["InfraContainerID"] = infra.id
            db.execute("UPDATE pods SET config = ? WHERE id = ?", (dumps(current.config), pod.id))

    def pause_image(self) -> str:
        """localhost/capsa-pause:<version>, made on first use: one layer with the host's static
        catatonit at /catatonit, its entrypoint `/catatonit -P` (podman's pause process)."""
        from capsa import __version__
        from capsa.manager.errors import NoSuchImage

        name = f"localhost/capsa-pause:{__version__}"
        images = self.containers.images
        try:
            images.resolve(name)
            return name
        except NoSuchImage:
            pass
        source = next((path for path in CATATONIT if os.path.isfile(path)), None)
        if source is None:
            raise ManagerError(f"a pod's infra container runs catatonit, which is not installed ({' or '.join(CATATONIT)}):"
                               " install catatonit, or create the pod with --infra=false")
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory(prefix="capsa-pause-") as root:
            shutil.copy2(source, os.path.join(root, "catatonit"))
            images.import_rootfs(root, name, {"Entrypoint": PAUSE_COMMAND, "StopSignal": "SIGTERM"},
                                 "capsactl's pod infra image")
        return name

    def prepare_member(self, options: dict) -> tuple[Pod, dict]:
        """`create --pod`: the pod, and create's options as a member of it takes them. A member of
        a pod with infra has the pod's network: --network and -p are the pod's business."""
        pod = self.get(options["pod"])
        if options.get("pod_infra"):
            return pod, options
        if pod.has_infra:
            check_runtime(options.get("runtime"))
            if options.get("network"):
                raise ManagerError(f"--network cannot be set for a container in pod {pod.name}: it has the pod's "
                                   "network (give it to pod create)")
            if options.get("ports"):
                raise ManagerError(f"-p/--publish cannot be set for a container in pod {pod.name}: publish ports "
                                   "with pod create -p")
            if options.get("hostname"):
                raise ManagerError(f"--hostname cannot be set for a container in pod {pod.name}: it shares the "
                                   "pod's UTS namespace")
            if not pod.infra_id:
                raise InvalidState(f"pod {pod.name} is being created (no infra container yet)")
        return pod, options

    # -- life --------------------------------------------------------------------------------------
    def ensure_infra_running(self, pod_id: str) -> None:
        """A member's start: the infra container (the sandbox) first, as podman's."""
        pod = self._read(pod_id)
        if pod is None or not pod.has_infra:
            return
        infra = self.infra(pod)
        if infra is None:
            raise InvalidState(f"pod {pod.name} has no infra container: remove the pod and create it again")
        if infra.status == "paused":
            raise InvalidState(f"pod {pod.name} is paused: unpause it first")
        if infra.status not in ("running", "stopping"):
            self.containers.start(infra.id)

    def start(self, text: str) -> Pod:
        pod = self.get(text)
        infra = self.infra(pod)
        if infra is not None and infra.status not in ("running", "stopping", "paused"):
            self.containers.start(infra.id)
        errors = []
        for member in self.members(pod):
            if member.status in ("created", "exited"):
                try:
                    self.containers.start(member.id)
                except ManagerError as err:
                    errors.append(f"{member.name}: {err}")
        events.emit(self.paths, "start", "pod", id=pod.id, name=pod.name)
        if errors:
            raise ManagerError(f"pod {pod.name}: some containers did not start: {'; '.join(errors)}")
        return pod

    def stop(self, text: str, timeout: int | None = None) -> Pod:
        """Members first (each its stop signal, then SIGKILL after the timeout), the infra last."""
        pod = self.get(text)
        for container in [*self.members(pod), *([self.infra(pod)] if pod.has_infra else [])]:
            if container is not None and container.status in ("running", "paused", "stopping"):
                self.containers.stop(container.id, timeout)
        events.emit(self.paths, "stop", "pod", id=pod.id, name=pod.name)
        return pod

    def restart(self, text: str, timeout: int | None = None) -> Pod:
        pod = self.stop(text, timeout)
        return self.start(pod.id)

    def _sandbox(self, pod: Pod):
        """The running pod's capsa sandbox (its infra container's), None for a pod without infra
        or one whose infra container is not running, or one run by a runtime binary."""
        infra = self.infra(pod)
        if infra is None or infra.status not in ("running", "paused", "stopping") or infra.runtime_path:
            return None
        from capsa.sandbox import Sandbox, SandboxNotFoundError

        try:
            return Sandbox.load(self.paths.state_root, infra.id)
        except SandboxNotFoundError:
            return None

    def kill(self, text: str, signal: int = 9) -> Pod:
        """Every container's init gets the signal: through the sandbox (members, then the holder,
        under its exclusive lock), or one by one for a pod without infra."""
        pod = self.get(text)
        running = [c for c in self.containers_of(pod) if c.status in ("running", "paused", "stopping")]
        if not running:
            raise InvalidState(f"cannot kill pod {pod.name}: no container of it is running")
        paused = [c for c in running if c.status == "paused"]
        sandbox = self._sandbox(pod)
        if sandbox is not None:
            sandbox.kill(signal)
            for container in running:
                events.emit(self.paths, "kill", id=container.id, name=container.name,
                             image=container.config.get("ImageName", ""), attributes={"signal": str(signal)})
            if paused and sandbox.status() == "paused":
                sandbox.resume()  # a frozen process acts on its signal (even SIGKILL, on cgroup v1) once thawed
                self._record_status(paused, "paused", "running")
        else:
            for container in running:
                try:
                    self.containers.kill(container.id, signal)
                except InvalidState:
                    pass  # exited meanwhile
            for container in paused:
                try:
                    self.containers.unpause(container.id)
                except ManagerError:
                    pass  # exited meanwhile
        events.emit(self.paths, "kill", "pod", id=pod.id, name=pod.name)
        return pod

    def pause(self, text: str) -> Pod:
        return self._freeze(text, pause=True)

    def unpause(self, text: str) -> Pod:
        return self._freeze(text, pause=False)

    def _freeze(self, text: str, pause: bool) -> Pod:
        """Pause (or unpause) every running container of the pod: through the sandbox (each
        container's freezer, the holder's last, under the sandbox's exclusive lock), then the
        store records them paused (running)."""
        from capsa.errors import CapsaError

        pod = self.get(text)
        word, wanted, becomes = ("pause", "running", "paused") if pause else ("unpause", "paused", "running")
        targets = [c for c in self.containers_of(pod) if c.status == wanted]
        if not targets:
            raise InvalidState(f"cannot {word} pod {pod.name}: no container of it is {wanted}")
        sandbox = self._sandbox(pod)
        if sandbox is not None and (pause or sandbox.status() == "paused"):
            try:
                sandbox.pause() if pause else sandbox.resume()
            except CapsaError as err:
                raise ManagerError(f"cannot {word} pod {pod.name}: {err}") from None
            self._record_status(targets, wanted, becomes)
            for container in targets:
                events.emit(self.paths, word, id=container.id, name=container.name,
                            image=container.config.get("ImageName", ""))
        else:
            for container in targets:
                self.containers.pause(container.id) if pause else self.containers.unpause(container.id)
        events.emit(self.paths, word, "pod", id=pod.id, name=pod.name)
        return pod

    def _record_status(self, targets: list, wanted: str, becomes: str) -> None:
        with self.store.transaction() as db:
            for container in targets:
                current = self.containers._read(container.id, db)
                if current is not None and current.status == wanted:
                    self.containers._write(db, current, becomes)

    # -- remove ------------------------------------------------------------------------------------
    def remove(self, text: str, force: bool = False, timeout: int | None = None) -> str:
        """Remove the pod: refused while it has members (they are named) or its infra container
        runs, unless force (members removed with rm -f, then the infra container)."""
        pod = self.get(text)
        members = self.members(pod)
        if not force:
            if members:
                raise InvalidState(f"pod {pod.name} has containers {', '.join(c.name for c in members)}: remove "
                                   "them first, or use pod rm --force")
            infra = self.infra(pod)
            if infra is not None and infra.status in ("running", "paused", "stopping"):
                raise InvalidState(f"pod {pod.name} is running: stop it first, or use pod rm --force")
        for member in members:
            self.containers.remove(member.id, force=True, timeout=timeout)
        infra = self.infra(pod)
        if infra is not None:
            self.containers.remove(infra.id, force=True, timeout=timeout, infra_ok=True)
        with self.store.transaction() as db:
            db.execute("DELETE FROM pods WHERE id = ?", (pod.id,))
        self._remove_cgroup(pod)
        events.emit(self.paths, "remove", "pod", id=pod.id, name=pod.name)
        return pod.id

    def _remove_cgroup(self, pod: Pod) -> None:
        """The pod's cgroup, if a member outlived its sandbox's delete (a crash): empty by now."""
        import glob

        for path in glob.glob(f"/sys/fs/cgroup/*{cgroup_parent(pod.id)}") + \
                glob.glob(f"/sys/fs/cgroup{cgroup_parent(pod.id)}"):
            try:
                os.rmdir(path)
            except OSError:
                pass

    def prune(self) -> list[str]:
        """Remove every pod none of whose containers runs (podman's pod prune)."""
        removed = []
        for pod in self.list():
            if any(c.status in ("running", "paused", "stopping") for c in self.containers_of(pod)):
                continue
            try:
                removed.append(self.remove(pod.id, force=True))
            except ManagerError:
                continue
        return removed

    # -- inspect -----------------------------------------------------------------------------------
    def inspect_data(self, pod: Pod) -> dict:
        """podman's `pod inspect` document (its key fields)."""
        containers = self.containers_of(pod)
        infra = next((c for c in containers if c.config.get("IsInfra")), None)
        shared = {"network": "net", "ipc": "ipc", "uts": "uts", "pid": "pid"}
        return {
            "Id": pod.id,
            "Name": pod.name,
            "Created": pod.created,
            "CreateCommand": pod.config.get("CreateCommand") or [],
            "State": pod_status([c.status for c in containers]),
            "Hostname": pod.hostname,
            "Labels": pod.config.get("Labels") or {},
            "CreateCgroup": True,
            "CgroupParent": cgroup_parent(pod.id).rsplit("/", 1)[0],
            "CgroupPath": cgroup_parent(pod.id),
            "CreateInfra": pod.has_infra,
            "InfraContainerID": pod.infra_id,
            "InfraConfig": {"PortBindings": _port_bindings(infra), "HostNetwork": pod.config.get("Network") == "host",
                            "Networks": [pod.config["Network"]] if pod.config.get("Network") else [],
                            "NetworkOptions": None, "pid_ns": "pod" if "pid" in pod.config.get("Share", []) else ""},
            "SharedNamespaces": [shared[k] for k in pod.config.get("Share") or []],
            "NumContainers": len(containers),
            "Containers": [{"Id": c.id, "Name": c.name, "State": c.status} for c in containers],
        }


def _port_bindings(infra) -> dict:
    if infra is None:
        return {}
    info = infra.state.get("network")
    if not info or not info.get("ports"):
        return {}
    from capsa.manager import network

    return network.ports_by_container_port(info["ports"])
