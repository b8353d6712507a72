"""Cgroups for containers: the cgroupfs driver on cgroup v1, hybrid and unified (v2) hosts.

    common.py       hierarchies, linux.cgroupsPath, the Cgroup base (for_spec picks the driver)
    v1.py           v1 and hybrid hosts: controller files, freezer.state, the devices controller
    v2.py           unified hosts: subtree_control, v2 files, cgroup.freeze, cgroup.kill
    devices_bpf.py  v2 device rules as an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE)

The v2 modules are imported only on a v2 host (or for a container recorded there).
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
from capsa.cgroups.v1 import DEFAULT_ALLOWED_DEVICES, device_rules, v1_settings

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "CGROUP_ROOT", "HYBRID", "LEGACY", "UNIFIED", "Cgroup", "CgroupError", "DEFAULT_ALLOWED_DEVICES",
    "cgroups_path", "device_rules", "hierarchies", "layout", "own_cgroups", "stats", "v1_settings",
]


def stats(cgroup: Cgroup) -> dict[str, Any]:
    """The container's resource usage in the shape of runc's `events --stats` data."""
    return cgroup.stats()
