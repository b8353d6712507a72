"""The default config.json of `capsa spec`: the same document `runc spec` writes."""

from __future__ import annotations

import os

from capsa import OCI_VERSION, jsonfast
from capsa.errors import CapsaError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

DEFAULT_CAPABILITIES = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_spec(rootless: bool = False, cgroup_namespace: bool | None = None) -> dict[str, Any]:
    """runc's `spec` (with --rootless: `spec --rootless`). As runc, a cgroup namespace only on a
    cgroup v2 host (cgroup_namespace None: /sys/fs/cgroup/cgroup.controllers exists, runc's test)."""
    if cgroup_namespace is None:
        cgroup_namespace = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    namespaces = ["pid", "network", "ipc", "uts", "mount"] + (["cgroup"] if cgroup_namespace else [])
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                kind: list(DEFAULT_CAPABILITIES) for kind in ("bounding", "effective", "permitted", "ambient")
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "capsa",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in namespaces],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }
    if rootless:
        _make_rootless(spec)
    return spec


def _make_rootless(spec: dict[str, Any]) -> None:
    """runc 1.1's `spec --rootless`, field for field: a user namespace mapping the caller to root,
    no network namespace (an unprivileged user could not give it any interface but lo), /sys bound
    from the host (sysfs cannot be mounted without owning the network namespace), no uid=/gid=
    mount options (the ids are not mapped) and no cgroup resources.

    The cgroup namespace stays where the default has one (cgroup v2 hosts), as in runc's.
    """
    linux = spec["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] not in ("network", "user")]
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    mounts = []
    for mount in spec["mounts"]:
        if mount["destination"] == "/sys":
            mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
            continue
        options = [o for o in mount.get("options", []) if not o.startswith(("uid=", "gid="))]
        mounts.append(dict(mount, options=options) if "options" in mount else mount)
    spec["mounts"] = mounts
    linux.pop("resources", None)


def write_spec(bundle: str, rootless: bool = False) -> str:
    """Write the default config.json into `bundle`; never overwrite one."""
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise CapsaError("File config.json exists. Remove it first.")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        raise CapsaError("File config.json exists. Remove it first.") from None
    except OSError as err:
        raise CapsaError(f"cannot write {path}: {err.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(jsonfast.dumps_indent(default_spec(rootless), "\t") + "\n")
    return path
