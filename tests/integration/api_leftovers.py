"""What runs of capsa's Python API left behind: shared by the API's integration tests."""

from __future__ import annotations

import os

STATE_ROOT = "/run/capsa-api/state"


def leftovers(pid: int | None = None) -> list[str]:
    """Containers the API left in its state root, and cgroups named after them: of the program
    `pid` when given (another program's runs may be under way), else of every program."""
    names = os.listdir(STATE_ROOT) if os.path.isdir(STATE_ROOT) else []
    prefix = "api-" if pid is None else f"api-{pid}-"
    found = [n for n in names if n.startswith(prefix)]
    for hierarchy in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup"):
        for directory, subdirs, _ in os.walk(hierarchy):
            found += [os.path.join(directory, d) for d in subdirs if d.startswith(prefix)]
            if directory.count("/") > 6:
                subdirs.clear()
    return found
