"""The cgroupfs driver on cgroup v2 (unified) hosts, as runc's fs2 driver.

One directory per container under /sys/fs/cgroup. Controllers reach it through the
cgroup.subtree_control of every level above it; linux.resources is translated to the v2 files
(v2_resources.py, loaded only by the calls that write or read them); device rules become an eBPF
program attached to the directory (devices_bpf.py);
pause/resume write cgroup.freeze and wait for cgroup.events to say "frozen"; kill --all with
SIGKILL writes cgroup.kill. The container's init is born in the directory (clone3
CLONE_INTO_CGROUP, launch._fork_into), so no user code ever runs outside it.
"""

from __future__ import annotations

import posix

from capsa import posixlite
from capsa.cgroups.common import (
    CGROUP_ROOT,
    CGROUPFS_V2,
    EACCES,
    Cgroup,
    create_error,
    denied,
    exists,
    join_file_needing_write,
    own_cgroups,
    read,
    read_keyed,
    relpath,
    rmdir_quietly,
    wait_until,
    walk_dirs,
)
from capsa.errors import ConfigError, UnsupportedError
from capsa.procfs import write_file

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from capsa.cgroups.common import OomWatch


class V2Cgroup(Cgroup):
    """One cgroup: one directory in the cgroup2 hierarchy."""

    driver = CGROUPFS_V2

    @classmethod
    def at(cls, path: str) -> V2Cgroup:
        """linux.cgroupsPath `path`: absolute from the root, relative under our own cgroup (as runc)."""
        base = CGROUP_ROOT if path.startswith("/") else CGROUP_ROOT + own_cgroups().get("", "/").rstrip("/")
        directory = posixlite.normpath(f"{base}/{path.strip('/')}")
        if directory == CGROUP_ROOT:
            raise ConfigError("linux.cgroupsPath", "a container cannot use the root cgroup")
        return cls({"": directory})

    @property
    def directory(self) -> str:
        return self.paths[""]

    def _file(self, name: str) -> str:
        return posixlite.join(self.directory, name)

    def path_for(self, controller: str) -> str | None:
        """The directory if `controller` is enabled in it (callers written for v1 ask this); None
        also once a rootless create gave the directory up (paths emptied)."""
        if not self.paths:
            return None
        return self.directory if controller in self.controllers() else None

    def controllers(self) -> list[str]:
        try:
            return read(self._file("cgroup.controllers")).split()
        except FileNotFoundError:
            return []

    # -- life -------------------------------------------------------------------------------------
    def create(self, ignore_denied: bool = False) -> list[str]:
        """mkdir -p, enabling every available controller on each level above the container's
        (a sandbox's parent included: its children get its controllers).

        With ignore_denied (rootless), a directory the caller may not make, or may not move a
        process into (the kernel's delegation rule), is given up: `paths` is emptied and [""]
        returned, and the container stays in the caller's cgroup, as runc's rootless manager
        does. Otherwise that is an error."""
        try:
            if self._mkdirs():
                self.created.add("")
            if ignore_denied and not posix.access(join_file_needing_write("", self.directory), posix.W_OK):
                if "" in self.created:
                    rmdir_quietly(self.directory)
                    self.created.discard("")
                raise PermissionError(EACCES, "cannot move processes into it")
        except OSError as err:
            if ignore_denied and denied(err):
                self.paths.clear()
                return [""]
            raise create_error(self.directory, err) from None
        return []

    def _mkdirs(self) -> bool:
        """True if the last level, the cgroup's own directory, was made by this call."""
        current = CGROUP_ROOT
        made = False
        for part in relpath(self.directory, CGROUP_ROOT).split("/"):
            _enable_controllers(current)
            current = posixlite.join(current, part)
            try:
                posix.mkdir(current, 0o755)
                made = True
            except FileExistsError:
                made = False
        return made

    def add(self, pid: int) -> None:
        write_file(self._file("cgroup.procs"), str(pid))

    def self_join_files(self, with_cgroup2: bool = True) -> list[str]:
        """Where a process moves itself when it could not be born in the cgroup (old kernels)."""
        return [self._file("cgroup.procs")] if with_cgroup2 else []

    def pids(self) -> list[int]:
        """Every process of the container, sub-cgroups (exec --cgroup, nested managers) included."""
        found = []
        for directory in walk_dirs(self.directory):
            try:
                found += [int(line) for line in read(posixlite.join(directory, "cgroup.procs")).split()]
            except FileNotFoundError:
                continue
        return found

    def kill_all(self, signal: int) -> None:
        # cgroup.kill (Linux 5.14) kills every process at once, forks racing it included.
        if signal == 9 and exists(self._file("cgroup.kill")):
            write_file(self._file("cgroup.kill"), "1")
            return
        super().kill_all(signal)

    # -- freezer ----------------------------------------------------------------------------------
    def can_freeze(self) -> bool:
        return exists(self._file("cgroup.freeze"))

    def is_frozen(self) -> bool:
        try:
            return read(self._file("cgroup.freeze")) == "1"
        except FileNotFoundError:
            return False

    def freeze(self) -> None:
        self._set_frozen(1)

    def thaw(self) -> None:
        self._set_frozen(0)

    def _set_frozen(self, value: int) -> None:
        if not self.can_freeze():
            raise UnsupportedError("pause/resume: this kernel has no cgroup.freeze (Linux 5.2 or later has it)")
        write_file(self._file("cgroup.freeze"), str(value))
        # cgroup.freeze is the request; cgroup.events says when every task has stopped.
        wait_until(lambda: read_keyed(self._file("cgroup.events")).get("frozen") == value,
                   "frozen" if value else "thawed")

    # -- resources (v2_resources.py: only the calls that write or read them load it) ---------------
    def apply(self, resources: dict[str, Any] | None, devices: list[dict[str, Any]] | None = None,
              rootless: bool = False, warn: Callable[[str], None] | None = None, with_devices: bool = True) -> None:
        """Write linux.resources to the v2 files (v2_resources.apply)."""
        from capsa.cgroups import v2_resources

        v2_resources.apply(self, resources, devices, rootless, warn, with_devices)

    # -- events -----------------------------------------------------------------------------------
    def oom_watch(self) -> OomWatch | None:
        """inotify on memory.events."""
        if not exists(self._file("memory.events")):
            return None
        return OomInotify(self._file("memory.events"))

    def stats(self) -> dict[str, Any]:
        from capsa.cgroups.v2_resources import stats

        return stats(self)


def _enable_controllers(directory: str) -> None:
    """Give the children of `directory` every controller it has (as runc, best effort: a level
    with processes of its own refuses with EBUSY, and the resource that needs the controller then
    fails with a clear error)."""
    try:
        available = read(posixlite.join(directory, "cgroup.controllers")).split()
        enabled = read(posixlite.join(directory, "cgroup.subtree_control")).split()
    except FileNotFoundError:
        return
    missing = [c for c in available if c not in enabled]
    if not missing:
        return
    path = posixlite.join(directory, "cgroup.subtree_control")
    try:
        write_file(path, " ".join(f"+{c}" for c in missing))
    except OSError:
        for controller in missing:
            try:
                write_file(path, f"+{controller}")
            except OSError:
                pass


class OomInotify:
    """v2 OOM notification: inotify on memory.events, which the kernel marks modified on every
    change; an OOM is when its oom or oom_kill count has grown."""

    def __init__(self, events_path: str):
        from capsa import linux

        self.path = events_path
        self.fd = linux.inotify_watch(events_path)
        self.count = self._count()

    def _count(self) -> int:
        events = read_keyed(self.path)
        return events.get("oom", 0) + events.get("oom_kill", 0)

    def fileno(self) -> int:
        return self.fd

    def fired(self) -> bool:
        try:
            while posix.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass
        count = self._count()
        grown, self.count = count > self.count, count
        return grown

    def close(self) -> None:
        posix.close(self.fd)


__all__ = ["V2Cgroup"]
