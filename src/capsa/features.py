"""The OCI features document: only what capsa really does on this host is reported as enabled."""

from __future__ import annotations

from capsa import OCI_VERSION, __version__

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

HOOKS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
NAMESPACES = ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"]


def features() -> dict[str, Any]:
    from capsa import lsm
    from capsa.mountopts import known_options
    from capsa.spec import CAPABILITIES, MEMORY_POLICY_FLAGS, MEMORY_POLICY_MODES

    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": HOOKS,
        "mountOptions": sorted(known_options()),
        "linux": {
            "namespaces": NAMESPACES,
            "capabilities": sorted(CAPABILITIES, key=CAPABILITIES.get),
            # systemd: the system instance over D-Bus (cgroups/systemd.py); a user's instance is not driven.
            "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": False, "rdma": True},
            "seccomp": _seccomp(),
            "apparmor": {"enabled": lsm.apparmor_enabled()},
            "selinux": {"enabled": lsm.selinux_enabled()},
            "intelRdt": {"enabled": False},
            # Recognized, as the schema asks, whatever this host's kernel supports.
            "memoryPolicy": {"modes": sorted(MEMORY_POLICY_MODES), "flags": sorted(MEMORY_POLICY_FLAGS)},
            # Bind mounts only, as runc (capsa.idmapped).
            "mountExtensions": {"idmap": {"enabled": True}},
        },
        "annotations": {"org.capsa.version": __version__},
    }


def _seccomp() -> dict[str, Any]:
    """What capsa does with linux.seccomp here: nothing at all if libseccomp cannot be loaded."""
    from capsa import seccomp
    from capsa.errors import UnsupportedError

    try:
        seccomp._library()
    except UnsupportedError:
        return {"enabled": False}
    actions = sorted(a for a in seccomp.ACTIONS if a != seccomp.NOTIFY or seccomp.kernel_has_notify())
    return {
        "enabled": True,
        "actions": actions,
        "operators": sorted(seccomp.OPERATORS),
        "archs": list(seccomp.ARCHITECTURES),
        # Known: flags capsa understands; supported: those this host's kernel accepts (probed).
        "knownFlags": sorted(seccomp.FLAGS),
        "supportedFlags": seccomp.supported_flags(),
    }
