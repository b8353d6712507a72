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
- delete stops the unit (StopUnit) and removes what is left of the directories; a unit capsa did
  not start (systemd said the name exists) is never stopped.

A sandbox's cgroup (cgroups.parent) is a transient slice, as runc makes one for a `.slice` name:
no process, Wants= its parent slice; its children are scopes in it (SystemdSlice.child).

Why the child is not born in the scope (clone3 CLONE_INTO_CGROUP, as with the cgroupfs driver):
the scope's cgroup does not exist before the scope does, and systemd refuses a scope with no
process in it. So the child is forked where capsa runs, stops before doing anything (it waits
for "cgroup" on its channel), systemd moves it into the new scope, and only then does it go on:
no container code ever runs outside the scope. `exec` is born in it with clone3.

The unit is recorded in the state (systemdUnit, with cgroupDriver "systemd") so that
delete/update work from any later call.
"""

from __future__ import annotations

from capsa import posixlite
from capsa.cgroups.common import (
    CGROUP_ROOT,
    SYSTEMD,
    UNIFIED,
    Cgroup,
    CgroupError,
    given,
    hierarchies,
    layout,
    recorded_ownership,
    rmdir_tree,
)
from capsa.cgroups.v1 import V1Cgroup
from capsa.cgroups.v2 import V2Cgroup
from capsa.cgroups.v2_resources import cpu_weight, io_weight, swap_max
from capsa.errors import ConfigError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from collections.abc import Iterable
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
    cls, paths = _at(posixlite.join(expand_slice(slice_name), unit), SystemdV2Cgroup, SystemdV1Cgroup)
    return cls(paths, unit, slice_name)


def parent(slice_name: str) -> SystemdSlice:
    """A sandbox's cgroup: the transient slice `slice_name` ("capsa-pod1.slice" is in capsa.slice,
    as systemd nests slices by their dashes), whose children are scopes in it."""
    from capsa.cgroups.systemd_bus import socket_path

    socket_path()
    relative = expand_slice(slice_name)
    if relative == "/":
        raise ConfigError("cgroup parent", "the root slice cannot be a sandbox's cgroup")
    cls, paths = _at(relative, SystemdV2Slice, SystemdV1Slice)
    return cls(paths, slice_name, _parent_slice(slice_name))


def from_record(record: dict[str, Any]) -> SystemdUnit:
    unified = list(record.get("cgroupPaths") or {}) == [""]
    if (record.get("systemdUnit") or "").endswith(".slice"):
        return (SystemdV2Slice if unified else SystemdV1Slice).from_record(record)
    return (SystemdV2Cgroup if unified else SystemdV1Cgroup).from_record(record)


def _at(relative: str, v2: type, v1: type) -> tuple[type, dict[str, str]]:
    """The class for this host's layout (`v2` or `v1`), and the directories of the cgroup at
    `relative` (from the root) in each hierarchy."""
    found = hierarchies()
    if layout(found) == UNIFIED:
        return v2, {"": CGROUP_ROOT + relative}
    return v1, V1Cgroup.at(relative, found).paths


def _parent_slice(slice_name: str) -> str:
    """The slice a slice is in: "a-b.slice" for "a-b-c.slice", the root "-.slice" for "a.slice"."""
    stem = slice_name[:-len(".slice")]
    return stem.rpartition("-")[0] + ".slice" if "-" in stem else "-.slice"


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
class SystemdUnit:
    """What the systemd classes add to the cgroupfs ones (SystemdV2Cgroup, SystemdV1Cgroup for a
    container's scope; SystemdV2Slice, SystemdV1Slice for a sandbox's slice): a unit systemd
    makes, and removes when it is stopped. `created` is all of `paths` once capsa has started
    the unit, nothing while it has not (or systemd said the name is taken: someone else's unit)."""

    driver = SYSTEMD
    unified = True
    fs_class: type  # the cgroupfs class of a directory below the unit's (sub, child)

    def __init__(self, paths: dict[str, str], unit: str = "", slice_name: str = "", created: Iterable[str] = ()):
        super().__init__(paths, created)
        self.unit = unit
        self.slice = slice_name

    def record(self) -> dict[str, Any]:
        return dict(super().record(), systemdUnit=self.unit, systemdSlice=self.slice)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SystemdUnit:
        paths = dict(record.get("cgroupPaths") or {})
        return cls(paths, record.get("systemdUnit") or "", record.get("systemdSlice") or "",
                   recorded_ownership(record, paths))

    def _nested(self, paths: dict[str, str]) -> Cgroup:
        # Below a unit's cgroup (Delegate=true for a scope) the directories are the cgroupfs driver's.
        return self.fs_class(paths)

    def _start(self, properties: list[tuple[str, tuple[str, Any]]]) -> None:
        """StartTransientUnit; a UnitExistsError if a unit of that name exists (it is not ours)."""
        from capsa.cgroups.systemd_bus import Manager, UnitExistsError

        self.created = set(self.paths)  # from here on a unit of ours may be left (a failed job): destroy stops it
        try:
            with Manager() as manager:
                manager.start_transient_unit(self.unit, properties)
        except UnitExistsError:
            self.created = set()
            raise

    def _check_directories(self) -> None:
        for directory in self.paths.values():
            if not posixlite.isdir(directory):
                raise CgroupError(f"systemd started {self.unit} but its cgroup {directory} is not there")

    def update(self, resources: dict[str, Any], warn: Any = None) -> None:
        """As runc's Set: the unit's properties first (systemd would restore the old ones on its
        next reload otherwise), then the files."""
        self._set_properties(resources)
        self.fs_class.apply(self, resources, warn=warn, with_devices=False)

    def _set_properties(self, resources: dict[str, Any] | None) -> None:
        from capsa.cgroups.systemd_bus import Manager

        properties = unit_properties(resources, self.unified)
        if properties:
            with Manager() as manager:
                manager.set_unit_properties(self.unit, properties)

    def destroy(self) -> None:
        from capsa.cgroups.systemd_bus import Manager

        if not self.owned or not self.unit:
            return  # the unit and its directory, if they exist, are someone else's
        with Manager() as manager:
            manager.stop_unit(self.unit)
        for directory in self.paths.values():
            rmdir_tree(directory)  # what systemd left (sub-cgroups the container made, if any)


def _accounting(unified: bool) -> list[tuple[str, tuple[str, Any]]]:
    return [
        ("MemoryAccounting", ("b", True)),
        ("CPUAccounting", ("b", True)),
        ("IOAccounting" if unified else "BlockIOAccounting", ("b", True)),
        ("TasksAccounting", ("b", True)),
    ]


class SystemdScope(SystemdUnit):
    """A container's transient scope: systemd makes its cgroup with the first process in it."""

    placed_by_manager = True  # launch: systemd moves the first process in (see the module doc)

    def create(self, ignore_denied: bool = False) -> list[str]:
        raise CgroupError(f"{self.unit}: systemd makes a scope with its first process in it (create_with)")

    def create_with(self, pid: int, resources: dict[str, Any] | None) -> None:
        """Create the scope with `pid` in it; the limits systemd knows are unit properties."""
        self._start([
            ("Description", ("s", f"capsa container {self.unit}")),
            ("Slice", ("s", self.slice)),
            ("Delegate", ("b", True)),
            ("PIDs", ("au", [pid])),
            ("DefaultDependencies", ("b", False)),
            *_accounting(self.unified),
        ] + unit_properties(resources, self.unified))
        self._join_rest(pid)

    def _join_rest(self, pid: int) -> None:
        self._check_directories()


class SystemdSlice(SystemdUnit):
    """A sandbox's transient slice (runc's slice case: Wants= its parent slice, no process); its
    children are scopes in it. A slice that exists already is joined: destroy leaves it."""

    def create(self, ignore_denied: bool = False) -> list[str]:
        from capsa.cgroups.systemd_bus import UnitExistsError

        try:
            self._start([
                ("Description", ("s", f"capsa sandbox {self.unit}")),
                ("Wants", ("as", [self.slice])),
                ("DefaultDependencies", ("b", False)),
                *_accounting(self.unified),
            ])
        except UnitExistsError:
            pass  # joined
        self._make_rest()
        return []

    def _make_rest(self) -> None:
        """The directories systemd does not make (a slice without processes may have none yet)."""
        created = set(self.created)
        self.fs_class.create(self)
        self.created = created
        self._check_directories()

    def apply(self, resources: dict[str, Any] | None, devices: list[dict[str, Any]] | None = None,
              rootless: bool = False, warn: Any = None, with_devices: bool = True) -> None:
        """The unit's properties (systemd keeps the slice's files: they must agree), then the files."""
        self._set_properties(resources)
        self.fs_class.apply(self, resources, devices, rootless, warn, with_devices)

    def child(self, name: str) -> Cgroup:
        """A member's scope in this slice: `name`.scope, made by its create_with."""
        unit = name if name.endswith(".scope") else f"{name}.scope"
        paths = super().child(unit).paths
        return (SystemdV2Cgroup if self.unified else SystemdV1Cgroup)(paths, unit, self.unit)


class SystemdV2Cgroup(SystemdScope, V2Cgroup):
    fs_class = V2Cgroup


class SystemdV1Cgroup(SystemdScope, V1Cgroup):
    """v1 and hybrid hosts: systemd makes the scope in the hierarchies of the controllers it
    manages; the others (cpuset, freezer, ...) are made and joined through the files, as runc's
    joinCgroups does. Not tested: no v1 host here boots systemd (docs/cgroups.md)."""

    unified = False
    fs_class = V1Cgroup

    def _join_rest(self, pid: int) -> None:
        V1Cgroup.create(self)
        self.created = set(self.paths)
        V1Cgroup.add(self, pid)


class SystemdV2Slice(SystemdSlice, V2Cgroup):
    fs_class = V2Cgroup


class SystemdV1Slice(SystemdSlice, V1Cgroup):
    """Not tested, as SystemdV1Cgroup."""

    unified = False
    fs_class = V1Cgroup
