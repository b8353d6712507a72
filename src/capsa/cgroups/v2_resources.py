"""cgroup v2's files: linux.resources as what is written to them (v2_settings, apply; the device
rules as an eBPF program, devices_bpf.py) and the usage read back (stats, for `events --stats`).

Only create, update and events need this; the driver itself (v2.py), which delete, kill --all,
pause and resume load, stays small: every call pays to load each module's code.
"""

from __future__ import annotations

import math
import posix

from capsa import posixlite
from capsa.cgroups.common import CGROUP_ROOT, exists, given, read, read_int, read_keyed
from capsa.errors import ConfigError, UnsupportedError
from capsa.procfs import write_file

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

    from capsa.cgroups.v2 import V2Cgroup

UNLIMITED = 2**64 - 1  # what runc reports for "max"
# Deprecated by the runtime-spec ("may be ignored by runtimes"); v2 has no file for them.
KERNEL_MEMORY_FIELDS = ("kernel", "kernelTCP")

__all__ = ["apply", "cpu_weight", "io_weight", "stats", "swap_max", "v2_settings"]


def apply(cgroup: V2Cgroup, resources: dict[str, Any] | None, devices: list[dict[str, Any]] | None,
          rootless: bool, warn: Any, with_devices: bool) -> None:
    """Write linux.resources to the v2 files; a value the host cannot take is an error.
    Rootless, device rules are skipped (attaching an eBPF program needs CAP_SYS_ADMIN in the
    initial user namespace; runc ignores the failure there)."""
    resources = resources or {}
    for key in KERNEL_MEMORY_FIELDS:
        if given(resources.get("memory") or {}, key) and warn is not None:
            warn(f"linux.resources.memory.{key}: ignored, cgroup v2 has no separate kernel memory limit "
                 "(memory.max covers kernel memory)")
    for field, name, value in v2_settings(resources):
        path = cgroup._file(name)
        if not exists(path):
            # As runc: no swap accounting is fine as long as nothing is asked of it, and an
            # older kernel without hugetlb reservations still gets the limit itself.
            if (name == "memory.swap.max" and value in ("max", "0")) or name.endswith(".rsvd.max"):
                continue
            raise UnsupportedError(f"{field}: {_missing(cgroup, name)}")
        try:
            write_file(path, value)
        except OSError as err:
            raise ConfigError(field, f"cannot write {value!r} to {path}: {err.strerror}") from None
    from capsa.cgroups.v1_resources import device_rules

    rules = device_rules(resources, devices or [])  # never empty: deny-all comes first
    if with_devices and not rootless:
        _attach_device_filter(cgroup, rules)


def _missing(cgroup: V2Cgroup, name: str) -> str:
    controller = name.split(".", 1)[0]
    if controller != "cgroup" and controller not in cgroup.controllers():
        return (f"the {controller} controller is not available in {cgroup.directory} "
                f"(its cgroup.controllers: {' '.join(cgroup.controllers()) or 'none'})")
    return f"this kernel has no cgroup file {name}"


def _attach_device_filter(cgroup: V2Cgroup, rules: list[dict[str, Any]]) -> None:
    from capsa.cgroups.devices_bpf import program
    from capsa.linux import bpf

    field = "linux.resources.devices"
    try:
        program_fd = bpf.load_program(program(rules))
    except OSError as err:
        raise UnsupportedError(f"{field}: cannot load the eBPF device filter: {err.strerror}") from None
    try:
        cgroup_fd = posix.open(cgroup.directory, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
        try:
            bpf.attach_to_cgroup(cgroup_fd, program_fd)
        finally:
            posix.close(cgroup_fd)
    except OSError as err:
        raise UnsupportedError(f"{field}: cannot attach the eBPF device filter: {err.strerror}") from None
    finally:
        posix.close(program_fd)  # the attachment keeps the program


# -- linux.resources -> v2 files ---------------------------------------------------------------------
def cpu_weight(shares: int) -> int:
    """cpu.shares (2..262144, default 1024) -> cpu.weight (1..10000, default 100), as runc 1.3+ and
    crun 1.23+ convert it: a quadratic in log2(shares) through both ends and 1024 -> 100. (Older
    runc used 1 + (shares - 2) * 9999 / 262142, which maps the default 1024 to 39.)"""
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    exponent = (math.log2(shares) ** 2 + 125 * math.log2(shares)) / 612.0 - 7.0 / 34.0
    return math.ceil(10**exponent)


def io_weight(blkio_weight: int) -> int:
    """blkio.weight (10..1000) -> io.weight (1..10000), as runc converts it."""
    return 1 + (blkio_weight - 10) * 9999 // 990


def swap_max(swap: int, memory: int, field: str) -> int:
    """OCI memory.swap is memory+swap; v2's memory.swap.max is swap alone (runc's conversion).
    -1 is unlimited, 0 unset."""
    if memory == -1 and swap == 0:
        return -1  # unlimited memory, swap not given: unlimited swap too, as v1 would have it
    if swap in (-1, 0):
        return swap
    if memory in (0, -1):
        raise ConfigError(f"{field}.swap", "a swap limit needs a memory limit")
    if memory < 0:
        raise ConfigError(f"{field}.limit", f"invalid memory limit {memory}")
    if swap < memory:
        raise ConfigError(f"{field}.swap", "memory+swap must be at least the memory limit")
    return swap - memory


def _limit(value: int) -> str:
    return "max" if value == -1 else str(value)


def v2_settings(resources: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(field, file, value) for each resource set, in the order they must be written."""
    out: list[tuple[str, str, str]] = []
    field = "linux.resources"
    out += _memory_settings(resources.get("memory") or {}, f"{field}.memory")
    out += _cpu_settings(resources.get("cpu") or {}, f"{field}.cpu")
    pids = resources.get("pids") or {}
    if given(pids, "limit"):
        out.append((f"{field}.pids.limit", "pids.max", "max" if pids["limit"] <= 0 else str(pids["limit"])))
    out += _io_settings(resources.get("blockIO") or {}, f"{field}.blockIO")
    for index, limit in enumerate(resources.get("hugepageLimits") or []):
        where = f"{field}.hugepageLimits[{index}]"
        out.append((where, f"hugetlb.{limit['pageSize']}.max", str(limit["limit"])))
        # Reservations too (Linux 5.7+), as runc, so that a reserved-but-unfaulted page counts.
        out.append((where, f"hugetlb.{limit['pageSize']}.rsvd.max", str(limit["limit"])))
    network = resources.get("network") or {}
    if network.get("classID") is not None or network.get("priorities"):
        raise UnsupportedError(f"{field}.network: cgroup v2 has no net_cls/net_prio (use an eBPF or nftables policy)")
    for name, limits in (resources.get("rdma") or {}).items():
        parts = [f"{key}={limits[spec]}" for spec, key in (("hcaHandles", "hca_handle"), ("hcaObjects", "hca_object"))
                 if limits.get(spec) is not None]
        out.append((f"{field}.rdma.{name}", "rdma.max", f"{name} " + " ".join(parts)))
    # Raw files last: they override what the fields above wrote, as in runc.
    for key, value in (resources.get("unified") or {}).items():
        if "/" in key or key.startswith(".") or key in ("", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
            raise ConfigError(f"{field}.unified.{key}", "not a cgroup file this cgroup's limits can be set through")
        out.append((f"{field}.unified.{key}", key, value))
    return out


def _memory_settings(memory: dict[str, Any], field: str) -> list[tuple[str, str, str]]:
    out = []
    limit = memory.get("limit") or 0
    swap = swap_max(memory.get("swap") or 0, limit, field)
    # swap first: lowering memory.max below what swap.max allows is refused otherwise (runc's order)
    if swap != 0:
        out.append((f"{field}.swap", "memory.swap.max", _limit(swap)))
    if given(memory, "limit"):
        out.append((f"{field}.limit", "memory.max", _limit(memory["limit"])))
    if given(memory, "reservation"):
        out.append((f"{field}.reservation", "memory.low", _limit(memory["reservation"])))
    # kernel and kernelTCP: no v2 file; V2Cgroup.apply warns (the spec lets runtimes ignore them).
    if memory.get("swappiness") is not None:
        raise UnsupportedError(f"{field}.swappiness: cgroup v2 has no per-cgroup swappiness")
    if memory.get("disableOOMKiller"):
        raise UnsupportedError(f"{field}.disableOOMKiller: cgroup v2 cannot turn the OOM killer off")
    if memory.get("useHierarchy") is False:
        raise UnsupportedError(f"{field}.useHierarchy: cgroup v2 is always hierarchical")
    return out


def _cpu_settings(cpu: dict[str, Any], field: str) -> list[tuple[str, str, str]]:
    out = []
    if cpu.get("idle") is not None:
        out.append((f"{field}.idle", "cpu.idle", str(cpu["idle"])))
    if given(cpu, "shares"):
        out.append((f"{field}.shares", "cpu.weight", str(cpu_weight(cpu["shares"]))))
    if given(cpu, "quota") or given(cpu, "period"):
        value = str(cpu["quota"]) if (cpu.get("quota") or 0) > 0 else "max"
        if given(cpu, "period"):
            value += f" {cpu['period']}"
        out.append((f"{field}.quota", "cpu.max", value))
    if cpu.get("burst") is not None:
        out.append((f"{field}.burst", "cpu.max.burst", str(cpu["burst"])))
    for key in ("realtimeRuntime", "realtimePeriod"):
        if given(cpu, key):
            raise UnsupportedError(f"{field}.{key}: cgroup v2 has no realtime CPU budget")
    if given(cpu, "cpus"):
        out.append((f"{field}.cpus", "cpuset.cpus", cpu["cpus"]))
    if given(cpu, "mems"):
        out.append((f"{field}.mems", "cpuset.mems", cpu["mems"]))
    return out


def _io_settings(block: dict[str, Any], field: str) -> list[tuple[str, str, str]]:
    """blockIO -> io.weight (or io.bfq.weight, which takes blkio's own scale) and io.max."""
    out = []
    bfq = exists(posixlite.join(CGROUP_ROOT, "io.bfq.weight")) or _bfq_anywhere()
    if block.get("weight"):
        out.append((f"{field}.weight", "io.bfq.weight", str(block["weight"])) if bfq
                   else (f"{field}.weight", "io.weight", str(io_weight(block["weight"]))))
    if block.get("leafWeight"):
        raise UnsupportedError(f"{field}.leafWeight: cgroup v2 has no leaf weight")
    for index, device in enumerate(block.get("weightDevice") or []):
        if device.get("weight") is not None:
            out.append((f"{field}.weightDevice[{index}]", "io.bfq.weight" if bfq else "io.weight",
                        f"{device['major']}:{device['minor']} "
                        f"{device['weight'] if bfq else io_weight(device['weight'])}"))
    for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                      ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for index, device in enumerate(block.get(key) or []):
            rate = device["rate"] or "max"  # 0 lifts the limit, as in v1
            out.append((f"{field}.{key}[{index}]", "io.max", f"{device['major']}:{device['minor']} {name}={rate}"))
    return out


def _bfq_anywhere() -> bool:
    """The BFQ scheduler's weight file shows only in non-root cgroups: look for it one level down."""
    try:
        return any(exists(posixlite.join(entry.path, "io.bfq.weight"))
                   for entry in posix.scandir(CGROUP_ROOT) if entry.is_dir())
    except OSError:
        return False


# -- statistics and OOM --------------------------------------------------------------------------------
def _max_value(path: str) -> int:
    try:
        value = read(path)
    except OSError:
        return 0
    return UNLIMITED if value == "max" else int(value) if value.isdigit() else 0


def stats(cgroup: V2Cgroup) -> dict[str, Any]:
    """The container's usage from the v2 files, in the shape of runc's `events --stats` data."""
    directory = cgroup.directory

    def path(name: str) -> str:
        return posixlite.join(directory, name)

    cpu = read_keyed(path("cpu.stat"))  # there even without the cpu controller
    data: dict[str, Any] = {"cpu": {
        "usage": {"total": cpu.get("usage_usec", 0) * 1000, "percpu": [],
                  "kernel": cpu.get("system_usec", 0) * 1000, "user": cpu.get("user_usec", 0) * 1000},
        "throttling": {"periods": cpu.get("nr_periods", 0), "throttledPeriods": cpu.get("nr_throttled", 0),
                       "throttledTime": cpu.get("throttled_usec", 0) * 1000},
    }}
    if exists(path("memory.current")):
        events = read_keyed(path("memory.events"))
        data["memory"] = {
            "usage": {"usage": read_int(path("memory.current")), "limit": _max_value(path("memory.max")),
                      "max": read_int(path("memory.peak")), "failcnt": events.get("max", 0)},
            "swap": {"usage": read_int(path("memory.swap.current")), "limit": _max_value(path("memory.swap.max"))},
            "raw": read_keyed(path("memory.stat")),
        }
    if exists(path("pids.current")):
        limit = _max_value(path("pids.max"))
        data["pids"] = {"current": read_int(path("pids.current")), "limit": 0 if limit == UNLIMITED else limit}
    if exists(path("io.stat")):
        data["blkio"] = _io_stats(path("io.stat"))
    hugetlb = {}
    for name in posix.listdir(directory):
        if name.startswith("hugetlb.") and name.endswith(".current") and not name.endswith(".rsvd.current"):
            size = name[len("hugetlb."):-len(".current")]
            hugetlb[size] = {"usage": read_int(path(name)), "max": _max_value(path(f"hugetlb.{size}.max")),
                             "failcnt": read_keyed(path(f"hugetlb.{size}.events")).get("max", 0)}
    if hugetlb:
        data["hugetlb"] = hugetlb
    return data


def _io_stats(path: str) -> dict[str, list[dict[str, Any]]]:
    """io.stat ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 ...") as runc's blkio recursive entries."""
    service_bytes, serviced = [], []
    try:
        lines = read(path).splitlines()
    except OSError:
        lines = []
    for line in lines:
        device, *pairs = line.split()
        major, minor = (int(n) for n in device.split(":"))
        values = dict(p.split("=", 1) for p in pairs if "=" in p)
        for key, op, target in (("rbytes", "Read", service_bytes), ("wbytes", "Write", service_bytes),
                                ("rios", "Read", serviced), ("wios", "Write", serviced)):
            if values.get(key, "").isdigit():
                target.append({"major": major, "minor": minor, "op": op, "value": int(values[key])})
    return {"ioServiceBytesRecursive": service_bytes, "ioServicedRecursive": serviced}
