"""The systemd driver's pure parts: linux.cgroupsPath as slice:prefix:name, runc's ExpandSlice,
and linux.resources as unit properties (the D-Bus side runs in the systemd guest)."""

from __future__ import annotations

import pytest

from capsa.cgroups.systemd import INFINITY, expand_slice, placement, range_to_bits, unit_properties
from capsa.errors import ConfigError


def spec(path=None):
    return {"linux": {"cgroupsPath": path}} if path is not None else {}


def test_placement():
    assert placement(spec(), "abc") == ("system.slice", "capsa-abc.scope")
    assert placement(spec("machine.slice:libpod:x1"), "id") == ("machine.slice", "libpod-x1.scope")
    assert placement(spec(":crio:x1"), "id") == ("system.slice", "crio-x1.scope")
    assert placement(spec("user.slice::x1"), "id") == ("user.slice", "x1.scope")
    for bad in ("/a/b", "a:b", "a:b:c:d", "system.slice:capsa:", "s.slice:p:pod.slice"):
        with pytest.raises(ConfigError, match="cgroupsPath"):
            placement(spec(bad), "id")


def test_expand_slice_as_runc():
    assert expand_slice("system.slice") == "/system.slice"
    assert expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert expand_slice("-.slice") == "/"
    for bad in ("system", ".slice", "a--b.slice", "-a.slice", "a/b.slice", "a-.slice"):
        with pytest.raises(ConfigError, match="invalid slice name"):
            expand_slice(bad)


def test_unit_properties_v2():
    props = dict(unit_properties({
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 96 << 20},
        "cpu": {"shares": 2048, "quota": 12345, "period": 100000, "cpus": "0-2,9", "mems": "0"},
        "pids": {"limit": -1},
        "blockIO": {"weight": 500},
    }, unified=True))
    assert props["MemoryMax"] == ("t", 64 << 20) and props["MemoryLow"] == ("t", 32 << 20)
    assert props["MemorySwapMax"] == ("t", 32 << 20)
    assert props["CPUWeight"] == ("t", 174)
    assert props["CPUQuotaPerSecUSec"] == ("t", 130000)  # 123450 us/s rounded up to 10 ms, as runc
    assert props["CPUQuotaPeriodUSec"] == ("t", 100000)
    assert props["TasksMax"] == ("t", INFINITY)
    assert props["AllowedCPUs"] == ("ay", bytes([0b111, 0b10])) and props["AllowedMemoryNodes"] == ("ay", b"\x01")
    assert props["IOWeight"] == ("t", 4950)


def test_unit_properties_v1_and_unset():
    props = dict(unit_properties({"memory": {"limit": -1}, "cpu": {"shares": 512}, "blockIO": {"weight": 300}},
                                 unified=False))
    assert props == {"MemoryLimit": ("t", INFINITY), "CPUShares": ("t", 512), "BlockIOWeight": ("t", 300)}
    assert unit_properties({"memory": {"limit": 0}, "pids": {"limit": 0}, "cpu": {}}, unified=True) == []
    assert dict(unit_properties({"cpu": {"quota": -1, "period": 0}}, True)) == {"CPUQuotaPerSecUSec": ("t", INFINITY)}


def test_range_to_bits():
    assert range_to_bits("0", "f") == b"\x01"
    assert range_to_bits("8-9", "f") == b"\x00\x03"
    with pytest.raises(ConfigError):
        range_to_bits("x", "f")
