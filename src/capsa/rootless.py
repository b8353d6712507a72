"""Rootless containers: capsa run by an unprivileged user, as runc runs them.

Two separate questions, as in runc:
- rootless *euid* (capsa is not root): the container needs a user namespace with id mappings,
  and whatever only real root may do (device nodes, cgroups it was not given) is refused or
  skipped;
- rootless *cgroups* (`--rootless`, auto by default): permission errors creating the
  container's cgroup are ignored, and the container runs in the caller's cgroup, unless
  linux.cgroupsPath names one explicitly.
"""

from __future__ import annotations

import posix

from capsa.errors import CapsaError, ConfigError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

# Go's strconv.ParseBool spellings, which runc's --rootless takes besides "auto".
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_flag(value: str) -> bool | None:
    """--rootless: True, False, or None for auto."""
    if value in ("", "auto"):
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise CapsaError(f"invalid value {value!r} for --rootless: use true, false or auto")


def running_in_userns() -> bool:
    """True unless this process is in the initial user namespace (whose map is the identity)."""
    from capsa.procfs import in_user_namespace

    return in_user_namespace()


def rootless_cgroups(flag: str) -> bool:
    """runc's shouldUseRootlessCgroupManager for the cgroupfs driver."""
    explicit = parse_flag(flag)
    if explicit is not None:
        return explicit
    return posix.geteuid() != 0 or running_in_userns()


# -- config.json checks ------------------------------------------------------------------------
def check_spec(spec: dict[str, Any]) -> None:
    """What a container needs when capsa is not root (runc's rootlessEUIDCheck, and more)."""
    linux = spec.get("linux") or {}
    types = {ns["type"] for ns in linux.get("namespaces") or []}
    if "user" not in types:
        raise ConfigError(
            "linux.namespaces",
            "rootless container requires user namespaces: capsa is not root, so it cannot create the "
            "other namespaces or mounts without one (`capsa spec --rootless` writes such a config)",
        )
    if not linux.get("uidMappings"):
        raise ConfigError("linux.uidMappings", "rootless containers requires at least one UID mapping")
    if not linux.get("gidMappings"):
        raise ConfigError("linux.gidMappings", "rootless containers requires at least one GID mapping")
    user = (spec.get("process") or {}).get("user") or {}
    if user.get("additionalGids") and setgroups_denied(linux):
        raise ConfigError(
            "process.user.additionalGids",
            "cannot set additional groups in a rootless container that maps only the caller's own gid "
            "(setgroups is denied in its user namespace); map subordinate gids with linux.gidMappings",
        )


def setgroups_denied(linux: dict[str, Any]) -> bool:
    """True if the container's user namespace will have setgroups denied: the caller (not root)
    maps its own gid alone, which the kernel allows only once setgroups is denied."""
    return posix.geteuid() != 0 and is_own_id(linux.get("gidMappings") or [], posix.getegid())


def is_own_id(mappings: list[dict[str, Any]], host_id: int) -> bool:
    return len(mappings) == 1 and mappings[0]["hostID"] == host_id and mappings[0]["size"] == 1


def check_mapped(spec: dict[str, Any], process: dict[str, Any] | None = None, field: str = "process") -> None:
    """Ids the container uses must exist in its user namespace: say so before setuid fails."""
    linux = spec.get("linux") or {}
    uids, gids = linux.get("uidMappings"), linux.get("gidMappings")
    if not uids or not gids:
        return
    user = ((process if process is not None else spec.get("process")) or {}).get("user") or {}
    if not _mapped(uids, user.get("uid", 0)):
        raise ConfigError(f"{field}.user.uid", f"uid {user.get('uid', 0)} is not mapped in the container's user namespace (linux.uidMappings)")
    for key, value in [("gid", user.get("gid", 0))] + [("additionalGids", g) for g in user.get("additionalGids") or []]:
        if not _mapped(gids, value):
            raise ConfigError(f"{field}.user.{key}", f"gid {value} is not mapped in the container's user namespace (linux.gidMappings)")
    if process is not None:
        return
    for index, mount in enumerate(spec.get("mounts") or []):
        for option in mount.get("options") or []:
            name, _, value = option.partition("=")
            if name in ("uid", "gid") and value.isdigit() and not _mapped(uids if name == "uid" else gids, int(value)):
                raise ConfigError(
                    f"mounts[{index}].options",
                    f"{option}: {name} {value} is not mapped in the container's user namespace",
                )


def _mapped(mappings: list[dict[str, Any]], container_id: int) -> bool:
    return any(m["containerID"] <= container_id < m["containerID"] + m["size"] for m in mappings)
