"""cgroup v2 (unified hierarchy): run inside the guest tier (test_guest.py), skipped elsewhere."""

from __future__ import annotations

import pytest

from capsa.cgroups import hierarchies

if set(hierarchies().values()) != {""}:
    pytest.skip("these tests need a host with cgroup2 only (the guest tier runs them)", allow_module_level=True)

ROOT = "/sys/fs/cgroup"


def test_host_is_unified():
    with open(f"{ROOT}/cgroup.controllers") as f:
        controllers = f.read().split()
    assert {"cpu", "memory", "pids"} <= set(controllers)
