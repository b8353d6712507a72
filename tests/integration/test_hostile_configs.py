"""Hostile and malformed configs through the real CLI: a clear error or a working container, never a
traceback, and nothing left behind (state, cgroup, process)."""

from __future__ import annotations

import os
import subprocess

from corpus import mutated_specs
from hypothesis import HealthCheck, given, settings

EXAMPLES = int(os.environ.get("CAPSA_CLI_CORPUS_EXAMPLES", "60"))


def _own_memory_cgroup() -> str:
    """Where a config without cgroupsPath puts the container's memory cgroup: below ours (runc's default)."""
    with open("/proc/self/cgroup") as f:
        for line in f.read().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(",") or controllers == "":
                return f"/sys/fs/cgroup/{'memory' if controllers else ''}{path.rstrip('/')}".replace("//", "/")
    return "/sys/fs/cgroup/memory"


OWN_MEMORY_CGROUP = _own_memory_cgroup()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=mutated_specs())
def test_cli_survives_hostile_configs(bundle, doc):
    if isinstance(doc.get("process"), dict) and doc["process"].get("terminal") is True:
        doc["process"]["terminal"] = False  # no console socket in this test
    bundle.config = doc
    result = bundle.capsa("run", "--bundle", bundle.path, "fz", check=False, timeout=30, stdin=subprocess.DEVNULL)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    assert not os.path.exists(os.path.join(bundle.root, "fz")), result.stderr
    assert not os.path.exists(f"{OWN_MEMORY_CGROUP}/fz")  # the default cgroup (no cgroupsPath) is gone too
