"""Network namespaces kept by a file, as `ip netns add` and podman (/run/netns/netns-...) keep them.

A namespace lives as long as something refers to it: a process in it, an open fd, or a bind mount
of its nsfs file. The manager makes a container's namespace before the container exists (netavark
sets it up first; the OCI spec then names the file as the container's network namespace path), so
it keeps it with a bind mount on an empty file under <run root>/netns, removed with the container.
"""

from __future__ import annotations

import os

from capsa.manager.errors import ManagerError


def netns_dir(paths) -> str:
    return os.path.join(paths.run_root, "netns")


def netns_path(paths, container_id: str) -> str:
    """One file per container, named after it, so a leftover of a crash is found and replaced."""
    return os.path.join(netns_dir(paths), f"netns-{container_id}")


def create_netns(paths, container_id: str) -> str:
    """A new network namespace (loopback up, nothing else), bind-mounted on its file; the path."""
    path = netns_path(paths, container_id)
    os.makedirs(netns_dir(paths), mode=0o755, exist_ok=True)
    remove_netns(path)  # a leftover of a crash (the id is the container's: nothing else uses it)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
    try:
        _unshare_and_bind(path)
    except BaseException:
        remove_netns(path)
        raise
    return path


def _unshare_and_bind(path: str) -> None:
    """A child process enters a new network namespace and bind-mounts its own nsfs file on `path`:
    the caller's namespace is never changed (a thread of it may be anywhere else)."""
    from capsa import linux

    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: only kernel calls, then _exit (no atexit, no buffers flushed twice)
        status = 1
        try:
            os.close(read_end)
            linux.unshare(linux.CLONE_NEWNET)
            linux.loopback_up()
            linux.mount("/proc/self/ns/net", path, None, linux.MS_BIND)
            status = 0
        except OSError as err:
            os.write(write_end, f"{err.strerror or err} ({getattr(err, 'filename', '') or ''})".encode())
        except BaseException:
            pass
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    _, wait_status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(wait_status) != 0:
        raise ManagerError(f"cannot create the network namespace {path}: {message or 'the child failed'}")


def remove_netns(path: str) -> None:
    """Unmount and remove a namespace file; nothing to do if it is gone already. The namespace itself
    ends with its last user (a container still running in it keeps it)."""
    from capsa import linux

    try:
        linux.umount2(path, linux.MNT_DETACH)
    except OSError:
        pass  # not mounted (a half-made file) or not there
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def is_netns(path: str) -> bool:
    """Whether `path` is a mounted namespace file (nsfs: another device than its directory's)."""
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path)).st_dev
    except OSError:
        return False
