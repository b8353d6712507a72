"""Cgroups for containers and sandboxes: the cgroupfs driver on cgroup v1, hybrid and unified (v2)
hosts, and the systemd driver.

    common.py       hierarchies, linux.cgroupsPath, the Cgroup interface every driver implements
    v1.py           v1 and hybrid hosts: the directories, freezer.state, cgroup.procs
    v1_resources.py v1 controller files: linux.resources to write (devices included), stats to read
    v2.py           unified hosts: the directory, subtree_control, cgroup.freeze, cgroup.kill
    v2_resources.py v2 files: linux.resources to write, the device filter to attach, stats to read
    devices_bpf.py  v2 device rules as an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE)
    systemd.py      --systemd-cgroup: a container is a transient scope, a sandbox a transient slice
    systemd_bus.py  the D-Bus connection to systemd

This module picks the driver: for_spec (a container's cgroup), parent (a sandbox's, whose
child() cgroups are its members') and from_record (a cgroup the state file recorded). The
driver modules import common.py and never this module's functions, so that nothing in the
package imports in a circle.

The version modules are imported only when needed: v2 on a v2 host (or for a container
recorded there), v1 on a v1 or hybrid host, v1_resources and v2_resources for the calls that
write or read resources (v1_resources also for its names below: module __getattr__), systemd
with --systemd-cgroup or for a container recorded with it. None of them but the systemd ones
imports os: see common.py.
"""

from __future__ import annotations

from capsa.cgroups.common import (
    CGROUP_ROOT,
    CGROUPFS_V1,
    CGROUPFS_V2,
    HYBRID,
    LEGACY,
    SYSTEMD,
    UNIFIED,
    Cgroup,
    CgroupError,
    cgroups_path,
    hierarchies,
    layout,
    own_cgroups,
)
from capsa.errors import ConfigError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "CGROUPFS_V1", "CGROUPFS_V2", "CGROUP_ROOT", "HYBRID", "LEGACY", "SYSTEMD", "UNIFIED", "Cgroup", "CgroupError",
    "DEFAULT_ALLOWED_DEVICES", "cgroups_path", "device_rules", "for_spec", "from_record", "hierarchies", "layout",
    "own_cgroups", "parent", "stats", "v1_settings",
]


_FROM_V1_RESOURCES = ("DEFAULT_ALLOWED_DEVICES", "device_rules", "v1_settings")


def __getattr__(name: str) -> Any:
    """v1_resources' names, loaded on first use: delete, kill and pause never need that module."""
    if name in _FROM_V1_RESOURCES:
        from capsa.cgroups import v1_resources

        return getattr(v1_resources, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def for_spec(spec: dict[str, Any], container_id: str, systemd: bool = False,
             controllers: frozenset[str] | None = None) -> Cgroup:
    """The container's cgroup as its config names it (linux.cgroupsPath), not made yet;
    `controllers`: on v1, only the hierarchies holding one of them (see CreateConfig)."""
    if systemd:
        from capsa.cgroups import systemd as systemd_driver

        return systemd_driver.for_spec(spec, container_id)
    return _cgroupfs_at(cgroups_path(spec, container_id), controllers)


def parent(path: str, systemd: bool = False) -> Cgroup:
    """A sandbox's cgroup, not made yet; its child(name) cgroups are its members'.

    cgroupfs: `path` as linux.cgroupsPath is read (absolute, or relative to capsa's own cgroup).
    systemd: a slice name ("capsa-pod1.slice", in capsa.slice as systemd nests slices by their
    dashes). create() makes it (or joins it, if it is there: destroy then leaves it); apply()
    with with_devices=False gives it the sandbox's limits (each member's device rules go on the
    member's own cgroup); destroy() removes it with what is left of its children."""
    if systemd:
        from capsa.cgroups import systemd as systemd_driver

        return systemd_driver.parent(path)
    if not path.strip("/") or ".." in path.split("/"):
        raise ConfigError("cgroup parent", f"{path!r}: give a cgroup path below the root, without '..'")
    return _cgroupfs_at(path)


def _cgroupfs_at(path: str, controllers: frozenset[str] | None = None) -> Cgroup:
    found = hierarchies()
    if layout(found) == UNIFIED:
        from capsa.cgroups.v2 import V2Cgroup

        return V2Cgroup.at(path)
    from capsa.cgroups.v1 import V1Cgroup

    if controllers is not None:
        found = holding(found, controllers)
    return V1Cgroup.at(path, found)


def holding(found: dict[str, str], controllers: frozenset[str]) -> dict[str, str]:
    """The v1 hierarchies of `found` (mount point -> controllers) that hold one of `controllers`."""
    return {point: held for point, held in found.items() if controllers.intersection(held.split(","))}


def from_record(record: dict[str, Any]) -> Cgroup | None:
    """The cgroup a state record names (Cgroup.record), None if it has none. Records written
    before the driver was recorded (no cgroupDriver) are read as they were then: systemd if
    they name a unit, v2 if the paths are the cgroup2 one alone, else v1; all of it owned."""
    driver = record.get("cgroupDriver")
    if driver == SYSTEMD or (driver is None and record.get("systemdUnit")):
        from capsa.cgroups import systemd as systemd_driver

        return systemd_driver.from_record(record)
    paths = record.get("cgroupPaths")
    if not paths:
        return None
    if driver == CGROUPFS_V2 or (driver is None and list(paths) == [""]):
        from capsa.cgroups.v2 import V2Cgroup

        return V2Cgroup.from_record(record)
    from capsa.cgroups.v1 import V1Cgroup

    return V1Cgroup.from_record(record)


def stats(cgroup: Cgroup) -> dict[str, Any]:
    """The container's resource usage in the shape of runc's `events --stats` data."""
    return cgroup.stats()
