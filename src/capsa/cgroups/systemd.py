"""The systemd cgroup driver (--systemd-cgroup), as runc's libcontainer/cgroups/systemd.

systemd owns the cgroup tree of a host it boots; a runtime that makes directories in it behind
systemd's back has them reset or removed on the next `daemon-reload`. So, as runc does:

- linux.cgroupsPath is `slice:prefix:name` (default `:capsa:<id>`): the container is a transient
  scope unit `<prefix>-<name>.scope` in `slice` (default system.slice; `a-b.slice` nests as
  a.slice/a-b.slice, runc's ExpandSlice);
- StartTransientUnit creates the scope with the container's first process in it (PIDs), with
  Delegate=true (the subtree is the container's), DefaultDependencies=false, and the resource
  properties systemd knows (MemoryMax, CPUWeight, TasksMax, ...: unit_properties) so that systemd
  keeps them across reloads;
- everything, mapped or not, is then written to the cgroup files by the cgroupfs code (v1.py /
  v2.py) in the scope's directory: runc's "systemd for the unit, fs for the rest";
- pause/resume, kill --all, stats and exec go through the files, as with the cgroupfs driver;
- update sets the unit properties again (SetUnitProperties, runtime) and then the files;
- delete stops the unit (StopUnit) and removes what is left of the directories.

Why the child is not born in the scope (clone3 CLONE_INTO_CGROUP, as with the cgroupfs driver):
the scope's cgroup does not exist before the scope does, and systemd refuses a scope with no
process in it. So the child is forked where capsa runs, stops before doing anything (it waits
for "cgroup" on its channel), systemd moves it into the new scope, and only then does it go on:
no container code ever runs outside the scope. `exec` is born in it with clone3.

The unit is recorded in the state (systemdUnit) so that delete/update work from any later call.
"""

from __future__ import annotations

import os

from capsa.cgroups.common import CGROUP_ROOT, UNIFIED, CgroupError, given, hierarchies, layout
from capsa.cgroups.v1 import V1Cgroup
from capsa.cgroups.v2 import V2Cgroup
from capsa.cgroups.v2_resources import cpu_weight, io_weight, swap_max
from capsa.errors import ConfigError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

DEFAULT_SLICE = "system.slice"
DEFAULT_PREFIX = "capsa"
INFINITY = 2**64 - 1  # systemd's "infinity" for a uint64 limit
DEFAULT_CPU_PERIOD = 100000


# -- linux.cgroupsPath -------------------------------------------------------------------------------
def placement(spec: dict[str, Any], container_id: str) -> tuple[str, str]:
    """(slice, unit name) from linux.cgroupsPath `slice:prefix:name`."""
    path = (spec.get("linux") or {}).get("cgroupsPath") or f":{DEFAULT_PREFIX}:{container_id}"
    parts = path.split(":")
    if len(parts) != 3 or not parts[2]:
        raise ConfigError("linux.cgroupsPath", f"{path!r}: with --systemd-cgroup it must be slice:prefix:name "
                          f"(e.g. system.slice:capsa:{container_id})")
    slice_name, prefix, name = parts
    if name.endswith(".slice"):
        raise ConfigError("linux.cgroupsPath", f"{path!r}: a slice as the container's unit is not supported "
                          "(name a scope: slice:prefix:name gives <prefix>-<name>.scope)")
    if "/" in name or "/" in prefix:
        raise ConfigError("linux.cgroupsPath", f"{path!r}: a unit name cannot contain '/'")
    return slice_name or DEFAULT_SLICE, f"{prefix}-{name}.scope" if prefix else f"{name}.scope"


def expand_slice(slice_name: str) -> str:
    """runc's ExpandSlice: "a-b.slice" -> "/a.slice/a-b.slice", "-.slice" -> "/"."""
    suffix = ".slice"
    stem = slice_name[:-len(suffix)] if slice_name.endswith(suffix) else ""
    if not stem or "/" in slice_name:
        raise ConfigError("linux.cgroupsPath", f"invalid slice name {slice_name!r} (a name ending in .slice, "
                          "nested with '-': a-b.slice is in a.slice)")
    if stem == "-":
        return "/"
    path, prefix = "", ""
    for component in stem.split("-"):
        if not component:  # "a--b.slice", "-a.slice"
            raise ConfigError("linux.cgroupsPath", f"invalid slice name {slice_name!r}")
        path += f"/{prefix}{component}{suffix}"
        prefix += component + "-"
    return path


def for_spec(spec: dict[str, Any], container_id: str) -> SystemdScope:
    """The container's systemd-managed cgroup; a CgroupError at once if systemd cannot be reached."""
    from capsa.cgroups.systemd_bus import socket_path

    socket_path()
    slice_name, unit = placement(spec, container_id)
    relative = os.path.join(expand_slice(slice_name), unit)
    found = hierarchies()
    if layout(found) == UNIFIED:
        return SystemdV2Cgroup({"": CGROUP_ROOT + relative}, unit, slice_name)
    return SystemdV1Cgroup(V1Cgroup.at(relative, found).paths, unit, slice_name)


def from_record(record: dict[str, Any]) -> SystemdScope:
    cls = SystemdV2Cgroup if list(record.get("cgroupPaths") or {}) == [""] else SystemdV1Cgroup
    return cls(record.get("cgroupPaths") or {}, record["systemdUnit"], record.get("systemdSlice", ""))


# -- linux.resources -> unit properties --------------------------------------------------------------
def unit_properties(resources: dict[str, Any] | None, unified: bool) -> list[tuple[str, tuple[str, Any]]]:
    """The properties runc gives systemd for linux.resources (genV1/genV2ResourcesProperties)."""
    resources = resources or {}
    memory, cpu = resources.get("memory") or {}, resources.get("cpu") or {}
    out: list[tuple[str, tuple[str, Any]]] = []
    if given(memory, "limit"):
        out.append(("MemoryMax" if unified else "MemoryLimit", ("t", _uint(memory["limit"]))))
    if unified and given(memory, "reservation"):
        out.append(("MemoryLow", ("t", _uint(memory["reservation"]))))
    if unified and given(memory, "swap"):
        swap = swap_max(memory["swap"], memory.get("limit") or 0, "linux.resources.memory")
        out.append(("MemorySwapMax", ("t", _uint(swap))))
    if given(cpu, "shares"):
        out.append(("CPUWeight", ("t", cpu_weight(cpu["shares"]))) if unified else ("CPUShares", ("t", cpu["shares"])))
    out += _cpu_quota(cpu)
    pids = (resources.get("pids") or {}).get("limit") or 0
    if pids > 0 or pids == -1:
        out.append(("TasksMax", ("t", _uint(pids))))
    for key, prop in (("cpus", "AllowedCPUs"), ("mems", "AllowedMemoryNodes")):
        if cpu.get(key):
            out.append((prop, ("ay", range_to_bits(cpu[key], f"linux.resources.cpu.{key}"))))
    weight = (resources.get("blockIO") or {}).get("weight") or 0
    if weight:
        out.append(("IOWeight", ("t", io_weight(weight))) if unified else ("BlockIOWeight", ("t", weight)))
    return out


def _uint(value: int) -> int:
    return INFINITY if value < 0 else value


def _cpu_quota(cpu: dict[str, Any]) -> list[tuple[str, tuple[str, Any]]]:
    """runc's addCpuQuota: systemd keeps CPU quota as a whole percent of a CPU, so a quota per
    second is rounded up to the next 10 ms (the files get the exact value afterwards)."""
    quota, period = cpu.get("quota") or 0, cpu.get("period") or 0
    out = []
    if period:
        out.append(("CPUQuotaPeriodUSec", ("t", period)))
    if quota or period:
        per_second = INFINITY
        if quota > 0:
            per_second = quota * 1000000 // (period or DEFAULT_CPU_PERIOD)
            if per_second % 10000:
                per_second = (per_second // 10000 + 1) * 10000
        out.append(("CPUQuotaPerSecUSec", ("t", per_second)))
    return out


def range_to_bits(text: str, field: str) -> bytes:
    """A cpuset list ("0-3,6") as systemd's bitmask: byte 0 holds CPUs 0-7."""
    bits = 0
    try:
        for part in text.replace(" ", "").split(","):
            low, _, high = part.partition("-")
            for n in range(int(low), int(high or low) + 1):
                bits |= 1 << n
    except ValueError:
        raise ConfigError(field, f"invalid list {text!r}") from None
    return bits.to_bytes((bits.bit_length() + 7) // 8 or 1, "little")


# -- the driver --------------------------------------------------------------------------------------
class SystemdScope:
    """What the systemd driver adds to the cgroupfs classes (SystemdV2Cgroup, SystemdV1Cgroup)."""

    placed_by_manager = True  # launch: systemd moves the first process in (see the module doc)
    unified = True

    def __init__(self, paths: dict[str, str], unit: str = "", slice_name: str = ""):
        super().__init__(paths)
        self.unit = unit
        self.slice = slice_name
        # False while this object has not started its unit (or systemd said the name is taken): a
        # failed create must not stop a unit of that name that another container owns. None:
        # loaded from the state.
        self.started: bool | None = None

    def create(self, ignore_denied: bool = False) -> list[str]:
        return []  # the unit makes the cgroup: start_unit

    def start_unit(self, pid: int, resources: dict[str, Any] | None) -> None:
        """Create the scope with `pid` in it; the limits systemd knows are unit properties."""
        from capsa.cgroups.systemd_bus import Manager, UnitExistsError

        properties = [
            ("Description", ("s", f"capsa container {self.unit}")),
            ("Slice", ("s", self.slice)),
            ("Delegate", ("b", True)),
            ("PIDs", ("au", [pid])),
            ("DefaultDependencies", ("b", False)),
            ("MemoryAccounting", ("b", True)),
            ("CPUAccounting", ("b", True)),
            ("IOAccounting" if self.unified else "BlockIOAccounting", ("b", True)),
            ("TasksAccounting", ("b", True)),
        ] + unit_properties(resources, self.unified)
        self.started = False
        with Manager() as manager:
            try:
                manager.start_transient_unit(self.unit, properties)
            except UnitExistsError:
                raise
            except BaseException:
                self.started = True  # a unit of ours may be left (a failed job): destroy stops it
                raise
        self.started = True
        self._join_rest(pid)

    def _join_rest(self, pid: int) -> None:
        for directory in self.paths.values():
            if not os.path.isdir(directory):
                raise CgroupError(f"systemd started {self.unit} but its cgroup {directory} is not there")

    def update(self, resources: dict[str, Any], warn: Any = None) -> None:
        """As runc's Set: the unit's properties first (systemd would restore the old ones on its
        next reload otherwise), then the files."""
        from capsa.cgroups.systemd_bus import Manager

        properties = unit_properties(resources, self.unified)
        if properties:
            with Manager() as manager:
                manager.set_unit_properties(self.unit, properties)
        super().update(resources, warn)

    def destroy(self) -> None:
        from capsa.cgroups.systemd_bus import Manager

        if self.started is False:
            return  # the unit and its directory, if they exist, are someone else's
        if self.unit:
            with Manager() as manager:
                manager.stop_unit(self.unit)
        super().destroy()  # what systemd left (sub-cgroups the container made, if any)


class SystemdV2Cgroup(SystemdScope, V2Cgroup):
    pass


class SystemdV1Cgroup(SystemdScope, V1Cgroup):
    """v1 and hybrid hosts: systemd makes the scope in the hierarchies of the controllers it
    manages; the others (cpuset, freezer, ...) are made and joined through the files, as runc's
    joinCgroups does. Not tested: no v1 host here boots systemd (docs/cgroups.md)."""

    unified = False

    def _join_rest(self, pid: int) -> None:
        V1Cgroup.create(self)
        V1Cgroup.add(self, pid)
