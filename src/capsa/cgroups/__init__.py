"""Cgroups for containers: the cgroupfs driver on cgroup v1, hybrid and unified (v2) hosts.

    common.py       hierarchies, linux.cgroupsPath, the Cgroup base (for_spec picks the driver)
    v1.py           v1 and hybrid hosts: the directories, freezer.state, cgroup.procs
    v1_resources.py v1 controller files: linux.resources to write (devices included), stats to read
    v2.py           unified hosts: the directory, subtree_control, cgroup.freeze, cgroup.kill
    v2_resources.py v2 files: linux.resources to write, the device filter to attach, stats to read
    devices_bpf.py  v2 device rules as an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE)

The version modules are imported only when needed: v2 on a v2 host (or for a container
recorded there), v1 on a v1 or hybrid host, v1_resources and v2_resources for the calls that
write or read resources (v1_resources also for its names below: module __getattr__). None of
them imports os: see common.py.
"""

from __future__ import annotations

from capsa.cgroups.common import (
    CGROUP_ROOT,
    HYBRID,
    LEGACY,
    UNIFIED,
    Cgroup,
    CgroupError,
    cgroups_path,
    hierarchies,
    layout,
    own_cgroups,
)

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "CGROUP_ROOT", "HYBRID", "LEGACY", "UNIFIED", "Cgroup", "CgroupError", "DEFAULT_ALLOWED_DEVICES",
    "cgroups_path", "device_rules", "hierarchies", "layout", "own_cgroups", "stats", "v1_settings",
]


_FROM_V1_RESOURCES = ("DEFAULT_ALLOWED_DEVICES", "device_rules", "v1_settings")


def __getattr__(name: str) -> Any:
    """v1_resources' names, loaded on first use: delete, kill and pause never need that module."""
    if name in _FROM_V1_RESOURCES:
        from capsa.cgroups import v1_resources

        return getattr(v1_resources, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def stats(cgroup: Cgroup) -> dict[str, Any]:
    """The container's resource usage in the shape of runc's `events --stats` data."""
    return cgroup.stats()
