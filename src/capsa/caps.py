"""Applying process.capabilities and process.user: bounding, ambient, and the three capset sets."""

from __future__ import annotations

import posix

from capsa import linux, posixlite
from capsa.spec import CAPABILITIES, CAPABILITY_SETS

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any


_last_cap: int | None = None


def last_cap() -> int:
    """The kernel's highest capability number: read once per process (a constant of the running
    kernel), so that the children of a long-lived one (the API's zygote) find it known."""
    global _last_cap
    if _last_cap is None:
        try:
            _last_cap = int(posixlite.read_bytes("/proc/sys/kernel/cap_last_cap"))
        except OSError:
            return max(CAPABILITIES.values())
    return _last_cap


def unavailable(capabilities: dict[str, Any] | None, grantable: int | None = None) -> list[str]:
    """The names in process.capabilities that cannot be granted: unknown to capsa or to this
    kernel, or (grantable: a mask; None for all) not held where the process is made.

    runtime-spec 1.1+: such values MUST be logged as a warning and runtimes SHOULD NOT fail, "for
    example, if the runtime operates in a restricted environment with a limited set of
    capabilities". runc 1.1 warns "ignoring unknown or unavailable capabilities" for the first
    kind; capsa also skips, with the same warning, what it does not hold (_mask, apply_sets)."""
    if not capabilities:
        return []
    highest = last_cap()
    names = (name for kind in CAPABILITY_SETS for name in capabilities.get(kind) or ())
    return list(dict.fromkeys(name for name in names if not _grantable(name, highest, grantable)))


def _number(name: str, highest: int) -> int | None:
    """The capability's number, None when capsa or this kernel (last cap `highest`) does not know it."""
    number = CAPABILITIES.get(name)
    return number if number is not None and number <= highest else None


def _grantable(name: str, highest: int, grantable: int | None) -> bool:
    number = _number(name, highest)
    return number is not None and (grantable is None or bool(grantable & (1 << number)))


def grantable_by(namespaces: list[dict[str, Any]]) -> int | None:
    """What a process made in `namespaces` can be granted: everything in a user namespace (it gets
    a full set there), else what this process holds, which it passes on."""
    if any(ns.get("type") == "user" for ns in namespaces):
        return None
    return linux.capget_permitted()


def warn_unavailable(process: dict[str, Any] | None, spec: dict[str, Any], warn: Any) -> None:
    """Tell `warn` which of process.capabilities will not be granted (runtime-spec 1.1+: a
    warning, not a failure); `spec` is the container's (its namespaces decide what is grantable)."""
    capabilities = (process or {}).get("capabilities")
    if not capabilities or warn is None:
        return
    ignored = unavailable(capabilities, grantable_by((spec.get("linux") or {}).get("namespaces") or []))
    if ignored:
        warn(f"ignoring unknown or unavailable capabilities: [{' '.join(ignored)}]")


def _mask(names: list[str] | None, highest: int) -> int:
    mask = 0
    for name in names or ():
        number = _number(name, highest)
        if number is not None:  # see unavailable(): the rest were warned about and are ignored
            mask |= 1 << number
    return mask


def drop_bounding(capabilities: dict[str, Any] | None) -> None:
    """Drop every capability outside process.capabilities.bounding (before the uid change)."""
    if capabilities is None:
        return
    highest = last_cap()
    keep = _mask(capabilities.get("bounding"), highest)
    for number in range(highest + 1):
        if not keep & (1 << number):
            linux.prctl(linux.PR_CAPBSET_DROP, number)


def switch_user(user: dict[str, Any]) -> None:
    """setgroups, setgid, setuid, keeping the permitted capabilities across the uid change."""
    uid = user.get("uid", 0)
    gid = user.get("gid", 0)
    linux.prctl(linux.PR_SET_KEEPCAPS, 1)
    try:
        posix.setgroups(user.get("additionalGids") or [])
    except PermissionError:
        # setgroups is denied in a user namespace whose setgroups file says "deny" (rootless).
        if user.get("additionalGids"):
            raise
    posix.setresgid(gid, gid, gid)
    posix.setresuid(uid, uid, uid)
    linux.prctl(linux.PR_SET_KEEPCAPS, 0)


def apply_sets(capabilities: dict[str, Any] | None) -> None:
    """Set effective, permitted and inheritable, then raise the ambient ones. What this process
    does not hold is left out (the parent warned about it: see unavailable())."""
    if capabilities is None:
        return
    highest = last_cap()
    held = linux.capget_permitted()
    permitted = _mask(capabilities.get("permitted"), highest) & held
    linux.capset(_mask(capabilities.get("effective"), highest) & held, permitted,
                 _mask(capabilities.get("inheritable"), highest) & held)
    linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
    for name in capabilities.get("ambient") or ():
        number = _number(name, highest)
        if number is None:
            continue
        try:
            linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_RAISE, number)
        except PermissionError:
            # The kernel raises an ambient capability only if it is also permitted and
            # inheritable; runc and crun skip the others (runc's default spec lists ambient
            # capabilities without inheritable ones).
            pass
