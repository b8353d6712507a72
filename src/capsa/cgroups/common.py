"""What the cgroup drivers share: finding the hierarchies, reading linux.cgroupsPath, and the
Cgroup interface every driver implements (v1.py, v2.py, systemd.py). The package's __init__
picks the driver (for_spec, parent, from_record); this module imports none of them.

The package does without `os` (posix and capsa.posixlite instead): `delete`, `kill --all`,
`pause` and `resume` load it, and `import os` alone is ~4.4M instructions, ~1 ms per call."""

from __future__ import annotations

import posix
import time
from abc import abstractmethod  # loaded by the interpreter's own start-up: free

from capsa import posixlite
from capsa.errors import EACCES, EBUSY, EPERM, EROFS, CapsaError, ConfigError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, Protocol

    class OomWatch(Protocol):
        """What Cgroup.oom_watch returns (v1.OomEventfd, v2.OomInotify)."""

        def fileno(self) -> int: ...
        def fired(self) -> bool: ...
        def close(self) -> None: ...

CGROUP_ROOT = "/sys/fs/cgroup"
FREEZE_TIMEOUT = 10.0

# Host layouts, as runc tells them apart.
LEGACY = "v1"  # controllers on v1 hierarchies, no cgroup2
HYBRID = "hybrid"  # controllers on v1, an empty cgroup2 beside them (/sys/fs/cgroup/unified)
UNIFIED = "unified"  # cgroup2 alone at /sys/fs/cgroup

# The drivers, by the names the state file records (cgroupDriver).
CGROUPFS_V1 = "cgroupfs-v1"  # v1.py: v1 and hybrid hosts
CGROUPFS_V2 = "cgroupfs-v2"  # v2.py: unified hosts
SYSTEMD = "systemd"  # systemd.py: --systemd-cgroup, on either


class CgroupError(CapsaError):
    pass


def hierarchies(mountinfo: str = "/proc/self/mountinfo") -> dict[str, str]:
    """Each cgroup hierarchy's mount point -> the controllers on it (v1 super options; "" for v2).
    In a process that called remember_hierarchies(), its own are read again only when its mount
    table has changed."""
    if mountinfo == "/proc/self/mountinfo" and _own_mount_table is not None:
        return dict(_own_mount_table.hierarchies())
    return _parse_hierarchies(posixlite.read_bytes(mountinfo))


def remember_hierarchies() -> None:
    """For a long-lived process that makes many cgroups (the API's zygote): hierarchies() keeps
    what it read of this process's mount table until the table changes (_MountTable). Not for a
    command-line run, which asks once or twice: it would load `select` for nothing."""
    global _own_mount_table
    if _own_mount_table is None:
        _own_mount_table = _MountTable()


class _MountTable:
    """hierarchies() of this process, parsed again only when its mount table has changed: the
    kernel marks an open /proc/self/mountinfo POLLPRI on each change of its mount namespace. A
    long-lived caller (the API's zygote) asks once per container; reading and parsing the table
    each time was ~0.1 ms of its ~1 ms of Python a run. The fd is this process's and this mount
    namespace's: a fork (its file position and poll state would be shared) or a process that
    entered another mount namespace opens its own."""

    def __init__(self):
        self.fd = -1
        self.owner: tuple[int, int] | None = None  # (pid, mount namespace inode) the fd is for
        self.found: dict[str, str] = {}

    def hierarchies(self) -> dict[str, str]:
        import select

        owner = (posix.getpid(), posix.stat("/proc/self/ns/mnt").st_ino)
        if owner != self.owner:
            if self.fd >= 0 and self.owner is not None and self.owner[0] == owner[0]:
                posix.close(self.fd)  # ours, for a mount namespace we left (a fork's is its parent's to close)
            self.fd = posix.open("/proc/self/mountinfo", posix.O_RDONLY | posix.O_CLOEXEC)
            self.owner = owner
            self.found = self._read()
        else:
            poller = select.poll()
            poller.register(self.fd, select.POLLPRI)
            if poller.poll(0):
                self.found = self._read()
        return self.found

    def _read(self) -> dict[str, str]:
        posix.lseek(self.fd, 0, 0)  # SEEK_SET: read it from the start again
        chunks = []
        while chunk := posix.read(self.fd, 1 << 16):
            chunks.append(chunk)
        return _parse_hierarchies(b"".join(chunks))


_own_mount_table: _MountTable | None = None


def _parse_hierarchies(mountinfo: bytes) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in mountinfo.decode().splitlines():
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
    for line in posixlite.read_bytes(proc_cgroup).decode().splitlines():
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
    """One cgroup: a container's, or a sandbox's parent whose children are its members' cgroups.

    `paths` maps each hierarchy's controllers ("cpu,cpuacct", "name=systemd"; "" for cgroup2) to
    the cgroup's directory in it. `created` holds the hierarchies whose directory capsa made: it
    owns those, and destroy removes them. The others existed before create (a Kubernetes pod's
    cgroup, a delegated one): capsa joined them, and destroy leaves them as they were.
    record() is what the state file keeps of it; the class's from_record() reads it back.

    V1Cgroup (v1.py: v1 and hybrid hosts), V2Cgroup (v2.py: unified) and the systemd classes
    (systemd.py) implement every method; the package's for_spec, parent and from_record
    (capsa/cgroups/__init__.py) pick the class, so this module never imports them.

    @abstractmethod marks what each driver implements itself: type checkers and
    tests/unit/test_cgroup_driver.py hold every driver to it. Not ABCMeta, which would also
    refuse to instantiate an incomplete one: building the classes with it costs every call that
    loads a driver ~0.07M instructions.
    """

    driver = ""  # the name in the state: CGROUPFS_V1, CGROUPFS_V2 or SYSTEMD
    # The driver makes the cgroup itself (False: create, then the child is born in it or joins
    # it), or a manager makes it with the first process in it (True: systemd, see systemd.py;
    # launch then forks the child outside and lets it wait until create_with has placed it).
    placed_by_manager = False

    def __init__(self, paths: dict[str, str], created: Iterable[str] = ()):
        self.paths = paths
        self.created = set(created)

    # -- ownership and the state record -----------------------------------------------------------
    @property
    def owned(self) -> bool:
        """capsa made every directory of it (create found none of them there)."""
        return set(self.paths) <= self.created

    def record(self) -> dict[str, Any]:
        """What the state file keeps: the driver, the paths, and which of them capsa made
        (cgroupOwned: true, false, or the list of the hierarchies it made)."""
        keys = set(self.paths)
        made = keys & self.created
        owned: bool | list[str] = True if made == keys else False if not made else sorted(made)
        return {"cgroupDriver": self.driver, "cgroupPaths": dict(self.paths), "cgroupOwned": owned}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Cgroup:
        paths = dict(record.get("cgroupPaths") or {})
        return cls(paths, recorded_ownership(record, paths))

    def exists(self) -> bool:
        return bool(self.paths) and all(posixlite.isdir(d) for d in self.paths.values())

    # -- nesting ----------------------------------------------------------------------------------
    def sub(self, path: str) -> Cgroup:
        """An existing sub-cgroup of this one (exec --cgroup): joined, never removed by its destroy."""
        if path.startswith("/") or ".." in path.split("/"):
            raise CgroupError(f"--cgroup {path!r}: give a path below the container's cgroup")
        paths = {c: posixlite.join(d, path) for c, d in self.paths.items()}
        missing = [d for d in paths.values() if not posixlite.isdir(d)]
        if missing:
            raise CgroupError(f"--cgroup {path!r}: {missing[0]} does not exist")
        return self._nested(paths)

    def child(self, name: str) -> Cgroup:
        """A member's cgroup nested in this one (a sandbox's parent), not made yet: its create
        makes it (owned) or joins it, its destroy removes only it; the parent's destroy removes
        what is left of its children. The limits and the freezer of the parent apply to all of them.

        On cgroup2 a cgroup whose children have controllers may hold no process itself (the
        kernel's no-internal-process rule): every process of a sandbox, its infra container's too,
        goes in a child; the children's create enables the parent's controllers for them."""
        if not name or "/" in name or name in (".", ".."):
            raise CgroupError(f"child cgroup {name!r}: give one path component")
        return self._nested({c: posixlite.join(d, name) for c, d in self.paths.items()})

    def _nested(self, paths: dict[str, str]) -> Cgroup:
        """A cgroup of this driver at `paths`, below this one."""
        return type(self)(paths)

    # -- life -------------------------------------------------------------------------------------
    @abstractmethod
    def create(self, ignore_denied: bool = False) -> list[str]:
        """Make the directories that are not there (they are then owned), join the ones that
        are. With ignore_denied (rootless), a hierarchy where the caller may not make the
        directory or move a process into it is dropped from `paths` instead of being an error.
        Returns the dropped hierarchies."""

    def create_with(self, pid: int, resources: dict[str, Any] | None) -> None:
        """Create the cgroup with process `pid` in it: what drivers placed_by_manager do (systemd
        starts the unit around it, with `resources` as unit properties); the others create and add."""
        self.create()
        self.add(pid)

    @abstractmethod
    def add(self, pid: int) -> None:
        """Move process `pid` into the cgroup (every hierarchy)."""

    @abstractmethod
    def self_join_files(self, with_cgroup2: bool = True) -> list[str]:
        """Files a single-threaded process writes "0" to, to move itself into the cgroup."""

    def destroy(self) -> None:
        """Remove the directories capsa made, with whatever is below them (deepest first,
        retrying while the kernel lets go). A joined directory is left as it was, and what is
        below it too: those may be other containers' cgroups."""
        for controllers, directory in self.paths.items():
            if controllers in self.created:
                rmdir_tree(directory)

    # -- resources --------------------------------------------------------------------------------
    @abstractmethod
    def apply(self, resources: dict[str, Any] | None, devices: list[dict[str, Any]] | None = None,
              rootless: bool = False, warn: Callable[[str], None] | None = None, with_devices: bool = True) -> None:
        """Write linux.resources to the cgroup's files; `devices` (linux.devices) are allowed
        whatever the rules say. with_devices=False leaves the device rules alone (update; a
        sandbox's parent, whose members each get their own)."""

    def update(self, resources: dict[str, Any], warn: Callable[[str], None] | None = None) -> None:
        """New limits for a running container (capsa update)."""
        self.apply(resources, warn=warn, with_devices=False)  # device rules are set once, at create

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """The resource usage in the shape of runc's `events --stats` data."""

    @abstractmethod
    def oom_watch(self) -> OomWatch | None:
        """Something to select() on that becomes readable when the cgroup hits its memory
        limit (its fired() then says whether it was an OOM); None without a memory controller."""

    # -- lookups ----------------------------------------------------------------------------------
    @abstractmethod
    def path_for(self, controller: str) -> str | None:
        """The directory where `controller` applies to the cgroup, if it does."""

    def cgroup2_dir(self) -> str | None:
        """The directory in the cgroup2 hierarchy (hybrid hosts' unified one), if any."""
        return self.paths.get("")

    # -- processes --------------------------------------------------------------------------------
    @abstractmethod
    def pids(self) -> list[int]:
        """Every process in the cgroup, its sub-cgroups' (children, exec --cgroup) included."""

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

    @abstractmethod
    def can_freeze(self) -> bool:
        """There is a freezer for it (v1: the freezer hierarchy; v2: cgroup.freeze)."""

    @abstractmethod
    def is_frozen(self) -> bool:
        """The cgroup itself was frozen (pause, or a freeze of it not yet undone)."""

    @abstractmethod
    def freeze(self) -> None:
        """Stop every process, and wait until they all are."""

    @abstractmethod
    def thaw(self) -> None:
        """Let them all go on."""


def recorded_ownership(record: dict[str, Any], paths: dict[str, str]) -> set[str]:
    """The hierarchies whose directory capsa made, from a state record. A record written before
    capsa kept this (no cgroupOwned) is taken as all of them: that capsa removed them all on delete."""
    owned = record.get("cgroupOwned", True)
    if owned is True:
        return set(paths)
    if not owned:
        return set()
    return set(owned) & set(paths)


def wait_until(check, what: str, timeout: float = FREEZE_TIMEOUT) -> None:
    """Poll `check` (1 ms apart) until it is true; a CgroupError after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise CgroupError(f"the cgroup did not reach {what} within {timeout:.0f} s")
        time.sleep(0.001)


def read(path: str) -> str:
    """A cgroup file's text, stripped."""
    return posixlite.read_bytes(path).decode().strip()


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
    try:
        posix.rmdir(directory)  # the common case: no sub-cgroup, no task left
        return
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError:
        pass  # EBUSY: sub-cgroups (or a task the kernel is still tearing down): the whole walk
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
