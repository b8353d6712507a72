"""Which cgroup v1 files a LinuxResources object writes (pure: no cgroupfs needed)."""

from __future__ import annotations

import pytest

from capsa.cgroups import cgroups_path, v1_settings
from capsa.errors import ConfigError, UnsupportedError


def files(resources, devices=()):
    """The files written, the device controller's left out (every container gets its rules)."""
    return {(controller, name): value for _, controller, name, value in v1_settings(resources, list(devices))
            if controller != "devices"}


def test_memory_cpu_pids():
    written = files({"memory": {"limit": 1024, "swappiness": 0}, "cpu": {"shares": 2, "quota": 5, "period": 10},
                     "pids": {"limit": -1}})
    assert written[("memory", "memory.limit_in_bytes")] == "1024"
    assert written[("memory", "memory.swappiness")] == "0"  # 0 is a real swappiness
    assert written[("pids", "pids.max")] == "max"
    order = [name for _, _, name, _ in v1_settings({"cpu": {"quota": 5, "period": 10}})]
    assert order.index("cpu.cfs_period_us") < order.index("cpu.cfs_quota_us")


def test_zero_means_not_set_as_in_runc():
    assert files({"memory": {"limit": 0, "swap": 0}, "cpu": {"shares": 0, "quota": 0}, "pids": {"limit": 0},
                  "blockIO": {"weight": 0}}) == {}


def test_devices_start_from_deny_all_as_in_runc():
    # No rules, or rules that do not begin with a deny-all: the parent's allow-all is not inherited.
    for resources in ({}, {"devices": [{"allow": True, "type": "c", "major": 4, "minor": 1, "access": "rw"}]}):
        written = [(name, value) for _, controller, name, value in v1_settings(resources) if controller == "devices"]
        assert written[0] == ("devices.deny", "a")
        assert ("devices.allow", "c 1:3 rwm") in written  # runc's default devices
    privileged = v1_settings({"devices": [{"allow": True, "access": "rwm"}]})
    assert [value for _, _, _, value in privileged[:2]] == ["a", "a"]  # deny all, then allow all
    assert privileged[1][0] == "linux.resources.devices[0]" and privileged[0][0] == "linux.resources.devices"


def test_device_rules_keep_default_devices():
    written = v1_settings({"devices": [{"allow": False, "access": "rwm"}]},
                          [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229},
                           {"path": "/dev/fifo", "type": "p"}])
    assert written[0][2:] == ("devices.deny", "a")
    allowed = [value for _, _, name, value in written if name == "devices.allow"]
    assert "c 1:3 rwm" in allowed and "c 10:229 rwm" in allowed and "c 136:* rwm" in allowed
    assert not any(value.startswith("p ") for value in allowed)


def test_blkio_and_hugetlb_and_network():
    written = files({"blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 100}]},
                     "hugepageLimits": [{"pageSize": "2MB", "limit": 4096}],
                     "network": {"classID": 7, "priorities": [{"name": "eth0", "priority": 3}]}})
    assert written[("blkio", "blkio.weight")] == "500"
    assert written[("blkio", "blkio.throttle.read_bps_device")] == "8:0 100"
    assert written[("hugetlb", "hugetlb.2MB.limit_in_bytes")] == "4096"
    assert written[("net_prio", "net_prio.ifpriomap")] == "eth0 3"


def test_unified_is_refused_on_v1():
    with pytest.raises(UnsupportedError, match="unified"):
        v1_settings({"unified": {"memory.max": "1G"}})


def test_cgroups_path_rules():
    assert cgroups_path({}, "abc") == "abc"  # runc: relative, below the caller's cgroup
    assert cgroups_path({"linux": {"cgroupsPath": "/a/b"}}, "x") == "/a/b"
    with pytest.raises(ConfigError, match="systemd"):
        cgroups_path({"linux": {"cgroupsPath": "system.slice:capsa:x"}}, "x")
    with pytest.raises(ConfigError, match=r"\.\."):
        cgroups_path({"linux": {"cgroupsPath": "/a/../../etc"}}, "x")
