"""What every bench here needs first on this host: crun 1.8 refuses the hybrid cgroup layout while a
cgroup2 is mounted at /sys/fs/cgroup/unified, so a bench re-runs itself in a private mount namespace
with that mount gone (the same for every runtime it times)."""

from __future__ import annotations

import os
import subprocess
import sys


def rerun_without_unified_cgroup2(argv: list[str]) -> int | None:
    """The exit code of this bench re-run in a private mount namespace without /sys/fs/cgroup/unified,
    or None when it already runs that way (or the host has no such mount) and should go on."""
    if os.environ.get("CAPSA_BENCH_NS") == "1" or not os.path.ismount("/sys/fs/cgroup/unified"):
        return None
    env = dict(os.environ, CAPSA_BENCH_NS="1")
    script = f"umount /sys/fs/cgroup/unified && exec {sys.executable} {' '.join(argv)}"
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=env).returncode
