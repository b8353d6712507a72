"""Managed containers: records in the store, and their life (libpod's container_internal role).

A container is a row of the store's `containers` table: its id, name, image, status, the
`config` it was created with (the options, the OCI spec, its mounts) and its run-time `state`
(pid, monitor, exit code, times). Its files live under <graph root>/containers/<id>/ (the
overlay rootfs of storage.py, and userdata/: config.json, ctr.log, hostname, hosts,
resolv.conf), its exit file under <run root>/exits/<id>.

Life, and who writes what:
    create    a row (status created), in one transaction: the name's uniqueness is the
              database's (10 parallel creates of one name: one row, nine NameInUse). Nothing
              else is made: start makes every file, idempotently.
    start     claims the container (state.Starter: this process), mounts the rootfs, writes the
              bundle, launches the monitor (monitor.launch: it creates the container through
              the runtime and keeps it), records the monitor, lets the caller attach, then
              runtime.start and status running.
    exit      the monitor calls `on_exit` (in its own process, with its own Store): the runtime
              container is deleted, the rootfs unmounted, then ExitCode, FinishedAt and
              OOMKilled are recorded and status becomes exited, then the `died` event; a --rm
              container is removed (unless a foreground `run` is still there to read its exit).
    stop      the stop signal, then SIGKILL after the timeout (libpod's stop); returns once the
              monitor has recorded the exit.
    rm        status removing, runtime container deleted, its monitor's end awaited, files
              removed, row deleted (in that order: a crash leaves a "removing" row that the
              next rm finishes).

Consistency after a crash (kill -9 of capsactl anywhere): every reader "syncs" a container
whose row says running/paused/stopping but whose monitor is gone (it finishes the exit from
the exit file, or records an unknown exit), and one whose starter died mid-start (the runtime
is asked what became of it). A start finds and removes what an interrupted one left (a
runtime container, a monitor). See docs/capsactl.md, "## Containers".

Boot refresh: `refresh_after_reboot` (registered with the store on every open) turns running
containers into exited ones and clears run-time files that a reboot made stale.
"""

from __future__ import annotations

import os
import time

from capsa.manager import events
from capsa.manager.errors import AmbiguousId, InvalidState, ManagerError, NameInUse, NoSuchContainer
from capsa.manager.store import dumps, is_unique_violation, loads, valid_name

CREATED, RUNNING, PAUSED, STOPPING, EXITED, REMOVING = "created", "running", "paused", "stopping", "exited", "removing"
ACTIVE = (RUNNING, PAUSED, STOPPING)  # a monitor and a runtime container exist
ON_EXIT = "capsa.manager.exithook:on_exit"  # light to import; it calls on_exit below when it has to
ZERO_TIME = "0001-01-01T00:00:00Z"
DEFAULT_STOP_TIMEOUT = 10
# podman's default for root is its bridge network (capsa.manager.network.default_network_mode());
# capsactl's is none, so that a plain `run` makes no bridge, veth or iptables rule on the host:
# `--network bridge` (or a network's name) asks for one.
DEFAULT_NETWORK_MODE = "none"


class StartError(ManagerError):
    """The container's process could not be started: 127 when its command is not found, 126
    when it cannot be executed (podman's and the shell's codes)."""

    def __init__(self, message: str, exit_code: int = 125):
        super().__init__(message)
        self.exit_code = exit_code


def start_error_code(message: str) -> int:
    """podman's: 127 not found, 126 cannot be run, else 125 (the monitor's one mapping)."""
    from capsa.manager.monitor import error_exit_code

    return error_exit_code(message)


def _merge_hook_dirs(spec: dict, directories: list[str] | None, bind_mounts: bool) -> list[str]:
    """OCI hooks directories (podman's --hooks-dir, repeatable, later ones masking earlier ones'
    files of the same name; by default /usr/share/containers/oci/hooks.d and
    /etc/containers/oci/hooks.d): the matching hooks merged into the spec at create
    (capsa.manager.hooksdir); the names of the files that matched. `bind_mounts`: the container
    has -v volumes (hasBindMounts, libpod's meaning). Not even imported when none of the
    directories exists (most machines)."""
    if directories is None:
        directories = ["/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d"]
    else:
        for directory in directories:  # asked for by name: a typo is an error, not an empty directory
            if not os.path.isdir(directory):
                raise ManagerError(f"--hooks-dir {directory}: no such directory")
    if not any(os.path.isdir(d) for d in directories):
        return []
    from capsa.manager import hooksdir

    return hooksdir.merge(spec, hooksdir.load(directories, warn=_warn), bind_mounts=bind_mounts)


def _add_annotations(spec: dict, items: list[str]) -> None:
    """--annotation KEY=VALUE (podman's) into the spec's annotations, before the hooks
    directories are matched against them."""
    for item in items:
        key, eq, value = item.partition("=")
        if not key or not eq:
            raise ManagerError(f"--annotation {item!r}: give KEY=VALUE")
        spec.setdefault("annotations", {})[key] = value


def _warn(text: str) -> None:
    """What the runtime printed while creating the container (runc's warnings), as podman shows it."""
    import sys

    for line in text.splitlines():
        sys.stderr.write(f"WARN[0000] {line}\n")


def _log_options(items: list[str]) -> tuple[int | None, int]:
    """--log-opt max-size=10m, max-file=3 (podman's k8s-file options); others are errors."""
    from capsa.manager.ocispec import parse_size

    max_size, max_files = None, 1
    for item in items:
        key, _, value = item.partition("=")
        if key == "max-size":
            max_size = parse_size(value, "--log-opt max-size")
        elif key == "max-file":
            if not value.isdigit() or int(value) < 1:
                raise ManagerError(f"--log-opt {item!r}: max-file is a number of files, at least 1")
            max_files = int(value)
        elif key in ("path", "tag"):
            raise ManagerError(f"--log-opt {key}: not supported by capsactl (the log is userdata/ctr.log)")
        else:
            raise ManagerError(f"--log-opt {item!r}: unknown option (max-size=, max-file=)")
    return max_size, max_files


def now() -> str:
    """RFC 3339 with nanoseconds, UTC (podman's StartedAt/FinishedAt)."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


_ADJECTIVES = ("brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
               "nifty", "proud", "quiet", "sharp", "tender", "vivid", "witty", "zen")
_NOUNS = ("ant", "bee", "crane", "dove", "eagle", "finch", "gecko", "heron", "ibis", "koala", "lynx", "moth",
          "newt", "otter", "panda", "quail", "robin", "swan", "tapir", "wren")


def random_name() -> str:
    a, b, c = os.urandom(3)
    return f"{_ADJECTIVES[a % len(_ADJECTIVES)]}_{_NOUNS[b % len(_NOUNS)]}{c}"


def free_name(db, name: str, generated: bool, tries: int = 100) -> str:
    """The new container's name: `name` if no container has it. One capsactl made up (no --name)
    that is taken is made up again, as podman does: 92,160 names, so among 40 containers two
    share one about once in a hundred times. A name the user gave that is taken is NameInUse."""
    for _ in range(tries):
        owner = db.one("SELECT id FROM containers WHERE name = ?", (name,))
        if owner is None:
            return name
        if not generated:
            raise NameInUse("container", name, owner["id"])
        name = random_name()
    raise NameInUse("container", name, owner["id"])


def _alive(entry) -> bool:
    """entry: [pid, start time] of a process we recorded; is it still that process?"""
    if not entry:
        return False
    from capsa import procfs

    return procfs.is_alive(entry[0], entry[1])


def _me() -> list:
    from capsa import procfs

    return list(procfs.own_identity())


class Container:
    """One row of the containers table."""

    __slots__ = ("id", "name", "image_id", "status", "config", "state", "created")

    def __init__(self, row):
        self.id = row["id"]
        self.name = row["name"]
        self.image_id = row["image_id"]
        self.status = row["status"]
        self.config = loads(row["config"], f"container {row['name']}")
        self.state = loads(row["state"], f"container {row['name']}")
        self.created = row["created"]
        if not isinstance(self.config, dict) or not isinstance(self.state, dict) \
                or not isinstance(self.config.get("Spec"), dict):
            from capsa.manager.errors import StoreError

            raise StoreError(f"the store's record of container {row['name']} is corrupt (no config of a "
                             "container in it); remove it with rm --force")

    @property
    def spec(self) -> dict:
        return self.config["Spec"]

    @property
    def runtime_path(self) -> str | None:
        return self.config.get("OCIRuntime")

    @property
    def exit_code(self) -> int:
        return self.state.get("ExitCode", 0)

    @property
    def pid(self) -> int:
        return self.state.get("Pid", 0) if self.status in ACTIVE else 0

    @property
    def stop_signal(self) -> int:
        return self.config.get("StopSignal", 15)

    @property
    def stop_timeout(self) -> int:
        return self.config.get("StopTimeout", DEFAULT_STOP_TIMEOUT)

    @property
    def command(self) -> list[str]:
        return self.spec["process"]["args"]


class Containers:
    """The managed containers of one store."""

    def __init__(self, store, refresh: bool = True):
        self.store = store
        self.paths = store.paths
        if refresh:
            store.refresh_after_reboot([self._refresh_after_reboot])

    # -- parts ---------------------------------------------------------------------------------------
    @property
    def images(self):
        from capsa.manager.images import ImageStore

        return ImageStore(self.store)

    @property
    def storage(self):
        from capsa.manager.storage import RootfsStorage

        return RootfsStorage(self.paths, self.images)

    @property
    def volumes(self):
        from capsa.manager.volumes import Volumes

        return Volumes(self.store)

    def runtime(self, container: Container):
        from capsa.manager import runtime

        return runtime.for_container(self.paths, container.runtime_path)

    def userdata(self, container_id: str) -> str:
        return os.path.join(self.paths.container(container_id), "userdata")

    def log_path(self, container_id: str) -> str:
        return os.path.join(self.userdata(container_id), "ctr.log")

    def exit_file(self, container_id: str) -> str:
        return os.path.join(self.paths.exits, container_id)

    # -- lookup ------------------------------------------------------------------------------------
    def _read(self, container_id: str, db=None) -> Container | None:
        if db is not None:
            row = db.one("SELECT * FROM containers WHERE id = ?", (container_id,))
        else:
            rows = self.store.query("SELECT * FROM containers WHERE id = ?", (container_id,))
            row = rows[0] if rows else None
        return None if row is None else Container(row)

    def resolve_id(self, text: str) -> str:
        """A container's id from its name, id or a unique id prefix."""
        ids = self.store.ids_named("containers", text)
        if len(ids) == 1:
            return ids[0]
        if ids:
            raise AmbiguousId("container", text, ids)
        raise NoSuchContainer(text)

    def get(self, text: str, sync: bool = True) -> Container:
        """The container named or id'd by `text`, its status brought up to date."""
        container = self._read(self.resolve_id(text))
        if container is None:
            raise NoSuchContainer(text)
        return self.sync(container) if sync else container

    def list(self, sync: bool = True) -> list[Container]:
        containers = []
        for row in self.store.query("SELECT * FROM containers ORDER BY created"):
            try:
                container = Container(row)
            except ManagerError as err:
                import sys

                sys.stderr.write(f"Warning: {err}\n")
                continue
            containers.append(self.sync(container) if sync else container)
        return containers

    def all_ids(self) -> list[str]:
        """Every container's id, readable record or not (rm --all --force removes both)."""
        return [r["id"] for r in self.store.query("SELECT id FROM containers ORDER BY created")]

    def exists(self, text: str) -> bool:
        try:
            self.resolve_id(text)
        except NoSuchContainer:
            return False
        return True

    # -- sync: what a crash or a dead monitor left ---------------------------------------------------
    def sync(self, container: Container) -> Container:
        if container.status in ACTIVE and not self._monitor_alive(container):
            self._finish_lost_exit(container)
            return self._read(container.id) or container
        if container.status == CREATED and container.state.get("Starter") and not _alive(container.state["Starter"]):
            self._finish_interrupted_start(container)
            return self._read(container.id) or container
        return container

    def _monitor_alive(self, container: Container) -> bool:
        monitor = container.state.get("Monitor")
        return _alive(monitor)

    def _finish_lost_exit(self, container: Container) -> None:
        """The monitor is gone without recording the exit (killed, or the machine's state was
        lost): record it from the exit file if there is one, and clean up."""
        from capsa.manager.monitor import read_exit_file

        code = read_exit_file(self.paths, container.id)
        self._release(container)
        self._record_exit(container.id, code if code is not None else -1,
                          error="" if code is not None else "the container's monitor died; its exit code is unknown")

    def _finish_interrupted_start(self, container: Container) -> None:
        """The process that was starting the container died: ask the runtime what became of it."""
        runtime = self.runtime(container)
        state = runtime.state(container.id)
        status = (state or {}).get("status")
        with self.store.transaction() as db:
            current = self._read(container.id, db)
            if current is None or current.state.get("Starter") != container.state.get("Starter"):
                return
            current.state.pop("Starter", None)
            if status == "running" and _alive(current.state.get("Monitor")):
                current.state.update(StartedAt=current.state.get("StartedAt") or now(), Pid=state.get("pid", 0))
                self._write(db, current, RUNNING)
            else:
                self._write(db, current, current.status)

    def _write(self, db, container: Container, status: str) -> None:
        db.execute("UPDATE containers SET status = ?, state = ? WHERE id = ?",
                   (status, dumps(container.state), container.id))
        container.status = status

    # -- create ------------------------------------------------------------------------------------
    def create(self, image_text: str, options: dict) -> Container:
        """A new container (status created) from an image and create's flags (see ocispec.build)."""
        from capsa.manager import ocispec

        restart_policy = _restart_policy_option(options)  # a bad --restart fails before anything is made
        image = self.images.resolve(image_text)
        container_id = os.urandom(32).hex()
        name = options.get("name") or random_name()
        if not valid_name(name):
            raise ManagerError(f"container name {name!r} is not valid: letters, digits, '_', '.' and '-', "
                               "starting with a letter or digit")
        pod, options = self._pod_for_create(options)
        process_defaults = image.config.get("config") or {}
        stop_signal = ocispec.parse_signal(options.get("stop_signal") or process_defaults.get("StopSignal") or 15)
        options = dict(options, stop_signal_number=stop_signal)
        mounts = self._volume_mounts(options.get("volumes") or [])
        mode = options.get("network") or DEFAULT_NETWORK_MODE
        options = dict(options, network=mode)
        netns_path = self._check_network(container_id, mode, list(options.get("ports") or []))
        spec = ocispec.build(container_id, image.config, options, rootfs=self.storage.merged(container_id),
                             userdata=self.userdata(container_id), mounts=mounts, netns_path=netns_path)
        if pod is not None:
            from capsa.manager import pods

            pods.apply_to_spec(spec, pod, container_id, infra=bool(options.get("pod_infra")))
        _add_annotations(spec, options.get("annotations") or [])
        hooks = _merge_hook_dirs(spec, options.get("hooks_dirs"), bind_mounts=bool(mounts))
        dependencies = self._resolve_requires(options.get("requires") or [])
        labels = dict(process_defaults.get("Labels") or {})
        labels.update(ocispec.parse_labels(options.get("labels") or []))
        config = {
            "Name": name, "Image": image_text, "ImageName": image.names[0] if image.names else image_text,
            "Spec": spec, "Mounts": mounts, "Labels": labels, "StopSignal": stop_signal,
            "StopTimeout": int(options["stop_timeout"]) if options.get("stop_timeout") is not None
            else DEFAULT_STOP_TIMEOUT,
            "AutoRemove": bool(options.get("rm")), "OCIRuntime": options.get("runtime"),
            "User": options.get("user") or process_defaults.get("User") or "",
            "Entrypoint": options.get("entrypoint"), "Cmd": list(options.get("command") or []),
            "Network": mode, "Ports": list(options.get("ports") or []), "Init": bool(options.get("init")),
            "Tmpfs": list(options.get("tmpfs") or []), "ReadOnly": bool(options.get("read_only")),
            "SecurityOpt": list(options.get("security_opt") or []), "CapAdd": list(options.get("cap_add") or []),
            "CapDrop": list(options.get("cap_drop") or []), "Tty": bool(options.get("tty")),
            "Interactive": bool(options.get("interactive")), "CreateCommand": options.get("create_command") or [],
            "LogOpts": list(options.get("log_opts") or []),  # --log-opt: the monitor's (max-size=, max-file=)
            "HooksFiles": hooks,
            "Healthcheck": _healthcheck_record(process_defaults, options),
            "RestartPolicy": restart_policy,
            "Dependencies": dependencies,  # --requires: ids, started first (start), block rm
        }
        if pod is not None:
            config.update(Pod=pod.id, IsInfra=bool(options.get("pod_infra")))
        if options.get("runtime"):
            from capsa.manager import runtime

            runtime.for_container(self.paths, options["runtime"])  # an unknown runtime fails here, not at start
        import sqlite3

        created = now()
        try:
            with self.store.transaction() as db:
                name = config["Name"] = free_name(db, name, generated=not options.get("name"))
                self._check_requires_exist(db, dependencies)
                for mount in mounts:
                    if mount["type"] == "volume":
                        self.volumes.create(mount["source"], anonymous=mount.get("anonymous", False),
                                            exist_ok=True, db=db)
                db.execute("INSERT INTO containers (id, name, image_id, status, config, state, created) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (container_id, name, image.id, CREATED, dumps(config), dumps({}), created))
        except sqlite3.IntegrityError as err:
            if is_unique_violation(err):
                raise NameInUse("container", name, self.resolve_id(name)) from None
            raise
        events.emit(self.paths, "create", id=container_id, name=name, image=config["ImageName"])
        return self._read(container_id)

    def _pod_for_create(self, options: dict):
        """`create --pod`: the pod (capsa.manager.pods) and the options as its member takes them;
        (None, options) for a container outside any pod."""
        if not options.get("pod"):
            return None, options
        from capsa.manager import pods

        return pods.Pods(self).prepare_member(options)

    def _check_network(self, container_id: str, mode: str, ports: list[str]) -> str | None:
        """--network and -p checked at create (capsa.manager.network: an unknown network, a bad
        port spec, ports without a bridge are errors now); the network namespace path the spec
        joins (made at start), or None for none (a new empty one) and host (none at all)."""
        if mode in ("none", "host"):
            if ports:
                raise ManagerError(f"-p/--publish needs a bridge network: --network {mode} has none to publish on")
            return None
        from capsa.manager import netns, network

        if mode.startswith("ns:"):
            return mode[3:]
        if mode in ("slirp4netns", "pasta", "private") or mode.startswith("container:"):
            raise ManagerError(f"--network {mode} is not supported by capsactl: use bridge, a network's name, "
                               "none or host")
        for name in mode.split(","):
            if name:
                network.get_network(self.paths, network.DEFAULT_NETWORK if name == "bridge" else name)
        network.parse_ports(ports)
        return netns.netns_path(self.paths, container_id)

    def _is_bridged(self, container: Container) -> bool:
        mode = container.config.get("Network", "none")
        return mode not in ("none", "host") and not mode.startswith("ns:")

    def _network_cleanup(self, container: Container, info: dict | None = None) -> None:
        """netavark teardown, addresses freed, namespace file removed: idempotent."""
        if not self._is_bridged(container):
            return
        from capsa.manager import network

        try:
            network.cleanup(self.paths, container.id, info if info is not None else container.state.get("network"))
        except ManagerError:
            pass

    def _volume_mounts(self, items: list[str]) -> list[dict]:
        """-v items -> mounts with their host paths (a named volume's path is known before it
        exists: <graph root>/volumes/<name>/_data)."""
        from capsa.manager import ocispec

        mounts = []
        for item in items:
            mount = ocispec.parse_volume(item)
            if mount["type"] == "bind":
                source = os.path.abspath(mount["source"])
                if not os.path.exists(source):
                    raise ocispec.SpecError(f"-v {item!r}: the host path {source} does not exist")
                mount["source"] = source
                mount["host_path"] = source
            else:
                if not mount["source"]:
                    mount["source"] = os.urandom(32).hex()
                    mount["anonymous"] = True
                mount["host_path"] = os.path.join(self.paths.volumes, mount["source"], "_data")
            mounts.append(mount)
        return mounts

    # -- dependencies (--requires) -------------------------------------------------------------------
    def _resolve_requires(self, names: list[str]) -> list[str]:
        """--requires names or ids -> container ids (kept by id: a rename does not break them)."""
        ids = []
        for name in names:
            try:
                container_id = self.resolve_id(name)
            except NoSuchContainer:
                raise ManagerError(f"--requires {name}: no such container (a required container must exist "
                                   "before the one that requires it)") from None
            if container_id not in ids:
                ids.append(container_id)
        return ids

    def _check_requires_exist(self, db, dependencies: list[str]) -> None:
        """In create's transaction: a required container removed since it was resolved is an error."""
        for container_id in dependencies:
            row = db.one("SELECT status FROM containers WHERE id = ?", (container_id,))
            if row is None or row["status"] == REMOVING:
                raise ManagerError(f"--requires {container_id[:12]}: the container is being removed")

    def requires_graph(self, db=None) -> tuple[dict[str, list[str]], dict[str, str]]:
        """Every container's dependencies by name (policy.start_order's and required_by's input,
        so that their errors name containers), and the names by id. A dependency that no longer
        exists appears by its short id, which is not a key: a missing dependency."""
        sql = "SELECT id, name, config FROM containers"
        rows = db.all(sql) if db is not None else self.store.query(sql)
        names = {row["id"]: row["name"] for row in rows}
        graph = {}
        for row in rows:
            try:
                dependencies = loads(row["config"], f"container {row['name']}").get("Dependencies") or []
            except (ManagerError, AttributeError):  # an unreadable record requires nothing we know of
                dependencies = []
            graph[row["name"]] = [names.get(d, d[:12]) for d in dependencies]
        return graph, names

    def _start_dependencies(self, container: Container) -> None:
        """libpod's startDependencies: every container `container` requires, recursively, started
        before it (depth-first, in --requires order); a cycle or a missing one is an error and
        nothing is started. A running dependency is left as it is."""
        from capsa.manager import policy

        graph, _ = self.requires_graph()
        order = policy.start_order(container.name, graph)
        for name in order[:-1]:
            dependency = self.get(name)
            if dependency.status == RUNNING:
                continue
            try:
                self._start_one(dependency, None)
            except ManagerError as err:
                raise ManagerError(f"cannot start {container.name}: its dependency {name} did not start: "
                                   f"{err}") from None

    def dependents(self, container: Container, db=None) -> list[str]:
        """The names of the containers that require `container`. Every rm asks (run --rm too):
        only the records that name its id are read, not the whole graph."""
        sql, args = "SELECT name, config FROM containers WHERE instr(config, ?) > 0 AND id != ?", \
            (container.id, container.id)
        rows = db.all(sql, args) if db is not None else self.store.query(sql, args)
        found = []
        for row in rows:
            try:
                dependencies = loads(row["config"], f"container {row['name']}").get("Dependencies") or []
            except (ManagerError, AttributeError):  # an unreadable record requires nothing we know of
                continue
            if container.id in dependencies:
                found.append(row["name"])
        return sorted(found)

    def _refuse_while_required(self, container: Container, db=None) -> None:
        """podman's rule, --force or not: a container others require stays until they are removed
        (rm --depend removes them first). Checked before anything is stopped, and again in the
        transaction that marks it removing (a create --requires of it in between loses or wins
        whole: both are write transactions)."""
        dependents = self.dependents(container, db)
        if dependents:
            raise InvalidState(f"container {container.name} has dependent containers which must be removed "
                               f"before it: {', '.join(dependents)} (rm --depend removes them too)")

    def removal_order(self, texts: list[str]) -> list[str]:
        """rm --depend and rm --all: the ids of `texts` and, recursively, of the containers that
        require them, dependents first."""
        from capsa.manager import policy

        graph, names = self.requires_graph()
        ids = {name: container_id for container_id, name in names.items()}
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:  # post-order along "required by": dependents first
            if name in order or name in visiting:  # done, or a (corrupt) cycle
                return
            visiting.add(name)
            for dependent in policy.required_by(name, graph):
                visit(dependent)
            visiting.discard(name)
            order.append(name)

        for text in texts:
            visit(self.get(text, sync=False).name)
        return [ids[name] for name in order]

    # -- start -------------------------------------------------------------------------------------
    def start(self, text: str, before_start=None, by_policy: bool = False, restore: dict | None = None) -> Container:
        """Start a created or exited container; `before_start(container)` runs once it exists
        in the runtime and before its process runs (to attach). Running already: nothing to do.
        by_policy: the restarter's start (capsa.manager.restarts), not the user's. restore: the
        runtime's restore keywords (capsa.manager.checkpoint): CRIU restores the container's
        process instead of running its command."""
        container = self.get(text)
        if container.status != RUNNING and restore is None and container.config.get("Dependencies"):
            self._start_dependencies(container)
        return self._start_one(container, before_start, by_policy, restore)

    def _start_one(self, container: Container, before_start, by_policy: bool = False,
                   restore: dict | None = None) -> Container:
        """Start this container alone (its dependencies are the caller's)."""
        if container.status == RUNNING and restore is None:
            return container
        if container.config.get("Pod") and not container.config.get("IsInfra"):
            from capsa.manager import pods

            pods.Pods(self).ensure_infra_running(container.config["Pod"])  # the sandbox first
        container = self._claim_start(container, by_policy)
        try:
            return self._start_claimed(container, before_start, restore)
        except BaseException:
            self._drop_claim(container)
            raise

    def _claim_start(self, container: Container, by_policy: bool = False) -> Container:
        with self.store.transaction() as db:
            current = self._read(container.id, db)
            if current is None:
                raise NoSuchContainer(container.name)
            if current.status not in (CREATED, EXITED):
                raise InvalidState(f"container {current.name} is {current.status}: only a created or exited "
                                   f"container can be started")
            if _alive(current.state.get("Starter")):
                raise InvalidState(f"container {current.name} is being started by process "
                                   f"{current.state['Starter'][0]}")
            _restart_bookkeeping(current, by_policy)
            current.state["Starter"] = _me()
            current.state.pop("Exited", None)
            self._write(db, current, current.status)
        return current

    def _drop_claim(self, container: Container) -> None:
        with self.store.transaction() as db:
            current = self._read(container.id, db)
            if current is not None and current.state.get("Starter") == container.state.get("Starter"):
                current.state.pop("Starter", None)
                self._write(db, current, current.status)

    def _start_claimed(self, container: Container, before_start, restore: dict | None = None) -> Container:
        from capsa.manager import monitor, ocispec

        self._clear_leftovers(container)
        image = self.images.get(container.image_id)
        storage = self.storage
        storage.create(container.id)
        rootfs = storage.mount(container.id, image.layers)
        userdata = self.userdata(container.id)
        spec = container.spec
        network_info = self._setup_network(container)
        try:
            ocispec.write_userdata_files(userdata, spec["hostname"], container.config.get("Network", "none"),
                                         network_info, container.name)
            spec["process"]["user"] = ocispec.resolve_user(rootfs, container.config.get("User", ""))
            self._prepare_volumes(container, rootfs)
            bundle = userdata
            from capsa.state import write_atomic

            write_atomic(os.path.join(bundle, "config.json"), dumps(spec), 0o600)
            max_size, max_files = _log_options(container.config.get("LogOpts") or [])
            held = self._reserve_ports(network_info)
            try:
                with self.store.closed_for_fork():
                    pid = monitor.launch(self.paths, container.id, bundle, runtime_path=container.runtime_path,
                                         log_path=self.log_path(container.id), on_exit=ON_EXIT,
                                         stdin=bool(container.config.get("Interactive")),
                                         tty=bool(container.config.get("Tty")), log_max_size=max_size,
                                         log_max_files=max_files, keep_fds=held, warn=_warn,
                                         health_interval=_health_interval(container), restore=restore)
            finally:
                for fd in held:  # the monitor holds its own copies until the container exits
                    os.close(fd)
        except (ManagerError, OSError) as err:  # OSError: no fork (EAGAIN: the machine's process limit)
            storage.unmount(container.id)
            self._network_cleanup(container, network_info)
            code = start_error_code(str(err))
            self._record_exit(container.id, code, error=str(err))
            raise StartError(f"{container.name}: {err}", code) from None
        monitor_entry = self._read_monitor(container.id)
        with self.store.transaction() as db:
            current = self._read(container.id, db)
            current.state.update(Pid=pid, Monitor=monitor_entry, StartedAt=now(), ExitCode=0, Error="",
                                 OOMKilled=False, network=network_info)
            current.state.pop("FinishedAt", None)
            _reset_health(current)
            self._write(db, current, current.status)
        events.emit(self.paths, "init", id=container.id, name=container.name, image=container.config["ImageName"])
        if before_start is not None:
            before_start(current)
        try:
            if restore is None:  # a restored process runs already
                self.runtime(container).start(container.id)
        except Exception as err:  # noqa: BLE001 - every failure of start is the container's failed start
            self._fail_start(current, str(err))
        with self.store.transaction() as db:
            current = self._read(container.id, db)
            current.state.pop("Starter", None)
            # The process may have exited (and the monitor recorded it) already: keep that.
            self._write(db, current, current.status if current.state.get("Exited") else RUNNING)
        events.emit(self.paths, "start", id=container.id, name=container.name, image=container.config["ImageName"])
        return current

    def _reserve_ports(self, network_info: dict | None) -> list[int]:
        """The published ports bound (podman's conmon holds them), for the monitor to hold while
        the container runs: no other process can take them meanwhile."""
        if not network_info or not network_info.get("ports"):
            return []
        from capsa.manager import network

        return network.reserve_ports(network_info["ports"])

    def _setup_network(self, container: Container) -> dict | None:
        """A bridged container's namespace set up by netavark (capsa.manager.network.for_run),
        recorded in the state at once (its clean-up needs it); None for none and host."""
        if not self._is_bridged(container) and not container.config.get("Network", "").startswith("ns:"):
            return None
        from capsa.manager import network

        _, info = network.for_run(self.paths, container.id, container.name, container.config["Network"],
                                  container.config.get("Ports") or [])
        try:
            with self.store.transaction() as db:
                current = self._read(container.id, db)
                current.state["network"] = info
                self._write(db, current, current.status)
        except BaseException:
            self._network_cleanup(container, info)
            raise
        return info

    def _fail_start(self, container: Container, message: str) -> None:
        code = start_error_code(message)
        self._drop_claim(container)  # the monitor's exit hook waits for the starter to let go
        runtime = self.runtime(container)
        try:
            runtime.delete(container.id, force=True)
        except ManagerError:
            pass
        self._wait_monitor(container, 10)
        self._record_exit(container.id, code, error=message)
        raise StartError(f"{container.name}: {message}", code)

    def _read_monitor(self, container_id: str) -> list | None:
        """[pid, start time] of the container's monitor, from its pid file ("pid start-time")."""
        from capsa import procfs

        try:
            with open(os.path.join(self.paths.monitor(container_id), "pid")) as f:
                fields = f.read().split()
            pid = int(fields[0])
            start_time = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else procfs.start_time(pid)
        except (OSError, ValueError, IndexError):
            return None
        return [pid, start_time]

    def _clear_leftovers(self, container: Container) -> None:
        """What an earlier life left: a monitor (an interrupted start), a runtime container, an
        exit file. The old monitor is waited for, so its exit hook cannot run during this start."""
        runtime = self.runtime(container)
        if runtime.state(container.id) is not None:
            try:
                runtime.delete(container.id, force=True)
            except ManagerError:
                pass
        monitor_entry = container.state.get("Monitor") or self._read_monitor(container.id)
        if _alive(monitor_entry):
            self._wait_monitor(container, 10, monitor_entry)
        self._network_cleanup(container)  # a run that was not cleaned up holds its addresses and ports
        for path in (self.exit_file(container.id), self.exit_file(container.id) + ".cleanup",
                     os.path.join(self.paths.monitor(container.id), "pid")):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _prepare_volumes(self, container: Container, rootfs: str) -> None:
        """Named volumes exist, and a new one gets what the image has at its mount point
        (podman's copy-up), if it is still empty."""
        for mount in container.config.get("Mounts") or []:
            if mount["type"] != "volume":
                continue
            os.makedirs(mount["host_path"], mode=0o755, exist_ok=True)
            volume = self.volumes.claim_copy_up(mount["source"])
            if volume is None or os.listdir(mount["host_path"]):
                continue
            from capsa.manager import copy

            try:
                copy.copy_out(rootfs, mount["destination"].rstrip("/") + "/.", mount["host_path"])
            except ManagerError:
                pass  # nothing there in the image: the volume stays empty

    def _wait_monitor(self, container: Container, timeout: float | None, entry=None) -> bool:
        """Wait for the container's monitor to end (it ends after its exit hook); True if it has."""
        entry = entry or container.state.get("Monitor")
        if not entry or entry[0] == os.getpid():
            return True
        from capsa.process import Process

        try:
            process = Process.open(entry[0], entry[1])
        except ProcessLookupError:
            return True
        try:
            process.wait(timeout)
        except TimeoutError:
            return False
        finally:
            process.close()
        return True

    # -- the exit (the monitor's hook) -------------------------------------------------------------
    def exited(self, container_id: str, status) -> None:
        """The monitor's exit hook: clean up, record the exit, emit `died`, remove a --rm one."""
        container = self._wait_for_starter(container_id)
        if container is None:
            return  # removed meanwhile: its rm cleans up
        oom = self._oom_killed(container)
        self._release(container)
        code = status.exit_code if status.known else None
        if code is None:
            from capsa.manager.monitor import read_exit_file

            code = read_exit_file(self.paths, container_id)
        recorded = self._record_exit(container_id, code if code is not None else -1, oom=oom)
        if recorded is not None and recorded.config.get("AutoRemove") and recorded.status == EXITED \
                and not _alive(recorded.state.get("Attached")):
            try:
                self.remove(recorded.id, force=True)
            except ManagerError:
                pass
        elif recorded is not None and recorded.status == EXITED and recorded.config.get("RestartPolicy", "no") != "no":
            from capsa.manager import restarts

            restarts.decide(self, recorded)

    # -- restart policies (capsa.manager.restarts) --------------------------------------------------
    def mark_restart_pending(self, container_id: str, streak: int) -> bool:
        """The exited container is to be restarted by its policy: RestartPending (which stop,
        kill, start and rm cancel), unless the user stopped it meanwhile."""
        with self.store.transaction() as db:
            current = self._read(container_id, db)
            if current is None or current.status != EXITED or current.state.get("StoppedByUser"):
                return False
            current.state.update(RestartPending=True, RestartStreak=streak)
            self._write(db, current, current.status)
        return True

    def restart_by_policy(self, container_id: str) -> bool:
        """The restarter's work: wait the back-off, then start the container again, unless it
        was stopped, started or removed meanwhile (the claim checks it); True if restarted."""
        from capsa.manager import policy

        container = self._read(container_id)
        if container is None or not container.state.get("RestartPending"):
            return False
        time.sleep(policy.backoff(container.state.get("RestartStreak", 0)))
        try:
            container = self.start(container_id, by_policy=True)
        except (InvalidState, NoSuchContainer):
            return False  # the user stopped, started or removed it during the back-off
        except StartError:  # recorded as the exit (125-127): the policy decides again, the back-off grows
            current = self._read(container_id)
            if current is not None and current.status == EXITED:
                from capsa.manager import restarts

                restarts.decide(self, current, seconds_run=0.0)
            return False
        events.emit(self.paths, "restart", id=container.id, name=container.name,
                    image=container.config["ImageName"],
                    attributes={"restartCount": str(container.state.get("RestartCount", 0))})
        return True

    def clean_up_after_exit(self, container_id: str, code: int) -> bool:
        """An attached client told the exit code by the monitor: the clean-up here, if the
        monitor's hook has not claimed it (capsa.manager.exithook; True), else wait for the
        hook's (False)."""
        from capsa.manager.cleanupclaim import claim

        if claim(self.paths, container_id):
            from capsa.process import ExitStatus

            self.exited(container_id, ExitStatus(code=code))
            return True
        self.wait(container_id)
        return False

    def _wait_for_starter(self, container_id: str, timeout: float = 30.0) -> Container | None:
        """The container once no process is starting it (libpod's container lock): a process
        that exits at once (`true`) must not have its runtime container deleted while the
        runtime's start is still at work on it (runc's start removes its exec.fifo last)."""
        deadline = time.monotonic() + timeout
        while True:
            container = self._read(container_id)
            if container is None or not _alive(container.state.get("Starter")) or time.monotonic() > deadline:
                return container
            time.sleep(0.002)

    def _oom_killed(self, container: Container) -> bool:
        from capsa.cgroups import for_spec
        from capsa.process import oom_kill_count

        try:
            return oom_kill_count(for_spec(container.spec, container.id)) > 0
        except (OSError, ManagerError, ValueError):
            return False
        except Exception:  # noqa: BLE001 - an OOM count we cannot read is no OOM kill to report
            return False

    def _release(self, container: Container) -> None:
        """Free what a run held: the runtime container, the rootfs mount (unless `mount`ed)."""
        try:
            self.runtime(container).delete(container.id, force=True)
        except ManagerError:
            pass
        self._network_cleanup(container)
        if not container.state.get("UserMounts"):
            self.storage.unmount(container.id)

    def _record_exit(self, container_id: str, code: int, oom: bool = False, error: str = "") -> Container | None:
        with self.store.transaction() as db:
            current = self._read(container_id, db)
            if current is None:
                return None
            current.state.update(ExitCode=code, FinishedAt=now(), OOMKilled=oom, Pid=0, Exited=True)
            if error:
                current.state["Error"] = error
            self._write(db, current, REMOVING if current.status == REMOVING else EXITED)
        events.emit(self.paths, "died", id=current.id, name=current.name, image=current.config["ImageName"],
                    attributes={"containerExitCode": str(code)})
        return current

    # -- stop, kill, wait --------------------------------------------------------------------------
    def stop(self, text: str, timeout: int | None = None) -> Container:
        """The stop signal, then SIGKILL after `timeout` seconds (default: the container's)."""
        container = self.get(text)
        if container.status not in ACTIVE:
            return self._cancel_restart(container, timeout)
        timeout = container.stop_timeout if timeout is None else timeout
        runtime = self.runtime(container)
        with self.store.transaction() as db:
            current = self._read(container.id, db)
            if current is not None and current.status in (RUNNING, PAUSED):
                current.state["StoppedByUser"] = True
                self._write(db, current, STOPPING if current.status == RUNNING else current.status)
        self._signal(runtime, container, container.stop_signal)
        if container.status == PAUSED:
            try:
                runtime.resume(container.id)  # a frozen process cannot act on its signal
            except ManagerError:
                pass
        if not self._wait_monitor(container, timeout):
            self._signal(runtime, container, 9, all_processes=True)
            if not self._wait_monitor(container, 30):
                raise ManagerError(f"container {container.name} did not exit 30 s after SIGKILL")
        events.emit(self.paths, "stop", id=container.id, name=container.name, image=container.config["ImageName"])
        return self.get(container.id)

    def _cancel_restart(self, container: Container, timeout: int | None) -> Container:
        """stop of a container waiting for its restart by policy: it stays exited (StoppedByUser).
        One the restarter is starting right now is stopped once that start is done."""
        if container.status == EXITED and _alive(container.state.get("Starter")):
            current = self._wait_for_starter(container.id)
            if current is not None and current.status in ACTIVE:
                return self.stop(current.id, timeout)
            return current or container
        if not container.state.get("RestartPending"):
            return container
        with self.store.transaction() as db:
            current = self._read(container.id, db)
            if current is None or not current.state.get("RestartPending"):
                return current or container
            current.state.pop("RestartPending", None)
            current.state["StoppedByUser"] = True
            self._write(db, current, current.status)
        events.emit(self.paths, "stop", id=container.id, name=container.name, image=container.config["ImageName"])
        return current

    def _mark_stopped_by_user(self, container: Container) -> None:
        """kill: the exit that follows is the user's doing, so no restart policy restarts it."""
        with self.store.transaction() as db:
            current = self._read(container.id, db)
            if current is not None and current.status in ACTIVE:
                current.state["StoppedByUser"] = True
                self._write(db, current, current.status)

    def _signal(self, runtime, container: Container, signal: int, all_processes: bool = False) -> None:
        try:
            runtime.kill(container.id, signal, all_processes)
        except Exception:  # noqa: BLE001 - it has exited already: nothing to signal
            if all_processes:
                try:
                    runtime.kill(container.id, signal, False)
                except Exception:  # noqa: BLE001
                    pass

    def kill(self, text: str, signal: int = 9) -> Container:
        container = self.get(text)
        if container.status not in ACTIVE:
            raise InvalidState(f"cannot kill container {container.name}: it is {container.status}, not running")
        self._mark_stopped_by_user(container)
        try:
            self.runtime(container).kill(container.id, signal)
        except Exception as err:  # noqa: BLE001
            raise ManagerError(f"cannot kill container {container.name}: {err}") from None
        events.emit(self.paths, "kill", id=container.id, name=container.name, image=container.config["ImageName"],
                    attributes={"signal": str(signal)})
        return container

    def wait(self, text: str, conditions: tuple[str, ...] = (EXITED,), interval: float = 0.25,
             timeout: float | None = None) -> int | None:
        """Block until the container's status is one of `conditions` (exited: it has stopped);
        its exit code. With `timeout`: None if that has not happened within it."""
        container = self.get(text)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if container.status in conditions:
                return container.exit_code
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            step = interval * 4 if remaining is None else min(interval * 4, remaining)
            if container.status in ACTIVE and container.state.get("Monitor"):
                self._wait_monitor(container, step)
            else:
                time.sleep(min(interval, step))
            current = self._read(container.id)
            if current is None:
                raise NoSuchContainer(text)
            container = self.sync(current)

    # -- remove ------------------------------------------------------------------------------------
    def remove(self, text: str, force: bool = False, volumes: bool = False, timeout: int | None = None,
               wait_monitor: bool = True, infra_ok: bool = False) -> str:
        """Remove a container (a running one only with `force`: it is stopped first); its id.
        wait_monitor False: its monitor's exit hook has nothing left to do (the caller cleaned
        up after the exit itself), so its end is not waited for."""
        from capsa.manager.errors import StoreError

        try:
            container = self.get(text)
        except StoreError:
            if not force:
                raise
            return self._remove_unreadable(self.resolve_id(text))
        if container.config.get("IsInfra") and not infra_ok:
            raise InvalidState(f"container {container.name} is the infra container of pod {container.config['Pod'][:12]}: "
                               "remove the pod (pod rm) instead")
        if force and container.status == EXITED and _alive(container.state.get("Starter")):
            self._wait_for_starter(container.id)  # the restarter's start: done first, then stopped below
            container = self.get(container.id)
        self._refuse_while_required(container)
        if container.status in ACTIVE or (container.status in (CREATED, EXITED)
                                          and _alive(container.state.get("Starter"))):
            if not force:
                raise InvalidState(f"cannot remove container {container.name} as it is {container.status}: "
                                   "stop it first, or use rm --force")
            if container.status in ACTIVE and timeout != 0:
                self.stop(container.id, timeout)
        with self.store.transaction() as db:
            current = self._read(container.id, db)
            if current is None:
                return container.id
            self._refuse_while_required(current, db)
            self._write(db, current, REMOVING)
        container = current
        runtime = self.runtime(container)
        try:
            runtime.delete(container.id, force=True)
        except ManagerError:
            pass
        if wait_monitor:
            self._wait_monitor(container, 30, container.state.get("Monitor") or self._read_monitor(container.id))
        self._network_cleanup(container)
        self.storage.remove(container.id)
        for path in (self.exit_file(container.id), self.exit_file(container.id) + ".cleanup"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        import shutil

        shutil.rmtree(self.paths.monitor(container.id), ignore_errors=True)
        with self.store.transaction() as db:
            db.execute("DELETE FROM containers WHERE id = ?", (container.id,))
        if volumes:
            for mount in container.config.get("Mounts") or []:
                if mount.get("anonymous"):
                    try:
                        self.volumes.remove(mount["source"])
                    except ManagerError:
                        pass
        events.emit(self.paths, "remove", id=container.id, name=container.name, image=container.config["ImageName"])
        return container.id

    def _remove_unreadable(self, container_id: str) -> str:
        """rm --force of a container whose record cannot be read: what can be found of it goes
        (capsa's runtime state, the rootfs mount, its files), then the row."""
        import shutil

        from capsa.manager import runtime

        try:
            runtime.for_container(self.paths, None).delete(container_id, force=True)
        except Exception:  # noqa: BLE001 - nothing of it in capsa's runtime
            pass
        self.storage.remove(container_id)
        shutil.rmtree(self.paths.monitor(container_id), ignore_errors=True)
        for path in (self.exit_file(container_id), self.exit_file(container_id) + ".cleanup"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        with self.store.transaction() as db:
            db.execute("DELETE FROM containers WHERE id = ?", (container_id,))
        events.emit(self.paths, "remove", id=container_id)
        return container_id

    def prune(self) -> list[tuple[str, int]]:
        """Remove every container that is not running (created or exited); (id, bytes) of each."""
        from capsa.manager.volumes import du

        removed = []
        # Newest first: a container is always newer than the ones it requires (they must exist
        # when it is created), so dependents go before what they depend on.
        for container in reversed(self.list()):
            if container.status in (EXITED, CREATED) and not _alive(container.state.get("Starter")):
                size = du(os.path.join(self.paths.container(container.id), "upper"))
                try:
                    self.remove(container.id)
                except ManagerError:
                    continue
                removed.append((container.id, size))
        return removed

    # -- restart, rename, pause ----------------------------------------------------------------------
    def restart(self, text: str, timeout: int | None = None) -> Container:
        container = self.get(text)
        if container.status in ACTIVE:
            self.stop(container.id, timeout)
        container = self.start(container.id)
        events.emit(self.paths, "restart", id=container.id, name=container.name, image=container.config["ImageName"])
        return container

    def rename(self, text: str, new_name: str) -> Container:
        import sqlite3

        if not valid_name(new_name):
            raise ManagerError(f"container name {new_name!r} is not valid: letters, digits, '_', '.' and '-', "
                               "starting with a letter or digit")
        container = self.get(text, sync=False)
        try:
            with self.store.transaction() as db:
                owner = db.one("SELECT id FROM containers WHERE name = ?", (new_name,))
                if owner is not None and owner["id"] != container.id:
                    raise NameInUse("container", new_name, owner["id"])
                current = self._read(container.id, db)
                current.config["Name"] = new_name
                db.execute("UPDATE containers SET name = ?, config = ? WHERE id = ?",
                           (new_name, dumps(current.config), container.id))
        except sqlite3.IntegrityError as err:
            if is_unique_violation(err):
                raise NameInUse("container", new_name, self.resolve_id(new_name)) from None
            raise
        events.emit(self.paths, "rename", id=container.id, name=new_name, image=container.config["ImageName"],
                    attributes={"oldName": container.name})
        return self._read(container.id)

    def pause(self, text: str) -> Container:
        return self._freeze(text, pause=True)

    def unpause(self, text: str) -> Container:
        return self._freeze(text, pause=False)

    def _freeze(self, text: str, pause: bool) -> Container:
        container = self.get(text)
        wanted, word = (RUNNING, "pause") if pause else (PAUSED, "unpause")
        if container.status != wanted:
            raise InvalidState(f"cannot {word} container {container.name}: it is {container.status}"
                               f"{'' if pause else ', not paused'}")
        runtime = self.runtime(container)
        try:
            runtime.pause(container.id) if pause else runtime.resume(container.id)
        except Exception as err:  # noqa: BLE001
            raise ManagerError(f"cannot {word} container {container.name}: {err}") from None
        with self.store.transaction() as db:
            current = self._read(container.id, db)
            if current is not None and current.status in ACTIVE:
                self._write(db, current, PAUSED if pause else RUNNING)
        events.emit(self.paths, word, id=container.id, name=container.name, image=container.config["ImageName"])
        return self._read(container.id) or container

    # -- processes and resources -------------------------------------------------------------------
    def cgroup(self, container: Container):
        from capsa.cgroups import for_spec

        return for_spec(container.spec, container.id)

    def processes(self, text: str) -> list[int]:
        container = self.get(text)
        if container.status not in ACTIVE:
            raise InvalidState(f"container {container.name} is {container.status}: top needs a running container")
        pids = sorted(set(self.cgroup(container).pids()))
        if not pids and container.pid:
            pids = [container.pid]
        return pids

    def stats(self, container: Container) -> dict:
        """The cgroup's figures (runc's events --stats shape) of a running container."""
        return self.cgroup(container).stats()

    # -- the rootfs: mount, cp, export ---------------------------------------------------------------
    def mount(self, text: str) -> str:
        container = self.get(text)
        if container.status == REMOVING:
            raise InvalidState(f"container {container.name} is being removed")
        image = self.images.get(container.image_id)
        self.storage.create(container.id)
        path = self.storage.mount(container.id, image.layers)
        with self.store.transaction() as db:
            current = self._read(container.id, db)
            current.state["UserMounts"] = current.state.get("UserMounts", 0) + 1
            self._write(db, current, current.status)
        events.emit(self.paths, "mount", id=container.id, name=container.name, image=container.config["ImageName"])
        return path

    def unmount(self, text: str, force: bool = False) -> Container:
        container = self.get(text)
        with self.store.transaction() as db:
            current = self._read(container.id, db)
            count = current.state.get("UserMounts", 0)
            current.state["UserMounts"] = 0 if force else max(0, count - 1)
            self._write(db, current, current.status)
        if current.state["UserMounts"] == 0 and current.status not in ACTIVE:
            self.storage.unmount(container.id)
        events.emit(self.paths, "unmount", id=container.id, name=container.name, image=container.config["ImageName"])
        return current

    def mounted_rootfs(self, text: str):
        """A context manager: the container's rootfs path, mounted for the time of the block if
        it was not (cp and export of a stopped container)."""
        from contextlib import contextmanager

        container = self.get(text)
        if container.status == REMOVING:
            raise InvalidState(f"container {container.name} is being removed")

        @contextmanager
        def mounted():
            storage = self.storage
            was_mounted = storage.is_mounted(container.id)
            if not was_mounted:
                storage.create(container.id)
                storage.mount(container.id, self.images.get(container.image_id).layers)
            try:
                yield container, storage.merged(container.id)
            finally:
                if not was_mounted:
                    current = self._read(container.id)
                    if current is None or (current.status not in ACTIVE and not current.state.get("UserMounts")):
                        storage.unmount(container.id)

        return mounted()

    def attach_marker(self, container_id: str, attached: bool) -> None:
        """Mark (or unmark) a foreground caller waiting for the container's exit: the exit hook
        then leaves a --rm container for that caller to remove once it has read the exit code."""
        with self.store.transaction() as db:
            current = self._read(container_id, db)
            if current is None:
                return
            if attached:
                current.state["Attached"] = _me()
            else:
                current.state.pop("Attached", None)
            self._write(db, current, current.status)

    # -- boot refresh ------------------------------------------------------------------------------
    def _forget_runtime_container(self, container: Container) -> None:
        """After a reboot nothing of the container's run is left; where something is (a
        simulated reboot, a boot id misread), its monitor is killed before it can record
        anything and the runtime deletes the container, its cgroup with it."""
        import signal

        monitor = container.state.get("Monitor")
        if _alive(monitor):
            try:
                os.kill(monitor[0], signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.runtime(container).delete(container.id, force=True)
        except Exception:  # noqa: BLE001 - nothing of it is there: the usual case after a reboot
            pass

    def _refresh_after_reboot(self, db) -> None:
        """A new boot: no container runs and nothing is mounted any more. Running containers
        become exited (exit code unknown), starts in progress are forgotten, and the run-time
        files of the old boot (exit files, monitor directories, the runtime's state) go."""
        import shutil

        finished = now()
        for row in db.all("SELECT * FROM containers"):
            try:
                container = Container(row)
            except ManagerError:
                continue
            state = container.state
            if container.status in ACTIVE:
                self._forget_runtime_container(container)
            for key in ("Starter", "Monitor", "Attached", "UserMounts", "network", "RestartPending"):
                state.pop(key, None)
            status = container.status
            if status in ACTIVE:
                state.update(ExitCode=-1, FinishedAt=finished, Pid=0, Exited=True,
                             Error="the machine rebooted while the container ran")
                status = EXITED
            self._write(db, container, status)
            self.storage.unmount(container.id)  # none after a real reboot; a stale one otherwise
            shutil.rmtree(os.path.join(self.paths.state_root, container.id), ignore_errors=True)
        for directory in (self.paths.exits, os.path.join(self.paths.run_root, "monitors")):
            shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(self.paths.exits, mode=0o700, exist_ok=True)
        from capsa.manager import network

        network.forget_after_reboot(self.paths)


def _healthcheck_record(image_config: dict, options: dict) -> dict | None:
    """Config.Healthcheck: the --health-* flags over the image's Healthcheck (None: no check).
    A malformed option is an error here, before anything is stored."""
    from capsa.manager.health import HealthConfig

    flags = options.get("healthcheck") or {}
    config = HealthConfig.from_flags(flags.get("cmd"), flags.get("interval"), flags.get("timeout"),
                                     flags.get("retries"), flags.get("start_period"), flags.get("on_failure"),
                                     image_healthcheck=image_config.get("Healthcheck"),
                                     no_healthcheck=bool(flags.get("none")))
    return config.record() if config is not None else None


def _health_interval(container: Container) -> float | None:
    """How often the monitor runs the container's health check (None: never, or only by hand)."""
    record = container.config.get("Healthcheck")
    return record["Interval"] / 1e9 if record and record.get("Interval") else None


def _reset_health(container: Container) -> None:
    """A new run's health status starts over (starting), its log kept; no check: no Health."""
    if container.config.get("Healthcheck"):
        from capsa.manager.health import HealthState

        previous = HealthState.from_record(container.state.get("Health"))
        container.state["Health"] = HealthState(log=previous.log).record()
    else:
        container.state.pop("Health", None)


def health_inspect(container: Container) -> dict:
    """State.Health of podman's inspect: Status (starting, healthy, unhealthy; "" without a
    check), FailingStreak, Log (the last results: Start, End, ExitCode, Output)."""
    health = container.state.get("Health")
    if not container.config.get("Healthcheck") or not health:
        return {"Status": "", "FailingStreak": 0, "Log": None}
    return {"Status": health.get("Status", ""), "FailingStreak": health.get("FailingStreak", 0),
            "Log": health.get("Log") or []}


def _restart_policy_option(options: dict) -> str:
    """--restart checked (policy.RestartPolicy.parse: a malformed one is an error naming it) and
    kept in its canonical text; podman's refusal of --rm with a policy that restarts."""
    from capsa.manager.policy import RestartPolicy

    rule = RestartPolicy.parse(options.get("restart"))
    if rule.name != "no" and options.get("rm"):
        raise ManagerError(f"--rm conflicts with --restart {rule}: a container removed at its exit cannot be "
                           "restarted (use --restart no)")
    return str(rule)


def _restart_bookkeeping(container: Container, by_policy: bool) -> None:
    """In start's claim: the restarter's start counts one restart, and only happens while the
    restart is still wanted (RestartPending, not StoppedByUser); the user's start is a new life
    (podman resets RestartCount) that restart policies watch again."""
    state = container.state
    if by_policy:
        if not state.get("RestartPending") or state.get("StoppedByUser"):
            raise InvalidState(f"container {container.name}: its restart was cancelled")
        state["RestartCount"] = state.get("RestartCount", 0) + 1
        state["RestartStreak"] = state.get("RestartStreak", 0) + 1
    else:
        state.update(RestartCount=0, RestartStreak=0)
        state.pop("StoppedByUser", None)
    state.pop("RestartPending", None)


def _restart_policy_record(text: str | None) -> dict:
    from capsa.manager.policy import RestartPolicy

    try:
        return RestartPolicy.parse(text or "no").record()
    except ManagerError:
        return {"Name": "", "MaximumRetryCount": 0}


def on_exit(paths, container_id: str, status) -> None:
    """The monitor's exit hook (monitor.launch on_exit): runs in the monitor's process, so it
    opens a Store of its own."""
    from capsa.manager.store import Store

    # A failure's traceback goes to the monitor's log (monitors/<id>/monitor.log, then kept).
    store = Store(paths)
    try:
        Containers(store, refresh=False).exited(container_id, status)
    finally:
        store.close()


def inspect_data(manager: Containers, container: Container) -> dict:
    """podman's `container inspect` document (its key fields)."""
    spec = container.spec
    state = container.state
    status = container.status
    process = spec.get("process") or {}
    resources = (spec.get("linux") or {}).get("resources") or {}
    config = container.config
    memory = (resources.get("memory") or {}).get("limit", 0)
    cpu = resources.get("cpu") or {}
    mounts = [{"Type": m["type"], "Name": m["source"] if m["type"] == "volume" else "",
               "Source": m["host_path"], "Destination": m["destination"], "Driver": "local" if m["type"] == "volume"
               else "", "Mode": "", "Options": [o for o in m["options"] if o not in ("ro", "rw")],
               "RW": "ro" not in m["options"], "Propagation": "rprivate"} for m in config.get("Mounts") or []]
    userdata = manager.userdata(container.id)
    env = process.get("env") or []
    return {
        "Id": container.id,
        "Created": container.created,
        "Path": container.command[0] if container.command else "",
        # podman's: the arguments after the path, or the path itself when there are none
        "Args": container.command[1:] if len(container.command) > 1 else list(container.command),
        "State": {
            "OciVersion": spec.get("ociVersion", ""),
            "Status": status,
            "Running": status in (RUNNING, STOPPING),
            "Paused": status == PAUSED,
            "Restarting": bool(state.get("RestartPending")) and status == EXITED,
            "OOMKilled": bool(state.get("OOMKilled")),
            "Dead": False,
            "Pid": container.pid,
            "ConmonPid": (state.get("Monitor") or [0])[0] if status in ACTIVE else 0,
            "ExitCode": container.exit_code,
            "Error": state.get("Error", ""),
            "StartedAt": state.get("StartedAt", ZERO_TIME),
            "FinishedAt": state.get("FinishedAt", ZERO_TIME),
            "Health": health_inspect(container),
            "CheckpointedAt": state.get("CheckpointedAt", ZERO_TIME),
            "RestoredAt": state.get("RestoredAt", ZERO_TIME),
            "Checkpointed": bool(state.get("Checkpointed")),
            "Restored": bool(state.get("Restored")),
        },
        "Image": container.image_id,
        "ImageDigest": "",
        "ImageName": config.get("ImageName", ""),
        "Rootfs": "",
        "Pod": config.get("Pod", ""),
        "PidFile": "",
        "Dependencies": list(config.get("Dependencies") or []),
        "Namespace": "",
        "IsInfra": bool(config.get("IsInfra")),
        "IsService": False,
        "ExecIDs": [],
        "ResolvConfPath": os.path.join(userdata, "resolv.conf"),
        "HostnamePath": os.path.join(userdata, "hostname"),
        "HostsPath": os.path.join(userdata, "hosts"),
        "StaticDir": userdata,
        "OCIConfigPath": os.path.join(userdata, "config.json"),
        "OCIRuntime": config.get("OCIRuntime") or "capsa",
        "ConmonPidFile": os.path.join(manager.paths.monitor(container.id), "pid"),
        "Name": container.name,
        "RestartCount": state.get("RestartCount", 0),
        "Driver": manager.storage.driver,
        "MountLabel": "",
        "ProcessLabel": process.get("selinuxLabel", ""),
        "AppArmorProfile": process.get("apparmorProfile", ""),
        "EffectiveCaps": (process.get("capabilities") or {}).get("effective", []),
        "BoundingCaps": (process.get("capabilities") or {}).get("bounding", []),
        "GraphDriver": {"Name": manager.storage.driver, "Data": {
            "MergedDir": manager.storage.merged(container.id),
            "UpperDir": os.path.join(manager.paths.container(container.id), "upper"),
            "WorkDir": os.path.join(manager.paths.container(container.id), "work")}},
        "Mounts": mounts,
        "LogPath": manager.log_path(container.id),
        "NetworkSettings": _network_settings(state.get("network")),
        "Config": {
            "Hostname": spec.get("hostname", ""),
            "Domainname": "",
            "User": config.get("User", ""),
            "AttachStdin": bool(config.get("Interactive")),
            "AttachStdout": False,
            "AttachStderr": False,
            "Tty": bool(config.get("Tty")),
            "OpenStdin": bool(config.get("Interactive")),
            "StdinOnce": False,
            "Env": env,
            "Cmd": config.get("Cmd") or [],
            "Image": config.get("ImageName", ""),
            "Volumes": None,
            "WorkingDir": process.get("cwd", "/"),
            "Entrypoint": config.get("Entrypoint") or "",
            "Labels": config.get("Labels") or {},
            "Annotations": spec.get("annotations") or {},
            "StopSignal": config.get("StopSignal", 15),
            "CreateCommand": config.get("CreateCommand") or [],
            "StopTimeout": container.stop_timeout,
            "Umask": "0022",
            "OnBuild": None,
            "Timeout": 0,
            "Passwd": True,
            "sdNotifyMode": "container",
            "Healthcheck": config.get("Healthcheck"),
            "HealthcheckOnFailureAction": (config.get("Healthcheck") or {}).get("OnFailure", "none"),
        },
        "HostConfig": {
            "Binds": [f"{m['source']}:{m['destination']}:{','.join(m['options']) or 'rw'}"
                      for m in config.get("Mounts") or []],
            "CgroupManager": "cgroupfs",
            "CgroupParent": "/capsactl",
            "NetworkMode": config.get("Network", "none"),
            "AutoRemove": bool(config.get("AutoRemove")),
            "CapAdd": config.get("CapAdd") or [],
            "CapDrop": config.get("CapDrop") or [],
            "ReadonlyRootfs": bool(config.get("ReadOnly")),
            "SecurityOpt": config.get("SecurityOpt") or [],
            "Tmpfs": {item.partition(":")[0]: item.partition(":")[2] for item in config.get("Tmpfs") or []},
            "Init": bool(config.get("Init")),
            "Runtime": "oci",
            "Memory": memory,
            "NanoCpus": int(cpu.get("quota", 0) * 10**9 / cpu["period"]) if cpu.get("period") else 0,
            "CpuPeriod": cpu.get("period", 0),
            "CpuQuota": cpu.get("quota", 0),
            "PidsLimit": (resources.get("pids") or {}).get("limit", 0),
            "PortBindings": _port_bindings(state.get("network")),
            "RestartPolicy": _restart_policy_record(config.get("RestartPolicy")),
        },
    }


def _network_settings(info: dict | None) -> dict:
    from capsa.manager import network

    return network.inspect_settings(info)


def _port_bindings(info: dict | None) -> dict:
    if not info or not info.get("ports"):
        return {}
    from capsa.manager import network

    return network.ports_by_container_port(info["ports"])
