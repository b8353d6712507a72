"""Writing a new user namespace's uid_map and gid_map, from the parent, as runc does.

- root writes the maps directly;
- an unprivileged caller may write only a single mapping of its own id, and for gid_map only
  once /proc/PID/setgroups says "deny" (the kernel's rule since 3.19: otherwise a user could drop
  a group that denies it access);
- anything else (several mappings, subordinate ids from /etc/subuid and /etc/subgid) goes through
  the setuid helpers newuidmap and newgidmap (Debian package uidmap), which check the grants.
  They need the target's /proc/PID to be owned by the caller, so the child stays dumpable until
  its maps are written.
"""

from __future__ import annotations

import posix

from capsa.errors import ContainerStartError
from capsa.procfs import write_file

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

# (proc file, config key, helper, file of grants, own id)
_KINDS = (
    ("uid_map", "uidMappings", "newuidmap", "/etc/subuid", posix.geteuid),
    ("gid_map", "gidMappings", "newgidmap", "/etc/subgid", posix.getegid),
)


def write_mappings(pid: int, linux_spec: dict[str, Any]) -> None:
    for kind, key, helper, grants, own_id in _KINDS:
        mappings = linux_spec.get(key) or []
        if not mappings:
            continue
        if posix.geteuid() == 0:
            try:
                _write_direct(pid, kind, key, mappings)
                continue
            except PermissionError:
                pass  # root inside a user namespace: the helpers may still be allowed to
        elif _is_own_id(mappings, own_id()):
            if kind == "gid_map":
                _deny_setgroups(pid)
            _write_direct(pid, kind, key, mappings)
            continue
        _check_granted(mappings, grants, key, own_id())
        _run_helper(helper, pid, mappings, key)


def _is_own_id(mappings: list[dict[str, Any]], host_id: int) -> bool:
    return len(mappings) == 1 and mappings[0]["hostID"] == host_id and mappings[0]["size"] == 1


def _write_direct(pid: int, kind: str, key: str, mappings: list[dict[str, Any]]) -> None:
    lines = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in mappings)
    try:
        write_file(f"/proc/{pid}/{kind}", lines)
    except PermissionError:
        if posix.geteuid() == 0:
            raise
        raise ContainerStartError(f"linux.{key}: cannot write {kind}: permission denied") from None
    except OSError as err:
        raise ContainerStartError(f"linux.{key}: cannot write {kind}: {err.strerror}") from None


def _deny_setgroups(pid: int) -> None:
    try:
        write_file(f"/proc/{pid}/setgroups", "deny")
    except OSError as err:
        raise ContainerStartError(f"linux.gidMappings: cannot deny setgroups before writing gid_map: {err.strerror}") from None


def _user_names() -> tuple[str, ...]:
    """The caller's user name and uid, the two ways /etc/subuid may name it."""
    uid = posix.getuid()
    try:
        import pwd

        return (pwd.getpwuid(uid).pw_name, str(uid))
    except KeyError:
        return (str(uid),)


def granted_ranges(path: str) -> list[tuple[int, int]]:
    """(first id, count) ranges /etc/subuid or /etc/subgid grants the caller."""
    names = _user_names()
    ranges = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in names and fields[1].isdigit() and fields[2].isdigit():
            ranges.append((int(fields[1]), int(fields[2])))
    return ranges


def _check_granted(mappings: list[dict[str, Any]], grants: str, key: str, own_id: int) -> None:
    """Refuse with the reason before the helper refuses with its own terse one."""
    ranges = granted_ranges(grants)
    for m in mappings:
        first, last = m["hostID"], m["hostID"] + m["size"] - 1
        if m["size"] == 1 and first == own_id:
            continue
        if not any(start <= first and last < start + count for start, count in ranges):
            who = _user_names()[0]
            raise ContainerStartError(
                f"linux.{key}: host ids {first}-{last} are not granted to user {who} in {grants}: "
                f"an unprivileged user may map only its own id ({own_id}) and the subordinate ids granted there"
            )


def _run_helper(helper: str, pid: int, mappings: list[dict[str, Any]], key: str) -> None:
    import shutil
    import subprocess

    path = shutil.which(helper)
    if path is None:
        raise ContainerStartError(
            f"linux.{key}: mapping more than the caller's own id needs {helper} (Debian package uidmap), "
            "which is not installed"
        )
    args = [path, str(pid)]
    for m in mappings:
        args += [str(m["containerID"]), str(m["hostID"]), str(m["size"])]
    result = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        reason = result.stderr.strip().replace("\n", "; ") or f"exit status {result.returncode}"
        raise ContainerStartError(f"linux.{key}: {helper} refused the mapping: {reason}")
