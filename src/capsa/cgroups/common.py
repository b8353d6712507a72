"""What cgroup v1 and v2 share: finding the hierarchies, reading linux.cgroupsPath, and the
Cgroup base class, whose for_spec/from_record pick the driver for the host's layout.

The package does without `os` (posix and capsa.posixlite instead): `delete`, `kill --all`,
`pause` and `resume` load it, and `import os` alone is ~4.4M instructions, ~1 ms per call."""

from __future__ import annotations

import posix
import time

from capsa import posixlite
from capsa.errors import EACCES, EBUSY, EPERM, EROFS, CapsaError, ConfigError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

CGROUP_ROOT = "/sys/fs/cgroup"
FREEZE_TIMEOUT = 10.0

# Host layouts, as runc tells them apart.
LEGACY = "v1"  # controllers on v1 hierarchies, no cgroup2
HYBRID = "hybrid"  # controllers on v1, an empty cgroup2 beside them (/sys/fs/cgroup/unified)
UNIFIED = "unified"  # cgroup2 alone at /sys/fs/cgroup


class CgroupError(CapsaError):
    pass


def hierarchies(mountinfo: str = "/proc/self/mountinfo") -> dict[str, str]:
    """Each cgroup hierarchy's mount point -> the controllers on it (v1 super options; "" for v2)."""
    found: dict[str, str] = {}
    with open(mountinfo) as f:
        for line in f.read().splitlines():
            before, _, after = line.partition(" - ")
            fstype, _, rest = after.partition(" ")
            point = before.split(" ")[4]
            if fstype == "cgroup":
                options = rest.split(" ", 1)[1] if " " in rest else ""
                found[point] = ",".join(o for o in options.split(",") if o not in ("rw", "ro"))
            elif fstype == "cgroup2" and point.startswith(CGROUP_ROOT):
                found[point] = ""
    return found


def layout(found: dict[str, str] | None = None) -> str:
    """v1, hybrid or unified: what this host's cgroup mounts are."""
    found = hierarchies() if found is None else found
    if not any(found.values()):
        return UNIFIED if found.get(CGROUP_ROOT) == "" else LEGACY
    return HYBRID if "" in found.values() else LEGACY


def own_cgroups(proc_cgroup: str = "/proc/self/cgroup") -> dict[str, str]:
    """Controller (or name=...) -> this process's cgroup path in that hierarchy ("" key for v2)."""
    own: dict[str, str] = {}
    with open(proc_cgroup) as f:
        for line in f.read().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                own[controller] = path
    return own


def cgroups_path(spec: dict[str, Any], container_id: str) -> str:
    """linux.cgroupsPath as runc reads it for the cgroupfs driver. Without one, runc's default:
    the container id, relative, so below the caller's own cgroup. (Not a common parent such as
    /capsa: on cgroup v1 a realtime budget needs one in every cgroup above, and a parent capsa
    made would have none, so linux.resources.cpu.realtimeRuntime could never be set.)"""
    path = (spec.get("linux") or {}).get("cgroupsPath") or container_id
    if ":" in path and not path.startswith("/"):
        raise ConfigError("linux.cgroupsPath", f"{path!r} is a systemd path (slice:prefix:name): use --systemd-cgroup")
    if ".." in path.split("/"):
        raise ConfigError("linux.cgroupsPath", f"{path!r} must not contain '..'")
    return path


class Cgroup:
    """One container's cgroup. `paths` maps each hierarchy's controllers ("cpu,cpuacct",
    "name=systemd"; "" for cgroup2) to the container's directory in it; it is what the state
    file records. V1Cgroup (v1 and hybrid hosts) and V2Cgroup (unified) do the work."""

    # The driver creates the cgroup itself (False) or a manager puts the first process in it
    # (True: systemd, see systemd.py; launch then forks the child outside and lets it wait).
    placed_by_manager = False

    def __init__(self, paths: dict[str, str]):
        self.paths = paths

    @classmethod
    def for_spec(cls, spec: dict[str, Any], container_id: str, systemd: bool = False) -> Cgroup:
        if systemd:
            from capsa.cgroups import systemd as systemd_driver

            return systemd_driver.for_spec(spec, container_id)
        found = hierarchies()
        path = cgroups_path(spec, container_id)
        if layout(found) == UNIFIED:
            from capsa.cgroups.v2 import V2Cgroup

            return V2Cgroup.at(path)
        from capsa.cgroups.v1 import V1Cgroup

        return V1Cgroup.at(path, found)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Cgroup | None:
        paths = record.get("cgroupPaths")
        if record.get("systemdUnit"):
            from capsa.cgroups import systemd as systemd_driver

            return systemd_driver.from_record(record)
        if not paths:
            return None
        if list(paths) == [""]:
            from capsa.cgroups.v2 import V2Cgroup

            return V2Cgroup(paths)
        from capsa.cgroups.v1 import V1Cgroup

        return V1Cgroup(paths)

    def sub(self, path: str) -> Cgroup:
        """A sub-cgroup of this one (exec --cgroup); it must already exist."""
        if path.startswith("/") or ".." in path.split("/"):
            raise CgroupError(f"--cgroup {path!r}: give a path below the container's cgroup")
        paths = {c: posixlite.join(d, path) for c, d in self.paths.items()}
        missing = [d for d in paths.values() if not posixlite.isdir(d)]
        if missing:
            raise CgroupError(f"--cgroup {path!r}: {missing[0]} does not exist")
        return type(self)(paths)

    def cgroup2_dir(self) -> str | None:
        """The container's directory in the cgroup2 hierarchy (hybrid hosts' unified one), if any."""
        return self.paths.get("")

    def destroy(self) -> None:
        """Remove the container's directories (deepest first), retrying while the kernel lets go."""
        for directory in self.paths.values():
            rmdir_tree(directory)

    def update(self, resources: dict[str, Any], warn: Any = None) -> None:
        """New limits for a running container (capsa update)."""
        self.apply(resources, warn=warn, with_devices=False)  # device rules are set once, at create

    def kill_all(self, signal: int) -> None:
        """Signal every process in the cgroup, frozen so that none can fork away meanwhile."""
        freeze = self.can_freeze() and not self.is_frozen()
        if freeze:
            self.freeze()
        try:
            for pid in self.pids():
                try:
                    posix.kill(pid, signal)
                except ProcessLookupError:
                    pass
        finally:
            if freeze:
                self.thaw()

    # Implemented by each version.
    def pids(self) -> list[int]:
        raise NotImplementedError

    def can_freeze(self) -> bool:
        raise NotImplementedError

    def is_frozen(self) -> bool:
        raise NotImplementedError

    def freeze(self) -> None:
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError


def wait_until(check, what: str, timeout: float = FREEZE_TIMEOUT) -> None:
    """Poll `check` (1 ms apart) until it is true; a CgroupError after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise CgroupError(f"the cgroup did not reach {what} within {timeout:.0f} s")
        time.sleep(0.001)


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def read_int(path: str) -> int:
    try:
        value = read(path)
    except OSError:
        return 0
    return int(value) if value.lstrip("-").isdigit() else 0


def read_keyed(path: str) -> dict[str, int]:
    """A flat keyed file ("name value" lines: memory.stat, cpu.stat, memory.events)."""
    try:
        lines = read(path).splitlines()
    except OSError:
        return {}
    pairs = (line.split() for line in lines)
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}


def rmdir_tree(directory: str) -> None:
    if not posixlite.isdir(directory):
        return
    for entry in posix.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            rmdir_tree(entry.path)
    deadline = time.monotonic() + 2.0
    while True:
        try:
            posix.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as err:
            # EBUSY while the last task is still being torn down by the kernel.
            if err.errno != EBUSY or time.monotonic() > deadline:
                raise CgroupError(f"cannot remove cgroup {directory}: {err.strerror}") from None
            time.sleep(0.005)


def join_file_needing_write(controllers: str, directory: str) -> str:
    """The file a process moving itself into `directory` needs write access to: `tasks` in v1;
    in cgroup2 the cgroup.procs of the common ancestor of where it is and where it goes (the
    kernel's delegation rule), which is root's unless the caller already lives in a delegated
    subtree."""
    if controllers:
        return posixlite.join(directory, "tasks")
    point = next((p for p, c in hierarchies().items() if c == "" and directory.startswith(p + "/")), None)
    if point is None:
        return posixlite.join(directory, "cgroup.procs")
    common = commonpath([own_cgroups().get("", "/"), directory[len(point):]])
    return posixlite.join(point + common.rstrip("/"), "cgroup.procs")


def rmdir_quietly(directory: str) -> None:
    try:
        posix.rmdir(directory)
    except OSError:
        pass


def denied(err: OSError) -> bool:
    """An error that means: the caller may not do this here (rootless)."""
    return err.errno in (EPERM, EACCES, EROFS)


def create_error(directory: str, err: OSError) -> CgroupError:
    """Why a container's cgroup directory could not be made, with a hint for an unprivileged caller."""
    hint = (" (capsa is not root: linux.cgroupsPath must name a cgroup delegated to the caller)"
            if denied(err) and posix.geteuid() != 0 else "")
    return CgroupError(f"cannot create cgroup {directory}: {err.strerror}{hint}")


def given(section: dict[str, Any], key: str) -> bool:
    """Set, as runc reads these fields: 0 means "not set" (docker and others send zeros)."""
    return section.get(key) not in (None, "", 0)


# -- paths: os.path's and os.walk, without os (kept out of posixlite, which every call loads) --------
def exists(path: str) -> bool:
    """os.path.exists: stat succeeds (a dangling symlink does not exist)."""
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def walk_dirs(top: str):
    """The directories os.walk(top) visits, top first: a directory that cannot be listed (gone
    meanwhile) is skipped with what is under it, and symlinks are not followed."""
    try:
        entries = posix.scandir(top)
    except OSError:
        return
    subdirs = []
    with entries:
        while True:
            try:
                entry = next(entries)
            except StopIteration:
                break
            except OSError:  # as os.walk: a listing that fails half-way drops the directory
                return
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:  # as os.walk: an entry that cannot be told is not walked into
                is_dir = False
            if is_dir:
                subdirs.append(entry.path)
    yield top
    for subdir in subdirs:
        yield from walk_dirs(subdir)


def commonpath(paths: list[str]) -> str:
    """posixpath.commonpath: the longest common sub-path (whole components, "." and empty ones dropped)."""
    if not paths:
        raise ValueError("commonpath() arg is an empty sequence")
    absolute = {p.startswith("/") for p in paths}
    if len(absolute) != 1:
        raise ValueError("Can't mix absolute and relative paths")
    split = [[c for c in p.split("/") if c and c != "."] for p in paths]
    # As posixpath: what the least and the greatest lists share, all lists share.
    first, last = min(split), max(split)
    common = first
    for index, component in enumerate(first):
        if component != last[index]:
            common = first[:index]
            break
    prefix = "/" if absolute.pop() else ""
    return prefix + "/".join(common)


def relpath(path: str, start: str) -> str:
    """posixpath.relpath: `path` as seen from `start` (both made absolute first)."""
    if not path:
        raise ValueError("no path specified")
    start_parts = [p for p in posixlite.abspath(start).split("/") if p]
    path_parts = [p for p in posixlite.abspath(path).split("/") if p]
    shared = 0
    for a, b in zip(start_parts, path_parts, strict=False):  # the shorter one bounds the shared part
        if a != b:
            break
        shared += 1
    parts = [".."] * (len(start_parts) - shared) + path_parts[shared:]
    return "/".join(parts) if parts else "."
