"""The cgroupfs driver on cgroup v1 hosts, hybrid ones included (v1 controllers, with an empty
cgroup2 beside them, in which the container also gets a directory).

The container's init is placed in its cgroup by `create` before any user code runs; resources
from linux.resources are written to the controller files (v1_resources.py, loaded only by the
calls that write or read them); the freezer pauses and resumes; every process of the container
is found through cgroup.procs (sub-cgroups included); `delete` removes the directories capsa made.
"""

from __future__ import annotations

import posix

from capsa import posixlite
from capsa.cgroups.common import (
    CGROUPFS_V1,
    EACCES,
    Cgroup,
    create_error,
    denied,
    join_file_needing_write,
    own_cgroups,
    read,
    rmdir_quietly,
    wait_until,
    walk_dirs,
)
from capsa.errors import UnsupportedError
from capsa.procfs import write_file

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from capsa.cgroups.common import OomWatch

__all__ = ["V1Cgroup"]


class V1Cgroup(Cgroup):
    """One container's cgroup: a directory in every v1 hierarchy (and the hybrid cgroup2 one)."""

    driver = CGROUPFS_V1

    @classmethod
    def at(cls, path: str, found: dict[str, str]) -> V1Cgroup:
        """linux.cgroupsPath `path` in each hierarchy of `found` (see common.hierarchies)."""
        own = own_cgroups()
        paths = {}
        for point, controllers in found.items():
            if path.startswith("/"):
                base = point
            else:  # relative: under the caller's own cgroup in that hierarchy, as runc does
                key = next((c for c in controllers.split(",") if c in own), "" if not controllers else None)
                base = point + (own.get(key, "/") if key is not None else "/").rstrip("/")
            paths[controllers] = posixlite.normpath(f"{base}/{path.strip('/')}")
        return cls(paths)

    # -- lookups ----------------------------------------------------------------------------------
    def path_for(self, controller: str) -> str | None:
        for controllers, directory in self.paths.items():
            if controller in controllers.split(","):
                return directory
        return None

    def _controller_dir(self, controller: str, field: str) -> str:
        directory = self.path_for(controller)
        if directory is None:
            raise UnsupportedError(f"{field}: the {controller} cgroup controller is not mounted on this host")
        return directory

    # -- life -----------------------------------------------------------------------------------
    def create(self, ignore_denied: bool = False) -> list[str]:
        """Make the directories; with ignore_denied (rootless), a hierarchy where the caller may
        not make the directory or move a process into it is dropped from `paths` instead of being
        an error. Returns the dropped hierarchies."""
        dropped = []
        for controllers, directory in list(self.paths.items()):
            try:
                if _mkdir_inheriting_cpuset(directory, "cpuset" in controllers.split(",")):
                    self.created.add(controllers)
                if ignore_denied:
                    join = join_file_needing_write(controllers, directory)
                    if not posix.access(join, posix.W_OK):
                        if controllers in self.created:
                            rmdir_quietly(directory)
                            self.created.discard(controllers)
                        raise PermissionError(EACCES, "cannot move processes into it", join)
            except OSError as err:
                if ignore_denied and denied(err):
                    del self.paths[controllers]
                    dropped.append(controllers)
                    continue
                raise create_error(directory, err) from None
        return dropped

    def add(self, pid: int) -> None:
        for directory in self.paths.values():
            write_file(posixlite.join(directory, "cgroup.procs"), str(pid))

    def self_join_files(self, with_cgroup2: bool = True) -> list[str]:
        """Files a single-threaded process writes "0" to, to move itself into this cgroup.

        Why not the parent writing the child's pid to cgroup.procs: moving another process takes
        the kernel's global cgroup_threadgroup_rwsem for writing, which waits for an RCU grace
        period (5-20 ms, measured) unless some migration happened just before. A thread moving
        itself through a v1 `tasks` file skips that lock (kernel >= 5.17,
        cgroup_procs_write_start): 0.5 ms for all v1 hierarchies, and children forked afterwards
        inherit the cgroup. cgroup2 has no such file (cgroup.threads refuses to cross domains):
        there the child is born in its cgroup (linux.clone_child), and only where that is
        not possible does it join through cgroup.procs, paying the wait.
        """
        files = []
        for controllers, directory in self.paths.items():
            if controllers:
                files.append(posixlite.join(directory, "tasks"))
            elif with_cgroup2:
                files.append(posixlite.join(directory, "cgroup.procs"))
        return files

    def pids(self) -> list[int]:
        """Every process in the cgroup and its sub-cgroups (a sandbox's members, exec --cgroup),
        as found in one hierarchy: a process is in every one."""
        top = self.path_for("pids") or self.path_for("freezer") or next(iter(self.paths.values()))
        found = []
        for directory in walk_dirs(top):
            try:
                with open(posixlite.join(directory, "cgroup.procs")) as f:
                    found += [int(line) for line in f.read().split()]
            except FileNotFoundError:
                continue
        return found

    # -- OOM notification (v1: an eventfd registered on memory.oom_control) ---------------------
    def oom_watch(self) -> OomWatch | None:
        """An eventfd registered on memory.oom_control."""
        directory = self.path_for("memory")
        if directory is None:
            return None
        efd = posix.eventfd(0, posix.EFD_CLOEXEC)
        control = posix.open(posixlite.join(directory, "memory.oom_control"), posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            write_file(posixlite.join(directory, "cgroup.event_control"), f"{efd} {control}")
        except OSError:
            posix.close(efd)
            raise
        finally:
            posix.close(control)
        return OomEventfd(efd)

    # -- freezer --------------------------------------------------------------------------------
    def freeze(self) -> None:
        self._set_freezer("FROZEN")

    def thaw(self) -> None:
        self._set_freezer("THAWED")

    def stats(self) -> dict[str, Any]:
        from capsa.cgroups.v1_resources import stats

        return stats(self)

    def can_freeze(self) -> bool:
        return self.path_for("freezer") is not None

    def is_frozen(self) -> bool:
        directory = self.path_for("freezer")
        if directory is None:
            return False
        try:
            with open(posixlite.join(directory, "freezer.state")) as f:
                return f.read().strip() == "FROZEN"
        except FileNotFoundError:
            return False

    def _set_freezer(self, state: str) -> None:
        directory = self._controller_dir("freezer", "pause/resume")
        path = posixlite.join(directory, "freezer.state")

        def reached() -> bool:
            write_file(path, state)  # written again: a task forked meanwhile is frozen too
            return read(path) == state  # FREEZING means: not all tasks are frozen yet

        wait_until(reached, state)

    # -- resources ------------------------------------------------------------------------------
    def apply(self, resources: dict[str, Any] | None, devices: list[dict[str, Any]] | None = None, rootless: bool = False,
              warn: Callable[[str], None] | None = None, with_devices: bool = True) -> None:
        """Write linux.resources to the controller files (v1_resources.apply)."""
        from capsa.cgroups import v1_resources

        v1_resources.apply(self, resources, devices, rootless, warn, with_devices)


def _mkdir_inheriting_cpuset(directory: str, is_cpuset: bool) -> bool:
    """mkdir -p; in the cpuset hierarchy each new level must get cpus and mems before it takes a
    task. True if this call made `directory` itself (False: it was there, or another made it meanwhile)."""
    try:
        posix.mkdir(directory, 0o755)  # the common case: its parent is there
        missing = []
    except FileExistsError:
        return False
    except FileNotFoundError:
        missing = []
        while not posixlite.isdir(directory):
            missing.append(directory)
            directory = posixlite.dirname(directory)
    else:
        if is_cpuset:
            _inherit_cpuset(directory)
        return True
    made = False
    for current in reversed(missing):
        try:
            posix.mkdir(current, 0o755)
        except FileExistsError:
            made = False
            continue
        made = True
        if is_cpuset:
            _inherit_cpuset(current)
    return made


def _inherit_cpuset(directory: str) -> None:
    """A new cpuset cgroup's cpus and mems, its parent's: it takes no task without them."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        with open(posixlite.join(posixlite.dirname(directory), name)) as f:
            write_file(posixlite.join(directory, name), f.read().strip())


class OomEventfd:
    """v1 OOM notification: an eventfd the kernel signals through cgroup.event_control."""

    def __init__(self, fd: int):
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def fired(self) -> bool:
        posix.eventfd_read(self.fd)
        return True

    def close(self) -> None:
        posix.close(self.fd)
