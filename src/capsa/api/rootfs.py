"""Root filesystems of capsa's Python API (capsa.api): a directory, an OCI bundle, or a view.

A view is a root made of host directories bind-mounted read-only on an empty skeleton; the only
one so far is HostTools, the host's own programs (as bubblewrap users bind /usr, /lib and /etc),
so that the host's python3 runs inside a sandbox.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field

from capsa.api.errors import RootfsError

# Where the API keeps what it makes (skeletons, container state): private to root.
API_DIR = "/run/capsa-api"

# Host directories HostTools binds read-only; one that is a symlink on the host (merged /usr:
# /bin -> usr/bin) is the same symlink in the skeleton.
HOST_TOOL_DIRS = ("usr", "lib", "lib32", "lib64", "libx32", "bin", "sbin")
# The few files of /etc programs need: the dynamic linker's cache, names of users and groups,
# name service switch, the time zone, and Debian's alternatives (python3 may be one).
HOST_ETC_FILES = ("ld.so.cache", "ld.so.conf", "passwd", "group", "nsswitch.conf", "localtime", "hosts")
HOST_ETC_DIRS = ("alternatives", "ld.so.conf.d", "ssl")
SKELETON_DIRS = ("proc", "sys", "dev", "tmp", "work", "etc", "root", "home", "run", "var", "var/tmp")


@dataclass(frozen=True)
class Rootfs:
    """What a sandbox's spec needs of its root: the directory, and mounts to add over it."""

    path: str
    mounts: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class HostTools:
    """The host's programs, read-only: /usr, /lib*, /bin, /sbin and the essentials of /etc.

    extra: more host paths to bind read-only at the same place (a virtualenv, a compiler).
    """

    extra: tuple[str, ...] = ()

    def resolve(self) -> Rootfs:
        skeleton = _skeleton()
        mounts = []
        for name in HOST_TOOL_DIRS:
            host = "/" + name
            if os.path.isdir(host) and not os.path.islink(host):
                mounts.append(_ro_bind(host, host))
        for name in HOST_ETC_FILES + HOST_ETC_DIRS:
            host = "/etc/" + name
            if os.path.exists(host):
                mounts.append(_ro_bind(os.path.realpath(host), host))
        for path in self.extra:
            if not os.path.isabs(path) or not os.path.exists(path):
                raise RootfsError(f"HostTools extra path {path!r}: must be an absolute path that exists on the host")
            mounts.append(_ro_bind(path, path))
        return Rootfs(skeleton, mounts)


def _ro_bind(source: str, destination: str) -> dict:
    return {"destination": destination, "type": "bind", "source": source,
            "options": ["rbind", "ro", "nosuid", "nodev"]}


_skeleton_lock = threading.Lock()


def _skeleton() -> str:
    """An empty root with a mount point for each host path HostTools may bind; made once (a
    program of its own may make it at the same time: each stages its copy, the first rename wins)."""
    path = os.path.join(API_DIR, "hosttools-root")
    with _skeleton_lock:
        if not os.path.exists(os.path.join(path, ".complete")):
            _make_skeleton(path)
    return path


def _make_skeleton(path: str) -> None:
    os.makedirs(API_DIR, mode=0o755, exist_ok=True)
    staging = f"{path}.{os.getpid()}"
    if os.path.exists(staging):  # a crashed attempt of an earlier program with our pid
        import shutil

        shutil.rmtree(staging)
    os.makedirs(staging, mode=0o755)
    for name in SKELETON_DIRS:
        os.makedirs(os.path.join(staging, name), exist_ok=True)
    os.chmod(os.path.join(staging, "tmp"), 0o1777)
    for name in HOST_TOOL_DIRS:
        host = "/" + name
        if os.path.islink(host):
            os.symlink(os.readlink(host), os.path.join(staging, name))
        elif os.path.isdir(host):
            os.makedirs(os.path.join(staging, name), exist_ok=True)
    for name in HOST_ETC_FILES:
        if os.path.exists("/etc/" + name):
            open(os.path.join(staging, "etc", name), "w").close()
    for name in HOST_ETC_DIRS:
        if os.path.exists("/etc/" + name):
            os.makedirs(os.path.join(staging, "etc", name), exist_ok=True)
    open(os.path.join(staging, ".complete"), "w").close()
    try:
        os.rename(staging, path)
    except OSError:  # another program made it meanwhile
        import shutil

        shutil.rmtree(staging, ignore_errors=True)


def resolve(rootfs) -> Rootfs:
    """rootfs= of run/Sandbox: a view (anything with resolve()), a root directory, or an OCI
    bundle (a directory with config.json, whose root.path names the root)."""
    if hasattr(rootfs, "resolve") and not isinstance(rootfs, (str, os.PathLike)):
        return rootfs.resolve()
    if not isinstance(rootfs, (str, os.PathLike)):
        raise RootfsError(f"expected a path or capsa.HostTools(), not {type(rootfs).__name__}")
    path = os.path.abspath(os.fspath(rootfs))
    if not os.path.isdir(path):
        raise RootfsError(f"rootfs {path}: not a directory")
    config = os.path.join(path, "config.json")
    if os.path.isfile(config):
        try:
            with open(config) as f:
                root = (json.load(f).get("root") or {}).get("path") or "rootfs"
        except (OSError, ValueError) as err:
            raise RootfsError(f"rootfs {path}: cannot read its config.json: {err}") from None
        path = os.path.join(path, root) if not os.path.isabs(root) else root
        if not os.path.isdir(path):
            raise RootfsError(f"rootfs {path} (root.path of the bundle's config.json): not a directory")
    _check_reachable(path)
    _ensure_mount_point(path, "work")
    return Rootfs(path)


def _check_reachable(path: str) -> None:
    """The sandbox's root (an unprivileged host uid) mounts its rootfs from inside its user
    namespace: every directory down to it must be searchable by others."""
    current = path
    while True:
        if not os.stat(current).st_mode & 0o001:
            raise RootfsError(f"{path}: the sandbox's root (an unprivileged host uid) cannot reach it: {current} is "
                              "not searchable by others (chmod o+x it, or keep rootfs trees out of private directories)")
        if current == "/":
            return
        current = os.path.dirname(current)


def _ensure_mount_point(root: str, name: str) -> None:
    """The scratch area's mount point: made from the host, as the sandbox's root may not write there."""
    path = os.path.join(root, name)
    if os.path.isdir(path) and not os.path.islink(path):
        return
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        if not os.path.isdir(path) or os.path.islink(path):
            raise RootfsError(f"{root}/{name} is not a directory: the scratch area is mounted there") from None
    except OSError as err:
        raise RootfsError(f"{root} has no /{name} directory for the scratch area, and it cannot be made: "
                          f"{err.strerror}") from None
