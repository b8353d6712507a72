"""The cgroupfs driver on cgroup v1 hosts, hybrid ones included (v1 controllers, with an empty
cgroup2 beside them, in which the container also gets a directory).

The container's init is placed in its cgroup by `create` before any user code runs; resources
from linux.resources are written to the controller files; the freezer pauses and resumes; every
process of the container is found through cgroup.procs; `delete` removes the directories.
"""

from __future__ import annotations

import errno
import posix

from capsa import posixlite
from capsa.cgroups.common import (
    Cgroup,
    CgroupError,
    create_error,
    denied,
    dirname,
    given,
    join_file_needing_write,
    own_cgroups,
    read,
    read_int,
    read_keyed,
    rmdir_quietly,
    wait_until,
)
from capsa.errors import ConfigError, UnsupportedError
from capsa.procfs import write_file

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["V1Cgroup", "v1_settings", "device_rules", "DEFAULT_ALLOWED_DEVICES", "CgroupError"]


class V1Cgroup(Cgroup):
    """One container's cgroup: a directory in every v1 hierarchy (and the hybrid cgroup2 one)."""

    @classmethod
    def at(cls, path: str, found: dict[str, str]) -> V1Cgroup:
        """linux.cgroupsPath `path` in each hierarchy of `found` (see common.hierarchies)."""
        own = own_cgroups()
        paths = {}
        for point, controllers in found.items():
            if path.startswith("/"):
                base = point
            else:  # relative: under the caller's own cgroup in that hierarchy, as runc does
                key = next((c for c in controllers.split(",") if c in own), "" if not controllers else None)
                base = point + (own.get(key, "/") if key is not None else "/").rstrip("/")
            paths[controllers] = posixlite.normpath(f"{base}/{path.strip('/')}")
        return cls(paths)

    # -- lookups ----------------------------------------------------------------------------------
    def path_for(self, controller: str) -> str | None:
        for controllers, directory in self.paths.items():
            if controller in controllers.split(","):
                return directory
        return None

    def _controller_dir(self, controller: str, field: str) -> str:
        directory = self.path_for(controller)
        if directory is None:
            raise UnsupportedError(f"{field}: the {controller} cgroup controller is not mounted on this host")
        return directory

    # -- life -----------------------------------------------------------------------------------
    def create(self, ignore_denied: bool = False) -> list[str]:
        """Make the directories; with ignore_denied (rootless), a hierarchy where the caller may
        not make the directory or move a process into it is dropped from `paths` instead of being
        an error. Returns the dropped hierarchies."""
        dropped = []
        for controllers, directory in list(self.paths.items()):
            try:
                _mkdir_inheriting_cpuset(directory, "cpuset" in controllers.split(","))
                if ignore_denied:
                    join = join_file_needing_write(controllers, directory)
                    if not posix.access(join, posix.W_OK):
                        rmdir_quietly(directory)
                        raise PermissionError(errno.EACCES, "cannot move processes into it", join)
            except OSError as err:
                if ignore_denied and denied(err):
                    del self.paths[controllers]
                    dropped.append(controllers)
                    continue
                raise create_error(directory, err) from None
        return dropped

    def add(self, pid: int) -> None:
        for directory in self.paths.values():
            write_file(posixlite.join(directory, "cgroup.procs"), str(pid))

    def self_join_files(self, with_cgroup2: bool = True) -> list[str]:
        """Files a single-threaded process writes "0" to, to move itself into this cgroup.

        Why not the parent writing the child's pid to cgroup.procs: moving another process takes
        the kernel's global cgroup_threadgroup_rwsem for writing, which waits for an RCU grace
        period (5-20 ms, measured) unless some migration happened just before. A thread moving
        itself through a v1 `tasks` file skips that lock (kernel >= 5.17,
        cgroup_procs_write_start): 0.5 ms for all v1 hierarchies, and children forked afterwards
        inherit the cgroup. cgroup2 has no such file (cgroup.threads refuses to cross domains):
        there the child is born in its cgroup (linux.fork_into_cgroup), and only where that is
        not possible does it join through cgroup.procs, paying the wait.
        """
        files = []
        for controllers, directory in self.paths.items():
            if controllers:
                files.append(posixlite.join(directory, "tasks"))
            elif with_cgroup2:
                files.append(posixlite.join(directory, "cgroup.procs"))
        return files

    def pids(self) -> list[int]:
        directory = self.path_for("pids") or self.path_for("freezer") or next(iter(self.paths.values()))
        try:
            with open(posixlite.join(directory, "cgroup.procs")) as f:
                return [int(line) for line in f.read().split()]
        except FileNotFoundError:
            return []

    # -- OOM notification (v1: an eventfd registered on memory.oom_control) ---------------------
    def oom_watch(self) -> OomEventfd | None:
        """Something to select() on that becomes readable when the container hits its memory limit."""
        directory = self.path_for("memory")
        if directory is None:
            return None
        efd = posix.eventfd(0, posix.EFD_CLOEXEC)
        control = posix.open(posixlite.join(directory, "memory.oom_control"), posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            write_file(posixlite.join(directory, "cgroup.event_control"), f"{efd} {control}")
        except OSError:
            posix.close(efd)
            raise
        finally:
            posix.close(control)
        return OomEventfd(efd)

    # -- freezer --------------------------------------------------------------------------------
    def freeze(self) -> None:
        self._set_freezer("FROZEN")

    def thaw(self) -> None:
        self._set_freezer("THAWED")

    def stats(self) -> dict[str, Any]:
        return stats(self)

    def can_freeze(self) -> bool:
        return self.path_for("freezer") is not None

    def is_frozen(self) -> bool:
        directory = self.path_for("freezer")
        if directory is None:
            return False
        try:
            with open(posixlite.join(directory, "freezer.state")) as f:
                return f.read().strip() == "FROZEN"
        except FileNotFoundError:
            return False

    def _set_freezer(self, state: str) -> None:
        directory = self._controller_dir("freezer", "pause/resume")
        path = posixlite.join(directory, "freezer.state")

        def reached() -> bool:
            write_file(path, state)  # written again: a task forked meanwhile is frozen too
            return read(path) == state  # FREEZING means: not all tasks are frozen yet

        wait_until(reached, state)

    # -- resources ------------------------------------------------------------------------------
    def apply(self, resources: dict[str, Any] | None, devices: list[dict[str, Any]] | None = None, rootless: bool = False,
              warn: Callable[[str], None] | None = None, with_devices: bool = True) -> None:
        """Write linux.resources to the controller files; a value the host cannot take is an error.

        `devices` (linux.devices) are allowed in the devices controller whatever the rules say.
        Rootless, device rules are skipped where they cannot be written, as runc does: they need
        CAP_SYS_ADMIN, which a delegated cgroup does not give.
        The one exception is memory.kernel: the spec deprecates it ("may be ignored by runtimes")
        and runc 1.1 ignores it, so a kernel that ignores or lacks it gets a `warn`, not an error.
        with_devices=False (update): the device rules set at create stay as they are.
        """
        for field, controller, filename, value in v1_settings(resources or {}, devices or [], with_devices):
            if rootless and controller == "devices" and (self.path_for("devices") is None or posix.geteuid() != 0):
                continue
            directory = self._controller_dir(controller, field)
            path = posixlite.join(directory, filename)
            if filename in IGNORED_BY_NEW_KERNELS and not posixlite.exists(path):
                _warn(warn, f"{field}: ignored, this host's kernel has no {filename}")
                continue
            if not posixlite.exists(path):
                raise UnsupportedError(f"{field}: this host's kernel has no {controller} file {filename}")
            try:
                write_file(path, value)
            except OSError as err:
                raise ConfigError(field, f"cannot write {value!r} to {path}: {err.strerror}") from None
            if filename in IGNORED_BY_NEW_KERNELS and read(path) != value:
                _warn(warn, f"{field}: ignored, this kernel accepts but does not enforce {filename} (deprecated since Linux 5.4)")


DEFAULT_ALLOWED_DEVICES = [
    {"type": "c", "major": -1, "minor": -1, "access": "m"},  # mknod of any node; use is what counts
    {"type": "b", "major": -1, "minor": -1, "access": "m"},
    {"type": "c", "major": 1, "minor": 3, "access": "rwm"},  # null
    {"type": "c", "major": 1, "minor": 5, "access": "rwm"},  # zero
    {"type": "c", "major": 1, "minor": 7, "access": "rwm"},  # full
    {"type": "c", "major": 1, "minor": 8, "access": "rwm"},  # random
    {"type": "c", "major": 1, "minor": 9, "access": "rwm"},  # urandom
    {"type": "c", "major": 5, "minor": 0, "access": "rwm"},  # tty
    {"type": "c", "major": 5, "minor": 1, "access": "rwm"},  # console
    {"type": "c", "major": 5, "minor": 2, "access": "rwm"},  # ptmx
    {"type": "c", "major": 136, "minor": -1, "access": "rwm"},  # pts
]


DENY_ALL = {"allow": False, "type": "a", "access": "rwm"}


def device_rules(resources: dict[str, Any], container_devices: list[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """What the device controller (v1) or filter (v2) gets, as runc builds it: deny everything,
    then linux.resources.devices in order, then the devices every container gets and those of
    linux.devices, which stay usable whatever the rules deny.

    The deny-all comes first even when the rules are missing or do not begin with one: a
    container given no rules must not inherit its parent's allow-all (with CAP_MKNOD it could
    then make and open the host's disks). A rule that allows everything ("a", as docker's
    --privileged sends) still does."""
    # FIFOs need no device permission: the controller and the eBPF filter know only c and b.
    own = [dict(d, allow=True, access="rwm") for d in container_devices if d.get("type") != "p"]
    return [DENY_ALL, *(resources.get("devices") or []),
            *(dict(rule, allow=True) for rule in DEFAULT_ALLOWED_DEVICES), *own]


def v1_settings(resources: dict[str, Any], container_devices: list[dict[str, Any]] = (),
                with_devices: bool = True) -> list[tuple[str, str, str, str]]:
    """(field, controller, file, value) for each resource set, in the order they must be written;
    the device rules (see device_rules) unless with_devices is false."""
    out: list[tuple[str, str, str, str]] = []
    add = out.append
    field = "linux.resources"
    rules = device_rules(resources, container_devices) if with_devices else []
    user_rules = len(resources.get("devices") or [])
    for position, rule in enumerate(rules):
        index = position - 1  # the deny-all that comes first is capsa's, not the config's
        where = f"{field}.devices[{index}]" if 0 <= index < user_rules else f"{field}.devices"
        add((where, "devices", "devices.allow" if rule.get("allow") else "devices.deny", _device_rule(rule)))
    memory = resources.get("memory") or {}
    for key, filename in (("limit", "memory.limit_in_bytes"), ("reservation", "memory.soft_limit_in_bytes"),
                          ("swap", "memory.memsw.limit_in_bytes"), ("kernel", "memory.kmem.limit_in_bytes"),
                          ("kernelTCP", "memory.kmem.tcp.limit_in_bytes")):
        if given(memory, key):
            add((f"{field}.memory.{key}", "memory", filename, str(memory[key])))
    if memory.get("swappiness") is not None:
        add((f"{field}.memory.swappiness", "memory", "memory.swappiness", str(memory["swappiness"])))
    if memory.get("disableOOMKiller") is not None:
        add((f"{field}.memory.disableOOMKiller", "memory", "memory.oom_control", "1" if memory["disableOOMKiller"] else "0"))
    if memory.get("useHierarchy") is not None:
        add((f"{field}.memory.useHierarchy", "memory", "memory.use_hierarchy", "1" if memory["useHierarchy"] else "0"))
    cpu = resources.get("cpu") or {}
    # period before quota: the kernel checks quota against the current period.
    for key, controller, filename in (("shares", "cpu", "cpu.shares"), ("period", "cpu", "cpu.cfs_period_us"),
                                      ("quota", "cpu", "cpu.cfs_quota_us"), ("burst", "cpu", "cpu.cfs_burst_us"),
                                      ("realtimePeriod", "cpu", "cpu.rt_period_us"),
                                      ("realtimeRuntime", "cpu", "cpu.rt_runtime_us"), ("idle", "cpu", "cpu.idle"),
                                      ("cpus", "cpuset", "cpuset.cpus"), ("mems", "cpuset", "cpuset.mems")):
        if given(cpu, key) or (key == "idle" and cpu.get(key) is not None):
            add((f"{field}.cpu.{key}", controller, filename, str(cpu[key])))
    pids = resources.get("pids") or {}
    if given(pids, "limit"):
        add((f"{field}.pids.limit", "pids", "pids.max", "max" if pids["limit"] <= 0 else str(pids["limit"])))
    out.extend(_blkio_settings(resources.get("blockIO") or {}, f"{field}.blockIO"))
    for index, limit in enumerate(resources.get("hugepageLimits") or []):
        add((f"{field}.hugepageLimits[{index}]", "hugetlb", f"hugetlb.{limit['pageSize']}.limit_in_bytes", str(limit["limit"])))
    network = resources.get("network") or {}
    if network.get("classID") is not None:
        add((f"{field}.network.classID", "net_cls", "net_cls.classid", str(network["classID"])))
    for index, priority in enumerate(network.get("priorities") or []):
        add((f"{field}.network.priorities[{index}]", "net_prio", "net_prio.ifpriomap", f"{priority['name']} {priority['priority']}"))
    for name, limits in (resources.get("rdma") or {}).items():
        parts = [f"{k}={limits[k]}" for k in ("hcaHandles", "hcaObjects") if limits.get(k) is not None]
        add((f"{field}.rdma.{name}", "rdma", "rdma.max", f"{name} " + " ".join(p.replace("hcaHandles", "hca_handle").replace("hcaObjects", "hca_object") for p in parts)))
    if resources.get("unified"):
        raise UnsupportedError(f"{field}.unified: raw cgroup v2 files need a cgroup v2 host (this one has v1 controllers)")
    return out


def _blkio_settings(block: dict[str, Any], field: str) -> list[tuple[str, str, str, str]]:
    out = []
    if block.get("weight"):
        out.append((f"{field}.weight", "blkio", "blkio.weight", str(block["weight"])))
    if block.get("leafWeight"):
        out.append((f"{field}.leafWeight", "blkio", "blkio.leaf_weight", str(block["leafWeight"])))
    for index, device in enumerate(block.get("weightDevice") or []):
        if device.get("weight") is not None:
            out.append((f"{field}.weightDevice[{index}]", "blkio", "blkio.weight_device",
                        f"{device['major']}:{device['minor']} {device['weight']}"))
    for key, filename in (("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
                          ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
                          ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
                          ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device")):
        for index, device in enumerate(block.get(key) or []):
            out.append((f"{field}.{key}[{index}]", "blkio", filename, f"{device['major']}:{device['minor']} {device['rate']}"))
    return out


def _device_rule(rule: dict[str, Any]) -> str:
    kind = rule.get("type") or "a"
    if kind == "a":
        return "a"
    if kind == "u":
        kind = "c"
    major = "*" if rule.get("major") in (None, -1) else str(rule["major"])
    minor = "*" if rule.get("minor") in (None, -1) else str(rule["minor"])
    return f"{kind} {major}:{minor} {rule.get('access') or 'rwm'}"


# Files the kernel still accepts writes to but no longer enforces: read back to tell.
IGNORED_BY_NEW_KERNELS = ("memory.kmem.limit_in_bytes",)


def _warn(warn: Callable[[str], None] | None, message: str) -> None:
    if warn is not None:
        warn(message)


def _mkdir_inheriting_cpuset(directory: str, is_cpuset: bool) -> None:
    """mkdir -p; in the cpuset hierarchy each new level must get cpus and mems before it takes a task."""
    missing = []
    while not posixlite.isdir(directory):
        missing.append(directory)
        directory = dirname(directory)
    for current in reversed(missing):
        try:
            posix.mkdir(current, 0o755)
        except FileExistsError:
            continue
        if is_cpuset:
            for name in ("cpuset.cpus", "cpuset.mems"):
                with open(posixlite.join(dirname(current), name)) as f:
                    write_file(posixlite.join(current, name), f.read().strip())


# -- statistics (events --stats) --------------------------------------------------------------------
def stats(cgroup: V1Cgroup) -> dict[str, Any]:
    """The container's resource usage in the shape of runc's `events --stats` data."""
    data: dict[str, Any] = {}
    cpuacct = cgroup.path_for("cpuacct")
    cpu = cgroup.path_for("cpu")
    if cpuacct:
        per_cpu = read(posixlite.join(cpuacct, "cpuacct.usage_percpu")).split() if posixlite.exists(
            posixlite.join(cpuacct, "cpuacct.usage_percpu")) else []
        ticks = read_keyed(posixlite.join(cpuacct, "cpuacct.stat"))
        nanoseconds_per_tick = 1_000_000_000 // posix.sysconf("SC_CLK_TCK")
        data["cpu"] = {"usage": {
            "total": read_int(posixlite.join(cpuacct, "cpuacct.usage")),
            "percpu": [int(v) for v in per_cpu],
            "kernel": ticks.get("system", 0) * nanoseconds_per_tick,
            "user": ticks.get("user", 0) * nanoseconds_per_tick,
        }}
    if cpu:
        throttling = read_keyed(posixlite.join(cpu, "cpu.stat"))
        data.setdefault("cpu", {"usage": {}})["throttling"] = {
            "periods": throttling.get("nr_periods", 0),
            "throttledPeriods": throttling.get("nr_throttled", 0),
            "throttledTime": throttling.get("throttled_time", 0),
        }
    memory = cgroup.path_for("memory")
    if memory:
        def entry(prefix: str) -> dict[str, int]:
            return {name: read_int(posixlite.join(memory, f"{prefix}.{file}"))
                    for name, file in (("limit", "limit_in_bytes"), ("usage", "usage_in_bytes"),
                                       ("max", "max_usage_in_bytes"), ("failcnt", "failcnt"))}
        data["memory"] = {"usage": entry("memory"), "swap": entry("memory.memsw"), "kernel": entry("memory.kmem"),
                          "kernelTCP": entry("memory.kmem.tcp"),
                          "raw": read_keyed(posixlite.join(memory, "memory.stat"))}
    pids = cgroup.path_for("pids")
    if pids:
        limit = read(posixlite.join(pids, "pids.max")) if posixlite.exists(posixlite.join(pids, "pids.max")) else "max"
        data["pids"] = {"current": read_int(posixlite.join(pids, "pids.current")),
                        "limit": 0 if limit == "max" else int(limit)}
    blkio = cgroup.path_for("blkio")
    if blkio:
        data["blkio"] = {key: _blkio_entries(posixlite.join(blkio, f"blkio.{file}"))
                         for key, file in (("ioServiceBytesRecursive", "throttle.io_service_bytes_recursive"),
                                           ("ioServicedRecursive", "throttle.io_serviced_recursive"))}
    return data


def _blkio_entries(path: str) -> list[dict[str, Any]]:
    entries = []
    try:
        lines = read(path).splitlines()
    except OSError:
        return entries
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, minor = parts[0].split(":")
            entries.append({"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])})
    return entries


class OomEventfd:
    """v1 OOM notification: an eventfd the kernel signals through cgroup.event_control."""

    def __init__(self, fd: int):
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def fired(self) -> bool:
        posix.eventfd_read(self.fd)
        return True

    def close(self) -> None:
        posix.close(self.fd)
