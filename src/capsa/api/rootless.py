"""capsa's Python API for an unprivileged caller (rootless): what it needs of the host, said
clearly where something is missing, and how its sandboxes differ.

An unprivileged program gets sandboxes as podman's rootless containers are made: a user
namespace whose root is the calling user itself (container id 0 -> the caller's uid) and whose
ids 1-65535 are subordinate ids /etc/subuid and /etc/subgid grant it, written by the setuid
helpers newuidmap and newgidmap; no cgroup unless one is delegated to the user (cgroup v2 with
the controllers enabled in a cgroup it may write), so memory=, cpus= and pids= need one; the
API's state in $XDG_RUNTIME_DIR/capsa-api (else /tmp/capsa-api-<uid>).
"""

from __future__ import annotations

import os

NEEDED_IDS = 65535  # container ids 1..65535


def is_rootless() -> bool:
    return os.geteuid() != 0


def problems() -> list[str]:
    """What keeps this unprivileged caller from making sandboxes, each naming what is missing."""
    import shutil

    found = []
    if _read("/proc/sys/user/max_user_namespaces") == "0":
        found.append("user namespaces are disabled: /proc/sys/user/max_user_namespaces is 0")
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        found.append("unprivileged user namespaces are disabled: /proc/sys/kernel/unprivileged_userns_clone is 0 "
                     "(sysctl kernel.unprivileged_userns_clone=1)")
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        found.append("AppArmor restricts unprivileged user namespaces: "
                     "/proc/sys/kernel/apparmor_restrict_unprivileged_userns is 1")
    missing = [tool for tool in ("newuidmap", "newgidmap") if shutil.which(tool) is None]
    if missing:
        found.append(f"{' and '.join(missing)} not found on PATH (Debian package uidmap): they write the id maps")
    for path in ("/etc/subuid", "/etc/subgid"):
        if subordinate_range(path) is None:
            found.append(f"{path} grants user {_user_name()} no range of {NEEDED_IDS + 1} ids (for instance: "
                         f"usermod --add-{path[5:]}s 100000-165535 {_user_name()})")
    return found


def subordinate_range(path: str) -> int | None:
    """The first id of a range of at least NEEDED_IDS ids /etc/subuid or /etc/subgid grants."""
    from capsa.idmap import granted_ranges

    return next((start for start, count in granted_ranges(path) if count >= NEEDED_IDS), None)


def id_mappings() -> tuple[list[dict], list[dict]]:
    """uidMappings and gidMappings: root inside is the caller, 1..65535 its subordinate ids."""
    return ([{"containerID": 0, "hostID": os.geteuid(), "size": 1},
             {"containerID": 1, "hostID": subordinate_range("/etc/subuid"), "size": NEEDED_IDS}],
            [{"containerID": 0, "hostID": os.getegid(), "size": 1},
             {"containerID": 1, "hostID": subordinate_range("/etc/subgid"), "size": NEEDED_IDS}])


def delegated_cgroup() -> str | None:
    """The caller's own cgroup v2 directory if it may make cgroups in it with the memory, pids
    and cpu controllers (a delegation, such as systemd's Delegate=yes); else None."""
    if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return None  # cgroup v1 (or hybrid): nothing an unprivileged user may be given
    own = next((line[3:].strip() for line in (_read("/proc/self/cgroup") or "").splitlines()
                if line.startswith("0::")), None)
    if own is None:
        return None
    directory = "/sys/fs/cgroup" + own.rstrip("/")
    enabled = set((_read(os.path.join(directory, "cgroup.subtree_control")) or "").split())
    if not os.access(directory, os.W_OK) or not {"memory", "pids", "cpu"} <= enabled:
        return None
    return directory


def _user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None
