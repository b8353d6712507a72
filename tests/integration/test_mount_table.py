"""cgroups.common.remember_hierarchies: a long-lived process's cgroup hierarchies are read again
when its mount table changes (the kernel's POLLPRI on /proc/self/mountinfo), by itself or by a
fork of it, and a fork reads its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a cgroup hierarchy")

SCENARIO = """
import json, os, subprocess, sys
from capsa.cgroups import common
point = sys.argv[1]
mount = ["mount", "-t", "cgroup", "-o", f"none,name=capsa-test-{os.getpid()}", "cgroup", point]
common.remember_hierarchies()
seen = [point in common.hierarchies()]
subprocess.run(mount, check=True)
seen.append(point in common.hierarchies())
subprocess.run(["umount", point], check=True)
seen.append(point in common.hierarchies())
child = os.fork()
if child == 0:  # the fork mounts it and asks: its own table, read again
    subprocess.run(mount, check=True)
    ok = point in common.hierarchies()
    os._exit(0 if ok else 1)
seen.append(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0)
seen.append(point in common.hierarchies())  # the fork left it mounted: the parent sees it too
subprocess.run(["umount", point], check=True)
seen.append(point in common.hierarchies())
print(json.dumps(seen))
"""


def test_the_remembered_hierarchies_follow_mounts_and_unmounts_of_the_process_and_its_forks():
    with tempfile.TemporaryDirectory() as point:
        probe = subprocess.run(["mount", "-t", "cgroup", "-o", "none,name=capsa-probe", "cgroup", point],
                               capture_output=True)
        if probe.returncode != 0:
            pytest.skip("this kernel mounts no named cgroup v1 hierarchy")
        subprocess.run(["umount", point], check=True)
        result = subprocess.run([sys.executable, "-c", SCENARIO, point], capture_output=True, text=True, timeout=60)
        subprocess.run(["umount", point], capture_output=True)  # if the scenario failed half-way
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [False, True, False, True, True, False]
