"""Which cgroup v2 files a LinuxResources object writes, and the device rules' eBPF program
(pure: no cgroupfs needed; the guest tier shows them on a real v2 host)."""

from __future__ import annotations

import struct

import pytest

from capsa.cgroups import HYBRID, LEGACY, UNIFIED, device_rules, layout
from capsa.cgroups.devices_bpf import effective, program
from capsa.cgroups.v2_resources import cpu_weight, io_weight, swap_max, v2_settings
from capsa.errors import ConfigError, UnsupportedError


def files(resources):
    return {name: value for _, name, value in v2_settings(resources)}


def test_layouts():
    assert layout({"/sys/fs/cgroup": ""}) == UNIFIED
    assert layout({"/sys/fs/cgroup/memory": "memory", "/sys/fs/cgroup/unified": ""}) == HYBRID
    assert layout({"/sys/fs/cgroup/memory": "memory"}) == LEGACY


def test_cpu_weight_as_runc_converts_shares():
    assert [cpu_weight(s) for s in (2, 1024, 2048, 262144, 512)] == [1, 100, 174, 10000, 59]
    assert io_weight(10) == 1 and io_weight(1000) == 10000


def test_swap_is_memory_plus_swap_in_oci():
    assert swap_max(96, 64, "m") == 32
    assert swap_max(0, -1, "m") == -1  # unlimited memory, swap not given: unlimited swap
    assert swap_max(-1, 64, "m") == -1
    with pytest.raises(ConfigError, match="m.swap"):
        swap_max(64, 0, "m")
    with pytest.raises(ConfigError, match="at least"):
        swap_max(32, 64, "m")


def test_memory_cpu_pids_files():
    written = files({"memory": {"limit": 1024, "reservation": 512, "swap": 2048},
                     "cpu": {"shares": 1024, "quota": 5000, "period": 10000, "burst": 0, "idle": 0, "cpus": "0-1"},
                     "pids": {"limit": -1}})
    assert written == {"memory.swap.max": "1024", "memory.max": "1024", "memory.low": "512", "cpu.idle": "0",
                       "cpu.weight": "100", "cpu.max": "5000 10000", "cpu.max.burst": "0", "cpuset.cpus": "0-1",
                       "pids.max": "max"}
    order = [name for _, name, _ in v2_settings({"memory": {"limit": 1024, "swap": 2048}})]
    assert order == ["memory.swap.max", "memory.max"]
    assert files({"cpu": {"period": 10000}}) == {"cpu.max": "max 10000"}
    assert files({"memory": {"limit": -1}}) == {"memory.swap.max": "max", "memory.max": "max"}


def test_io_hugetlb_rdma_unified():
    written = v2_settings({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 100}]},
                           "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
                           "rdma": {"mlx5_0": {"hcaHandles": 3, "hcaObjects": 9}},
                           "unified": {"memory.high": "1G"}})
    assert [(name, value) for _, name, value in written] == [
        ("io.max", "8:0 rbps=100"), ("hugetlb.2MB.max", "4194304"), ("hugetlb.2MB.rsvd.max", "4194304"), ("rdma.max", "mlx5_0 hca_handle=3 hca_object=9"),
        ("memory.high", "1G")]


@pytest.mark.parametrize("resources, field", [
    ({"memory": {"swappiness": 0}}, "memory.swappiness"),
    ({"memory": {"disableOOMKiller": True}}, "memory.disableOOMKiller"),
    ({"cpu": {"realtimePeriod": 5}}, "cpu.realtimePeriod"),
    ({"blockIO": {"leafWeight": 10}}, "blockIO.leafWeight"),
    ({"network": {"classID": 1}}, "network"),
])
def test_what_v2_has_no_file_for_is_refused(resources, field):
    with pytest.raises(UnsupportedError, match=f"linux.resources.{field}"):
        v2_settings(resources)


def test_unified_keys_stay_in_the_cgroup():
    for key in ("../memory.max", "cgroup.procs", ".hidden"):
        with pytest.raises(ConfigError, match="unified"):
            v2_settings({"unified": {key: "1"}})


# -- device rules -> eBPF -------------------------------------------------------------------------------
def test_effective_rules_as_v1_would_hold_them():
    default, exceptions = effective([{"allow": False, "access": "rwm"},
                                     {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                                     {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "m"},
                                     {"allow": True, "type": "b", "major": 8, "minor": 0, "access": "rwm"},
                                     {"allow": False, "type": "b", "major": 8, "minor": 0, "access": "w"}])
    assert default is False
    assert [(e.kind, e.major, e.minor, e.access) for e in exceptions] == [("c", 1, 3, 7), ("b", 8, 0, 3)]
    default, exceptions = effective([{"allow": True, "type": "c", "major": 1, "minor": 3},
                                     {"allow": True, "access": "rwm"}])
    assert default is True and exceptions == []


def test_default_devices_stay_allowed():
    rules = device_rules({"devices": [{"allow": False, "access": "rwm"}]},
                         [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}])
    default, exceptions = effective(rules)
    assert default is False
    assert ("c", 1, 3, 7) in [(e.kind, e.major, e.minor, e.access) for e in exceptions]
    assert ("c", 10, 229, 7) in [(e.kind, e.major, e.minor, e.access) for e in exceptions]
    # No rules at all: deny-all and the default devices, as runc (a program is always attached).
    default, exceptions = effective(device_rules({}, []))
    assert default is False and ("c", 1, 3, 7) in [(e.kind, e.major, e.minor, e.access) for e in exceptions]


def _decode(code: bytes) -> list[tuple[int, int, int, int, int]]:
    out = []
    for offset in range(0, len(code), 8):
        op, regs, off, imm = struct.unpack("<BBhi", code[offset:offset + 8])
        out.append((op, regs & 0xF, regs >> 4, off, imm))
    return out


def run(code: bytes, kind: int, access: int, major: int, minor: int) -> int:
    """A tiny interpreter of the few instructions the filter uses, to check its logic here."""
    regs = [0] * 11
    ctx = [(access << 16) | kind, major, minor]
    insns = _decode(code)
    pc = 0
    while True:
        op, dst, src, off, imm = insns[pc]
        pc += 1
        if op == 0x61:
            regs[dst] = ctx[off // 4]
        elif op == 0x54:
            regs[dst] &= imm
        elif op == 0x74:
            regs[dst] >>= imm
        elif op == 0xBC:
            regs[dst] = regs[src]
        elif op == 0xB7:
            regs[dst] = imm
        elif op == 0x55:
            pc += off if regs[dst] != imm else 0
        elif op == 0x5D:
            pc += off if regs[dst] != regs[src] else 0
        elif op == 0x15:
            pc += off if regs[dst] == imm else 0
        elif op == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")


CHAR, BLOCK, MKNOD, READ, WRITE = 2, 1, 1, 2, 4


def test_program_whitelist():
    code = program([{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                    {"allow": True, "type": "b", "major": 8, "minor": -1, "access": "r"}])
    assert run(code, CHAR, READ | WRITE, 1, 3) == 1
    assert run(code, CHAR, READ, 1, 5) == 0
    assert run(code, BLOCK, READ, 8, 17) == 1
    assert run(code, BLOCK, READ | WRITE, 8, 17) == 0  # every requested access must be allowed
    assert run(code, CHAR, READ, 8, 17) == 0


def test_program_blacklist():
    code = program([{"allow": True, "access": "rwm"}, {"allow": False, "type": "b", "major": 8, "minor": 0, "access": "w"}])
    assert run(code, BLOCK, READ, 8, 0) == 1
    assert run(code, BLOCK, READ | WRITE, 8, 0) == 0  # any denied access denies
    assert run(code, CHAR, WRITE, 8, 0) == 1


def test_kernel_memory_is_ignored_on_v2():
    # Deprecated, "may be ignored by runtimes": no v2 file is written (V2Cgroup.apply warns).
    assert v2_settings({"memory": {"kernel": 1 << 26, "kernelTCP": 1 << 20}}) == []
