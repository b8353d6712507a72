"""cgroup v1's controller files: linux.resources as what is written to them (v1_settings, the
device rules, apply) and the usage read back (stats, for `events --stats`).

Only create, update and events need this; the driver itself (v1.py), which delete, kill --all,
pause and resume load, stays small: every call pays to load each module's code.
"""

from __future__ import annotations

import posix

from capsa import posixlite
from capsa.cgroups.common import exists, given, read, read_int, read_keyed
from capsa.errors import ConfigError, UnsupportedError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from capsa.cgroups.v1 import V1Cgroup

__all__ = ["DEFAULT_ALLOWED_DEVICES", "apply", "device_rules", "stats", "v1_settings"]


def apply(cgroup: V1Cgroup, resources: dict[str, Any] | None, devices: list[dict[str, Any]] | None, rootless: bool,
          warn: Callable[[str], None] | None, with_devices: bool) -> None:
    """Write linux.resources to the controller files of `cgroup`; a value the host cannot take is an error.

    `devices` (linux.devices) are allowed in the devices controller whatever the rules say.
    Rootless, device rules are skipped where they cannot be written, as runc does: they need
    CAP_SYS_ADMIN, which a delegated cgroup does not give.
    The one exception is memory.kernel: the spec deprecates it ("may be ignored by runtimes")
    and runc 1.1 ignores it, so a kernel that ignores or lacks it gets a `warn`, not an error.
    with_devices=False (update): the device rules set at create stay as they are.
    """
    files = _Files()
    try:
        for field, controller, filename, value in v1_settings(resources or {}, devices or [], with_devices):
            if rootless and controller == "devices" and (cgroup.path_for("devices") is None or posix.geteuid() != 0):
                continue
            directory = cgroup._controller_dir(controller, field)
            path = posixlite.join(directory, filename)
            if filename in IGNORED_BY_NEW_KERNELS and not exists(path):
                _warn(warn, f"{field}: ignored, this host's kernel has no {filename}")
                continue
            if not files.exists(path):
                raise UnsupportedError(f"{field}: this host's kernel has no {controller} file {filename}")
            try:
                files.write(path, value)
            except OSError as err:
                raise ConfigError(field, f"cannot write {value!r} to {path}: {err.strerror}") from None
            if filename in IGNORED_BY_NEW_KERNELS and read(path) != value:
                _warn(warn, f"{field}: ignored, this kernel accepts but does not enforce {filename} (deprecated since Linux 5.4)")
    finally:
        files.close()


class _Files:
    """The controller files apply() writes: each looked for once; consecutive writes to one file
    (the device rules: a dozen per container) made through one fd, each write(2) one value as
    the kernel reads them; a value written twice in a row (the deny-all capsa puts first and a
    config's own first rule) written once."""

    def __init__(self):
        self.seen: set[str] = set()
        self.path = ""
        self.fd = -1
        self.last = ""

    def exists(self, path: str) -> bool:
        if path in self.seen:
            return True
        if not exists(path):
            return False
        self.seen.add(path)
        return True

    def write(self, path: str, value: str) -> None:
        if path == self.path and value == self.last:
            return
        if path != self.path:
            self.close()
            self.fd = posix.open(path, posix.O_WRONLY | posix.O_CLOEXEC)
            self.path = path
        self.last = ""
        posix.write(self.fd, value.encode())
        self.last = value

    def close(self) -> None:
        if self.fd >= 0:
            posix.close(self.fd)
        self.fd, self.path, self.last = -1, "", ""


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


# -- statistics (events --stats) --------------------------------------------------------------------
def stats(cgroup: V1Cgroup) -> dict[str, Any]:
    """The container's resource usage in the shape of runc's `events --stats` data."""
    data: dict[str, Any] = {}
    cpuacct = cgroup.path_for("cpuacct")
    cpu = cgroup.path_for("cpu")
    if cpuacct:
        per_cpu = read(posixlite.join(cpuacct, "cpuacct.usage_percpu")).split() if exists(
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
        limit = read(posixlite.join(pids, "pids.max")) if exists(posixlite.join(pids, "pids.max")) else "max"
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
