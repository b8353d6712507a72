"""Idmapped bind mounts: a mount's uidMappings/gidMappings, and the idmap and ridmap options.

Through an idmapped mount a file owned on disk by id X, within a mapping's [containerID,
containerID + size), shows as hostID + (X - containerID), and a file created through it by that
id is stored as X: a user namespace's uid_map read as the kernel reads it. A container with a
user namespace then sees that id through its own mappings; so `idmap` without mappings of its
own, which takes the container's mappings, shows the container's root the files of the host's
root as its own.

The parent of create makes them, before it forks the init, because only the host's side has
what they need (runc and crun make them on the host's side as well):
- the source, resolved in the host's view as every bind source is;
- CAP_SYS_ADMIN over the source's filesystem: the kernel refuses mount_setattr(MOUNT_ATTR_IDMAP)
  to a process in the container's user namespace.
Each one is open_tree(OPEN_TREE_CLONE) of the source (with rbind, of its whole tree), a detached
mount that mount_setattr(MOUNT_ATTR_IDMAP) gives the mapping of a user namespace (recursively with
ridmap). The namespace belongs to a helper process that unshares it, stops, has its maps written
and is killed; the namespace lives on in the fd. A container that joins a user namespace by path
lends that one to idmap without mappings, as runc does. The init attaches each tree with
move_mount() where the bind would go, in the order of config.json (capsa.rootfs).
"""

from __future__ import annotations

import _signal
import posix

from capsa import linux
from capsa.errors import EINVAL, EPERM, ContainerStartError
from capsa.mountopts import is_idmapped, parse_mount_options
from capsa.procfs import write_file

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any


def prepare(spec: dict[str, Any]) -> dict[int, int]:
    """Index in `mounts` -> fd of the detached, idmapped tree of that mount ({} if none is idmapped)."""
    trees: dict[int, int] = {}
    namespaces = _Namespaces(spec.get("linux") or {})
    try:
        for index, mount in enumerate(spec.get("mounts") or []):
            if is_idmapped(mount):
                trees[index] = _idmapped_tree(mount, namespaces.fd_for(mount, f"mounts[{index}]"), f"mounts[{index}]")
    except BaseException:
        for fd in trees.values():
            posix.close(fd)
        raise
    finally:
        namespaces.close()
    return trees


def _idmapped_tree(mount: dict[str, Any], userns_fd: int, field: str) -> int:
    options = parse_mount_options(mount.get("options") or [])
    source = mount.get("source") or ""
    try:
        recursive = linux.AT_RECURSIVE if options.recursive_bind else 0
        tree = linux.open_tree(linux.AT_FDCWD, source, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | recursive)
    except OSError as err:
        raise ContainerStartError(f"{field}: cannot open the source {source}: {err.strerror}") from None
    try:
        linux.mount_setattr_idmap(tree, userns_fd, "ridmap" in options.extensions)
    except OSError as err:
        posix.close(tree)
        raise ContainerStartError(f"{field}: cannot idmap {source}: {err.strerror}{_setattr_hint(err.errno)}") from None
    return tree


def _setattr_hint(error: int) -> str:
    if error == EINVAL:
        return (" (its filesystem cannot be idmapped on this kernel (ext4, xfs, btrfs and tmpfs can, NFS cannot), "
                "or the mount is idmapped already)")
    if error == EPERM:
        return " (an idmapped mount needs CAP_SYS_ADMIN in the user namespace that mounted the source's filesystem)"
    return ""


class _Namespaces:
    """One user namespace fd per distinct mapping (runc shares them the same way)."""

    def __init__(self, linux_spec: dict[str, Any]):
        self.linux = linux_spec
        self.fds: dict[Any, int] = {}

    def fd_for(self, mount: dict[str, Any], field: str) -> int:
        if mount.get("uidMappings"):
            return self._with_mappings(mount["uidMappings"], mount["gidMappings"], field)
        joined = next((ns.get("path") for ns in self.linux.get("namespaces") or [] if ns["type"] == "user"), None)
        if joined:
            return self._joined(joined, field)
        return self._with_mappings(self.linux["uidMappings"], self.linux["gidMappings"], "linux")

    def _with_mappings(self, uids: list[dict[str, Any]], gids: list[dict[str, Any]], field: str) -> int:
        key = (_map_lines(uids), _map_lines(gids))
        if key not in self.fds:
            self.fds[key] = _userns_with(*key, field)
        return self.fds[key]

    def _joined(self, path: str, field: str) -> int:
        if path not in self.fds:
            try:
                self.fds[path] = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
            except OSError as err:
                raise ContainerStartError(f"{field}: idmap takes the user namespace {path}, which cannot be opened: "
                                          f"{err.strerror}") from None
        return self.fds[path]

    def close(self) -> None:
        for fd in self.fds.values():
            posix.close(fd)
        self.fds.clear()


def _map_lines(mappings: list[dict[str, Any]]) -> str:
    return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in mappings)


def _userns_with(uid_map: str, gid_map: str, field: str) -> int:
    """An fd of a new user namespace with these maps: a helper process unshares it and stops,
    its maps are written, and it is killed (the namespace lives on in the fd)."""
    pid = posix.fork()
    if pid == 0:
        try:
            linux.unshare(linux.CLONE_NEWUSER)
            posix.kill(posix.getpid(), _signal.SIGSTOP)
        except BaseException:  # noqa: BLE001 - the parent sees the exit, not a stop
            posix._exit(1)
        posix._exit(0)
    _, status = posix.waitpid(pid, posix.WUNTRACED)
    if not posix.WIFSTOPPED(status):  # it exited (and is reaped): unshare failed
        raise ContainerStartError(f"{field}: cannot create a user namespace for an idmapped mount")
    try:
        for kind, lines in (("uid_map", uid_map), ("gid_map", gid_map)):
            try:
                write_file(f"/proc/{pid}/{kind}", lines)
            except OSError as err:
                key = "uidMappings" if kind == "uid_map" else "gidMappings"
                raise ContainerStartError(f"{field}.{key}: the kernel refused the mapping of an idmapped mount: "
                                          f"{err.strerror} (ranges must not overlap)") from None
        return posix.open(f"/proc/{pid}/ns/user", posix.O_RDONLY | posix.O_CLOEXEC)
    finally:
        posix.kill(pid, _signal.SIGKILL)
        posix.waitpid(pid, 0)
