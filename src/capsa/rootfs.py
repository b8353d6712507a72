"""Building the container's root filesystem inside its new mount namespace.

Runs in the container's init process, before the user's program. Every path inside the rootfs is
resolved with openat2(RESOLVE_IN_ROOT), so a symlink in the image can never send a mount, a device
node or a masked path outside the rootfs; the kernel object found is then used through
/proc/self/fd/N, so nothing can swap the path between the check and the mount.
"""

from __future__ import annotations

import posix

from capsa import linux, posixlite
from capsa.errors import EACCES, EINVAL, ELOOP, ContainerStartError
from capsa.mountopts import parse_mount_options

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_PATH_FLAGS = posix.O_PATH | posix.O_CLOEXEC
_IN_ROOT = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS

# statvfs f_flag bits that differ from the MS_* flag with the same meaning.
_ST_RELATIME = 4096
_LOCKED_ST_FLAGS = linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC | linux.MS_NOATIME | linux.MS_NODIRATIME

DEFAULT_DEVICES = (
    # path, major, minor, mode: the devices every container gets (runtime-spec "Default Devices").
    ("/dev/null", 1, 3, 0o666),
    ("/dev/zero", 1, 5, 0o666),
    ("/dev/full", 1, 7, 0o666),
    ("/dev/random", 1, 8, 0o666),
    ("/dev/urandom", 1, 9, 0o666),
    ("/dev/tty", 5, 0, 0o666),
)
DEFAULT_DEV_LINKS = (
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
)


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


class Rootfs:
    """The container's root directory, held open so that every lookup is relative to it."""

    def __init__(self, path: str):
        self.path = path
        self.fd = posix.open(path, posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)

    # -- safe lookups ------------------------------------------------------------------------
    def open(self, path: str, flags: int = _PATH_FLAGS) -> int:
        """Open `path` (absolute inside the container) without leaving the rootfs."""
        return linux.openat2(self.fd, path, flags, _IN_ROOT)

    def mkdir_all(self, path: str, mode: int = 0o755) -> int:
        """Create every missing directory of `path` inside the rootfs; return an O_PATH fd of it.

        A symlink on the way is followed as the kernel would inside the rootfs (absolute targets
        start again at the rootfs, ".." stops at it), and its missing target is created there.
        """
        # Most paths exist, or lack only their last component (mount points under a fresh
        # tmpfs: /sys/fs/cgroup/<controller>, /dev/pts, /dev/mqueue): one or a few syscalls
        # instead of four per component. Both shortcuts resolve inside the rootfs as the walk does.
        try:
            return self.open(path, _PATH_FLAGS | posix.O_DIRECTORY)
        except OSError:
            pass  # missing, or anything else (a magic link, a file): the walk below decides
        made = self._mkdir_last(path, mode)
        if made is not None:
            return made
        return self.open(self._walk(path, mode, last_is_dir=True), _PATH_FLAGS | posix.O_DIRECTORY)

    def _walk(self, path: str, mode: int, last_is_dir: bool) -> str:
        """Follow `path` component by component as the kernel would with the rootfs as the root,
        making each missing directory (the last one too if `last_is_dir`); return the path it
        resolves to. A symlink is read and its target walked instead (absolute targets start
        again at the rootfs, ".." stops at it), so a dangling one leads to where its target is
        made, inside the rootfs."""
        remaining = [p for p in path.split("/") if p and p != "."]
        done: list[str] = []
        links = 0
        while remaining:
            part = remaining.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            parent = self.open("/" + "/".join(done), _PATH_FLAGS | posix.O_DIRECTORY)
            try:
                target = _readlink_at(parent, part)
                if target is not None:
                    links += 1
                    if links > 40:
                        raise OSError(ELOOP, "too many levels of symbolic links", path)
                    if target.startswith("/"):
                        done = []
                    remaining = [p for p in target.split("/") if p and p != "."] + remaining
                    continue
                if remaining or last_is_dir:
                    try:
                        posix.mkdir(part, mode, dir_fd=parent)
                    except FileExistsError:
                        pass
            finally:
                posix.close(parent)
            done.append(part)
        return "/" + "/".join(done)

    def _mkdir_last(self, path: str, mode: int) -> int | None:
        """mkdir_all where only the last component is missing and is no symlink; None otherwise
        (the full walk then decides, and raises what it finds)."""
        parts = [p for p in path.split("/") if p and p != "."]
        if not parts or parts[-1] == "..":
            return None
        try:
            parent = self.open("/" + "/".join(parts[:-1]), _PATH_FLAGS | posix.O_DIRECTORY)
        except OSError:
            return None
        try:
            if _readlink_at(parent, parts[-1]) is not None:
                return None
            try:
                posix.mkdir(parts[-1], mode, dir_fd=parent)
            except FileExistsError:
                pass
        finally:
            posix.close(parent)
        return self.open(path, _PATH_FLAGS | posix.O_DIRECTORY)

    def make_file(self, path: str, mode: int = 0o644, follow_dangling: bool = False) -> int:
        """Create `path` as an empty file if it is missing; return an O_PATH fd of what is there.

        A dangling symlink as the last component is an error (ELOOP), unless `follow_dangling`
        (mount destinations): the file is then made where it points, inside the rootfs. Never
        for /dev/console and device nodes: those are made only as named (CVE-2025-52565)."""
        try:
            return self.open(path)
        except FileNotFoundError:
            pass
        directory, name = posixlite.split(path.rstrip("/"))
        try:
            self._create_file(self.mkdir_all(directory or "/"), name, mode)
        except OSError as err:
            if err.errno != ELOOP or not follow_dangling:
                raise
            # `name` is a dangling symlink (O_NOFOLLOW refused to create through it): as runc 1.1
            # and crun do for a mount destination, the file is made where it points, inside the rootfs.
            directory, name = posixlite.split(self._walk(path, 0o755, last_is_dir=False))
            self._create_file(self.open(directory or "/", _PATH_FLAGS | posix.O_DIRECTORY), name, mode)
        return self.open(path)

    @staticmethod
    def _create_file(parent: int, name: str, mode: int) -> None:
        """Create the empty file `name` in the directory `parent` unless it exists; close `parent`."""
        try:
            fd = posix.open(name, posix.O_CREAT | posix.O_WRONLY | posix.O_NOFOLLOW | posix.O_CLOEXEC, mode, dir_fd=parent)
            posix.close(fd)
        except FileExistsError:
            pass
        finally:
            posix.close(parent)

    def mount_point(self, path: str, source_is_dir: bool) -> int:
        """The fd of the mount point for `path`, created as a directory or a file to match the source."""
        try:
            return self.open(path)
        except FileNotFoundError:
            return self.mkdir_all(path) if source_is_dir else self.make_file(path, follow_dangling=True)

    def close(self) -> None:
        posix.close(self.fd)


def _readlink_at(parent: int, name: str) -> str | None:
    try:
        return posix.readlink(name, dir_fd=parent)
    except (FileNotFoundError, OSError) as err:
        if isinstance(err, FileNotFoundError) or err.errno == EINVAL:
            return None
        raise


# -- root preparation and pivot ---------------------------------------------------------------
def prepare_root(rootfs: str, propagation: int) -> None:
    """Make the new mount namespace's mounts stop propagating to the host, and rootfs a mount point."""
    propagation = propagation or (linux.MS_SLAVE | linux.MS_REC)
    if propagation & linux.MS_UNBINDABLE:
        # An unbindable mount cannot be the source of the rootfs bind below (EINVAL, where runc
        # 1.1 fails): private for now; init makes the container's / unbindable after pivot_root.
        propagation = (propagation & ~linux.MS_UNBINDABLE) | linux.MS_PRIVATE
    linux.mount(None, "/", None, propagation)
    if not (propagation & linux.MS_REC and propagation & (linux.MS_SLAVE | linux.MS_PRIVATE)):
        # Recursively slave or private (the default), no mount is shared any more: nothing to look for.
        _make_parent_mount_private(rootfs)
    linux.mount(rootfs, rootfs, "bind", linux.MS_BIND | linux.MS_REC)


def _make_parent_mount_private(path: str) -> None:
    # pivot_root refuses a new root whose parent mount is shared.
    mount_point = _mount_point_of(path)
    for line in _mountinfo():
        fields = line.split(" ")
        if fields[4] == mount_point and "shared:" in line.split(" - ")[0]:
            linux.mount(None, mount_point, None, linux.MS_PRIVATE)
            return


def _mountinfo() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return f.read().splitlines()


def _mount_point_of(path: str) -> str:
    points = {line.split(" ")[4] for line in _mountinfo()}
    while path not in points and path != "/":
        path = posixlite.dirname(path)
    return path


def pivot_into(rootfs: str) -> None:
    """pivot_root into rootfs and detach the old root (the pivot_root(".", ".") technique)."""
    old_root = posix.open("/", posix.O_DIRECTORY | posix.O_RDONLY | posix.O_CLOEXEC)
    new_root = posix.open(rootfs, posix.O_DIRECTORY | posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        posix.fchdir(new_root)
        linux.pivot_root(".", ".")
        posix.fchdir(old_root)
        # The old root must not propagate the unmount back to the host.
        linux.mount(None, ".", None, linux.MS_SLAVE | linux.MS_REC)
        linux.umount2(".", linux.MNT_DETACH)
    finally:
        posix.close(old_root)
        posix.close(new_root)
    posix.chdir("/")


def move_into(rootfs: str) -> None:
    """--no-pivot: move the rootfs mount over / and chroot (for ramfs hosts where pivot_root fails)."""
    posix.chdir(rootfs)
    linux.mount(rootfs, "/", None, linux.MS_MOVE)
    posix.chroot(".")
    posix.chdir("/")


def remount_root_readonly() -> None:
    flags = _mount_flags_of("/")
    linux.mount(None, "/", None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | flags)


def _mount_flags_of(path: str | int) -> int:
    st_flags = posix.statvfs(path).f_flag
    flags = st_flags & _LOCKED_ST_FLAGS
    if st_flags & _ST_RELATIME:
        flags |= linux.MS_RELATIME
    return flags


# -- the mounts of config.json -----------------------------------------------------------------
def mount_all(
    root: Rootfs, mounts: list[dict[str, Any]], in_userns: bool, cgroups: dict[str, str], mount_label: str | None = None,
    trees: dict[int, int] | None = None, detached_source: Callable[[int], tuple[int, str]] | None = None,
) -> None:
    """The mounts of config.json, in order; `cgroups` maps each name under /sys/fs/cgroup to the
    container's cgroup directory in that hierarchy; `mount_label` is linux.mountLabel (SELinux).

    `trees` maps the index of each idmapped mount to its detached tree (capsa.idmapped), attached
    here in the place of a bind and closed. `detached_source(index)` (in a user namespace) asks
    the runtime for mounts[index]'s source as a detached mount (see open_detached_source) when
    the init, as mapped root, cannot reach it: (fd, "") or (-1, why not)."""
    trees = trees or {}
    for index, entry in enumerate(mounts):
        ask = (lambda index=index: detached_source(index)) if detached_source is not None else None
        try:
            _mount_one(root, entry, in_userns, cgroups, mount_label, trees.pop(index, None), ask)
        except OSError as err:
            raise ContainerStartError(
                f"mounts[{index}]: cannot mount {entry.get('source', entry.get('type', ''))} on "
                f"{entry['destination']}: {err.strerror or err}"
            ) from None


def _mount_one(root: Rootfs, entry: dict[str, Any], in_userns: bool, cgroups: dict[str, str], mount_label: str | None,
               tree: int | None, detached_source: Callable[[], tuple[int, str]] | None) -> None:
    options = parse_mount_options(entry.get("options") or [])
    fstype = entry.get("type") or ""
    source = entry.get("source") or fstype or "none"
    destination = entry["destination"]
    if fstype in ("cgroup", "cgroup2"):
        _mount_cgroup(root, destination, options, cgroups)
        return
    if tree is not None or options.is_bind or fstype == "bind":
        _mount_bind(root, source, destination, options, in_userns, tree, detached_source)
    else:
        _mount_new(root, source, destination, fstype, options, mount_label)
    _apply_after_mount(root, destination, options)


def _mount_new(root: Rootfs, source: str, destination: str, fstype: str, options: Any, mount_label: str | None) -> None:
    """A new filesystem (tmpfs, proc, devpts, ...) on the destination, made a directory if missing."""
    data = options.data
    try:
        target = root.open(destination)
        if fstype == "tmpfs":
            data = _with_mode_of(target, data)
    except FileNotFoundError:
        target = root.mkdir_all(destination)
    try:
        if mount_label:
            from capsa.lsm import mount_data

            data = mount_data(data, fstype, mount_label)
        linux.mount(source, fd_path(target), fstype, options.flags & ~linux.MS_REMOUNT, data or None)
    finally:
        posix.close(target)


def _with_mode_of(directory: int, data: str) -> str:
    """tmpfs data keeping the mode of the directory it covers, as runc and crun do (a tmpfs is
    1777 by itself); a mode= in the options still wins, coming after."""
    mode = f"mode={posix.fstat(directory).st_mode & 0o7777:04o}"
    return f"{mode},{data}" if data else mode


def _mount_bind(root: Rootfs, source: str, destination: str, options: Any, in_userns: bool, tree: int | None,
                detached_source: Callable[[], tuple[int, str]] | None) -> None:
    """Bind `source` on the destination (made a directory or a file to match), then apply the
    options' flags with a remount, keeping those the kernel locks in a user namespace.
    `tree`: an idmapped mount's detached tree (capsa.idmapped), attached instead and closed."""
    source_fd, detached = (tree, True) if tree is not None else _open_bind_source(source, detached_source)
    try:
        target = root.mount_point(destination, linux.file_type(posix.fstat(source_fd).st_mode) == linux.S_IFDIR)
        try:
            if detached:
                linux.move_mount(source_fd, "", target, "", linux.MOVE_MOUNT_F_EMPTY_PATH | linux.MOVE_MOUNT_T_EMPTY_PATH)
            else:
                bind_flags = linux.MS_BIND | (linux.MS_REC if options.recursive_bind else 0)
                linux.mount(fd_path(source_fd), fd_path(target), None, bind_flags)
        finally:
            posix.close(target)
        locked = _mount_flags_of(source_fd) if in_userns else 0
    finally:
        posix.close(source_fd)
    extra = options.flags & ~(linux.MS_BIND | linux.MS_REC | linux.MS_REMOUNT)
    if extra:
        # A bind mount takes flags only from a remount of the new mount, found again by its path
        # (the old fd still names the mount point underneath).
        mounted = root.open(destination)
        try:
            linux.mount(None, fd_path(mounted), None, linux.MS_BIND | linux.MS_REMOUNT | extra | locked)
        finally:
            posix.close(mounted)


def _open_bind_source(source: str, detached_source: Callable[[], tuple[int, str]] | None) -> tuple[int, bool]:
    """An fd of the bind source, and whether it is a detached mount (to attach with move_mount).

    In a user namespace the init is the mapped root: a source under a directory only the host's
    root may enter (0700) is out of its reach, while runc and crun still mount it. Then the
    runtime, still the host's root, opens it as a detached mount (open_detached_source)."""
    try:
        return posix.open(source, posix.O_PATH | posix.O_CLOEXEC), False
    except PermissionError:
        if detached_source is None:
            raise
        fd, why_not = detached_source()
        if fd < 0:
            raise PermissionError(EACCES, f"{posix.strerror(EACCES)} (the runtime could not open it either: {why_not})",
                                  source) from None
        return fd, True


def open_detached_source(entry: dict[str, Any]) -> int:
    """The runtime's side of a bind whose source the init cannot reach: a detached copy of the
    source mount (open_tree OPEN_TREE_CLONE; the whole tree below it for rbind), opened by the
    host's root in the host's mount namespace, for the init to move_mount into the rootfs.

    Made a slave (recursively): a clone of a shared mount would otherwise be a peer of the
    host's, and mounts made under it in the container would propagate to the host; the init's
    own binds are slaves as well (the container's mounts are made slaves before them).
    The kernel does not lock the host mount's flags on such a copy (it does on the init's own
    binds, made from the copied namespace): root in the container could remount it without
    nosuid, nodev or ro, as under crun, which attaches every bind this way in a user namespace."""
    options = parse_mount_options(entry.get("options") or [])
    if not (options.is_bind or entry.get("type") == "bind"):
        raise OSError(EINVAL, "not a bind mount")
    recursive = linux.AT_RECURSIVE if options.recursive_bind else 0
    fd = linux.open_tree(linux.AT_FDCWD, entry["source"], linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | recursive)
    try:
        linux.mount_setattr(fd, "", linux.AT_EMPTY_PATH | recursive, 0, 0, linux.MS_SLAVE)
    except OSError:
        posix.close(fd)
        raise
    return fd


def _apply_after_mount(root: Rootfs, destination: str, options: Any) -> None:
    if not (options.propagation or options.recursive_set or options.recursive_clear):
        return
    mounted = root.open(destination)
    try:
        for flag in options.propagation:
            linux.mount(None, fd_path(mounted), None, flag)
        if options.recursive_set or options.recursive_clear:
            linux.mount_setattr(
                mounted, "", linux.AT_RECURSIVE | linux.AT_EMPTY_PATH, options.recursive_set, options.recursive_clear
            )
    finally:
        posix.close(mounted)


def _mount_cgroup(root: Rootfs, destination: str, options: Any, hierarchies: dict[str, str]) -> None:
    """Give the container its own cgroups at `destination`, as runc lays them out.

    Each host hierarchy is bind-mounted from the container's own cgroup directory, so the
    container sees its cgroup as the root and nothing above it. Binds, not fresh cgroup mounts:
    mounting a v1 hierarchy again costs ~15 ms here, a bind ~0.05 ms. A pure v2 host gets one
    bind at `destination`; a v1 or hybrid host gets a tmpfs holding one bind per hierarchy.
    """
    flags = options.flags & ~(linux.MS_BIND | linux.MS_REC | linux.MS_REMOUNT)
    if list(hierarchies) == [""]:
        _bind_cgroup(root, destination, hierarchies[""], flags)
        return
    target = root.mkdir_all(destination)
    try:
        linux.mount("tmpfs", fd_path(target), "tmpfs", flags & ~linux.MS_RDONLY, "mode=755")
    finally:
        posix.close(target)
    for name, source in hierarchies.items():
        _bind_cgroup(root, f"{destination}/{name}", source, flags)
    if flags & linux.MS_RDONLY:
        top = root.open(destination)
        try:
            linux.mount(None, fd_path(top), None, linux.MS_REMOUNT | linux.MS_BIND | flags)
        finally:
            posix.close(top)


def _bind_cgroup(root: Rootfs, destination: str, source: str, flags: int) -> None:
    target = root.mkdir_all(destination)
    try:
        linux.mount(source, fd_path(target), None, linux.MS_BIND | linux.MS_REC)
    finally:
        posix.close(target)
    if flags:
        mounted = root.open(destination)
        try:
            linux.mount(None, fd_path(mounted), None, linux.MS_BIND | linux.MS_REMOUNT | flags)
        finally:
            posix.close(mounted)


# -- /dev -----------------------------------------------------------------------------------------
def dev_is_bind_mounted(mounts: list[dict[str, Any]]) -> bool:
    for entry in mounts:
        if entry["destination"].rstrip("/") == "/dev":
            return entry.get("type") == "bind" or "bind" in (entry.get("options") or []) or "rbind" in (
                entry.get("options") or []
            )
    return False


def create_devices(root: Rootfs, devices: list[dict[str, Any]], in_userns: bool) -> None:
    """The default devices, then linux.devices: mknod, or a bind of the host node in a user namespace."""
    wanted = {path: {"path": path, "type": "c", "major": major, "minor": minor, "fileMode": mode}
              for path, major, minor, mode in DEFAULT_DEVICES}
    for device in devices:
        wanted[device["path"]] = device
    for device in wanted.values():
        try:
            _create_device(root, device, in_userns)
        except OSError as err:
            raise ContainerStartError(f"cannot create device {device['path']}: {err.strerror or err}") from None


_DEVICE_TYPES = {"c": linux.S_IFCHR, "u": linux.S_IFCHR, "b": linux.S_IFBLK, "p": linux.S_IFIFO}


def _create_device(root: Rootfs, device: dict[str, Any], in_userns: bool) -> None:
    path = device["path"]
    if in_userns:
        _check_host_device(device)
        target = root.make_file(path, 0o000)
        try:
            linux.mount(path, fd_path(target), None, linux.MS_BIND)
        finally:
            posix.close(target)
        return
    directory, name = posixlite.split(path)
    parent = root.mkdir_all(directory)
    try:
        mode = device.get("fileMode", 0o666) & 0o7777
        kind = _DEVICE_TYPES[device["type"]]
        dev = posix.makedev(device.get("major", 0), device.get("minor", 0)) if kind != linux.S_IFIFO else 0
        try:
            posix.mknod(name, mode | kind, dev, dir_fd=parent)
        except FileExistsError:
            existing = posix.stat(name, dir_fd=parent, follow_symlinks=False)
            if linux.file_type(existing.st_mode) == kind and existing.st_rdev == dev:
                return
            posix.unlink(name, dir_fd=parent)
            posix.mknod(name, mode | kind, dev, dir_fd=parent)
        posix.chmod(name, mode, dir_fd=parent, follow_symlinks=False)
        posix.chown(name, device.get("uid", 0), device.get("gid", 0), dir_fd=parent, follow_symlinks=False)
    finally:
        posix.close(parent)


def _check_host_device(device: dict[str, Any]) -> None:
    """In a user namespace mknod is refused (it needs CAP_MKNOD in the initial namespace), so the
    host's node at the same path is bind-mounted, as runc does: it must exist and be that device."""
    path = device["path"]
    why = "in a user namespace (rootless) device nodes cannot be created, so the host's node is bind-mounted"
    try:
        info = posix.stat(path)
    except OSError as err:
        raise ContainerStartError(f"linux.devices {path}: {why}, and the host has none: {err.strerror}") from None
    kind = _DEVICE_TYPES[device["type"]]
    if linux.file_type(info.st_mode) != kind:
        raise ContainerStartError(f"linux.devices {path}: {why}, and the host's {path} is not a device of type {device['type']}")
    if kind != linux.S_IFIFO and "major" in device and info.st_rdev != posix.makedev(device.get("major", 0), device.get("minor", 0)):
        raise ContainerStartError(
            f"linux.devices {path}: {why}, and the host's {path} is {posix.major(info.st_rdev)}:{posix.minor(info.st_rdev)}, "
            f"not {device.get('major')}:{device.get('minor')}"
        )


def create_dev_links(root: Rootfs) -> None:
    dev = root.mkdir_all("/dev")
    try:
        for path, target in DEFAULT_DEV_LINKS:
            try:
                posix.symlink(target, posixlite.basename(path), dir_fd=dev)
            except FileExistsError:
                pass
        # /dev/ptmx must be the container's devpts instance, not a host node.
        try:
            posix.unlink("ptmx", dir_fd=dev)
        except FileNotFoundError:
            pass
        posix.symlink("pts/ptmx", "ptmx", dir_fd=dev)
    finally:
        posix.close(dev)


def bind_console(root: Rootfs, pty_slave: int) -> None:
    """Bind the pty slave over /dev/console (created as a plain file inside the rootfs)."""
    target = root.make_file("/dev/console", 0o000)
    try:
        if linux.file_type(posix.fstat(target).st_mode) not in (linux.S_IFREG, linux.S_IFCHR):
            raise ContainerStartError("/dev/console in the rootfs is neither a file nor a device")
        linux.mount(fd_path(pty_slave), fd_path(target), None, linux.MS_BIND)
    finally:
        posix.close(target)


# -- masked and read-only paths -------------------------------------------------------------------
def mask_paths(root: Rootfs, paths: list[str], dev_null: int, proc: int | None = None) -> None:
    """Hide each path: /dev/null over a file, an empty read-only tmpfs over a directory."""
    for path in paths:
        try:
            target = _open_target(root, proc, path)
        except FileNotFoundError:
            continue
        try:
            if linux.file_type(posix.fstat(target).st_mode) == linux.S_IFDIR:
                linux.mount("tmpfs", fd_path(target), "tmpfs", linux.MS_RDONLY, "size=0k,mode=755")
            else:
                linux.mount(fd_path(dev_null), fd_path(target), None, linux.MS_BIND)
        except OSError as err:
            raise ContainerStartError(f"cannot mask {path}: {err.strerror or err}") from None
        finally:
            posix.close(target)


def readonly_paths(root: Rootfs, paths: list[str], proc: int | None = None) -> None:
    for path in paths:
        try:
            target = _open_target(root, proc, path)
        except FileNotFoundError:
            continue
        try:
            linux.mount(fd_path(target), fd_path(target), None, linux.MS_BIND | linux.MS_REC)
        except OSError as err:
            posix.close(target)
            raise ContainerStartError(f"cannot make {path} read-only: {err.strerror or err}") from None
        posix.close(target)
        mounted = _open_target(root, proc, path)
        try:
            flags = _mount_flags_of(fd_path(mounted))
            linux.mount(None, fd_path(mounted), None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | flags)
        except OSError as err:
            raise ContainerStartError(f"cannot make {path} read-only: {err.strerror or err}") from None
        finally:
            posix.close(mounted)


def open_procfs_root(root: Rootfs, field: str, path: str = "/proc") -> int:
    """An fd of the root directory of the procfs at `path` in the container (not merely a
    directory on some procfs): its magic, and the inode number of procfs's root (1)."""
    fd = root.open(path, posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
    if linux.fstatfs_type(fd) != linux.PROC_SUPER_MAGIC:
        posix.close(fd)
        raise ContainerStartError(f"{field}: {path} in the container is not a procfs")
    if posix.fstat(fd).st_ino != _PROC_ROOT_INO:
        posix.close(fd)
        raise ContainerStartError(f"{field}: {path} in the container is not the root of a procfs")
    return fd


def _open_target(root: Rootfs, proc: int | None, path: str) -> int:
    """A masked or read-only path: under /proc through the checked procfs root `proc` (no
    symlink, never above it), elsewhere inside the rootfs."""
    if proc is not None and (path.rstrip("/") == "/proc" or path.startswith("/proc/")):
        relative = path[len("/proc"):].strip("/") or "."
        return linux.openat2(proc, relative, _PATH_FLAGS, linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS)
    return root.open(path)


_PROC_ROOT_INO = 1


