"""Applying process.capabilities and process.user: bounding, ambient, and the three capset sets."""

from __future__ import annotations

import os

from capsa import linux
from capsa.errors import CapsaError
from capsa.spec import CAPABILITIES

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(CAPABILITIES.values())


def _mask(names: list[str] | None, highest: int) -> int:
    mask = 0
    for name in names or ():
        number = CAPABILITIES[name]
        if number <= highest:  # capabilities this kernel does not know are ignored, as runc does
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
        os.setgroups(user.get("additionalGids") or [])
    except PermissionError:
        # setgroups is denied in a user namespace whose setgroups file says "deny" (rootless).
        if user.get("additionalGids"):
            raise
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    linux.prctl(linux.PR_SET_KEEPCAPS, 0)


def apply_sets(capabilities: dict[str, Any] | None) -> None:
    """Set effective, permitted and inheritable, then raise the ambient ones."""
    if capabilities is None:
        return
    highest = last_cap()
    permitted = _mask(capabilities.get("permitted"), highest)
    try:
        linux.capset(_mask(capabilities.get("effective"), highest), permitted, _mask(capabilities.get("inheritable"), highest))
    except PermissionError:
        missing = permitted & ~linux.capget_permitted()
        names = [name for name, number in CAPABILITIES.items() if missing & (1 << number)]
        if not names:
            raise
        raise CapsaError(
            f"process.capabilities: capsa itself does not hold {', '.join(names)}, so it cannot grant them"
        ) from None
    linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
    for name in capabilities.get("ambient") or ():
        number = CAPABILITIES[name]
        if number > highest:
            continue
        try:
            linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_RAISE, number)
        except PermissionError:
            # The kernel raises an ambient capability only if it is also permitted and
            # inheritable; runc and crun skip the others (runc's default spec lists ambient
            # capabilities without inheritable ones).
            pass
