"""Copying into and out of a container's rootfs (`cp`) and exporting it (`export`).

Paths inside the container are resolved with openat2(RESOLVE_IN_ROOT): a symlink the container
made (/etc -> /) resolves inside its rootfs, never to the host's. The copy then works below the
opened directory through /proc/self/fd/N, and copies symlinks as symlinks.

What is copied is the rootfs (the image's layers and the container's changes): volumes and
tmpfs mounts of a running container are not in it (podman reaches them through the container's
mount namespace; capsactl does not yet).
"""

from __future__ import annotations

import os
import shutil
import stat

from capsa.manager.errors import ManagerError


def _open_in_root(rootfs: str, path: str, flags: int = os.O_PATH) -> int:
    from capsa import linux

    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return linux.openat2(root_fd, path.lstrip("/") or ".", flags | os.O_CLOEXEC, linux.RESOLVE_IN_ROOT)
    finally:
        os.close(root_fd)


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def copy_out(rootfs: str, path: str, destination: str) -> None:
    """Container path -> host path (cp semantics: into an existing directory, else as that name;
    "dir/." copies the directory's contents)."""
    contents_only = path.endswith("/.")
    try:
        fd = _open_in_root(rootfs, path)
    except FileNotFoundError:
        raise ManagerError(f"cp: {path}: no such file or directory in the container") from None
    except OSError as err:
        raise ManagerError(f"cp: {path}: {err.strerror}") from None
    try:
        source = _fd_path(fd)
        st = os.stat(source)
        name = os.path.basename(os.path.normpath(path)) or "rootfs"
        if stat.S_ISDIR(st.st_mode):
            if contents_only:
                target = destination
            elif os.path.isdir(destination):
                target = os.path.join(destination, name)
            else:
                target = destination
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True, copy_function=_copy_file)
            _chown_directories(source, target)
        else:
            target = os.path.join(destination, name) if os.path.isdir(destination) else destination
            # source is /proc/self/fd/N, a magic link to the file: copied through, not as a link
            shutil.copy2(source, target)
            os.chown(target, st.st_uid, st.st_gid)
    except OSError as err:
        raise ManagerError(f"cp: {err.filename or destination}: {err.strerror}") from None
    finally:
        os.close(fd)


def copy_in(source: str, rootfs: str, path: str) -> None:
    """Host path -> container path."""
    if not os.path.lexists(source):
        raise ManagerError(f"cp: {source}: no such file or directory")
    contents_only = source.endswith("/.")
    directory, name = os.path.split(os.path.normpath(path)) if path.rstrip("/") else ("/", "")
    try:
        target_fd = _open_in_root(rootfs, path)
    except FileNotFoundError:
        target_fd = None
    except OSError as err:
        raise ManagerError(f"cp: {path}: {err.strerror}") from None
    try:
        if target_fd is not None and stat.S_ISDIR(os.stat(_fd_path(target_fd)).st_mode):
            parent_fd, leaf = target_fd, ("" if contents_only else os.path.basename(os.path.normpath(source)))
            target_fd = None
        else:
            if target_fd is not None:
                os.close(target_fd)
                target_fd = None
            try:
                parent_fd = _open_in_root(rootfs, directory or "/")
            except OSError as err:
                raise ManagerError(f"cp: {directory}: {err.strerror} in the container") from None
            leaf = name
        try:
            target = os.path.join(_fd_path(parent_fd), leaf) if leaf else _fd_path(parent_fd)
            if os.path.isdir(source) and not os.path.islink(source):
                shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True, copy_function=_copy_file)
            else:
                if os.path.islink(target) or (leaf and "/" in leaf):
                    raise ManagerError(f"cp: {path}: refusing to write through a symlink in the container")
                _copy_file(source, target)
        except OSError as err:
            raise ManagerError(f"cp: {path}: {err.strerror}") from None
        finally:
            os.close(parent_fd)
    finally:
        if target_fd is not None:
            os.close(target_fd)


def _chown_directories(source: str, target: str) -> None:
    """copytree copies files' owners (_copy_file) but makes directories as the caller: give them
    their owners and modes (a volume's copy-up of /var/lib/app owned by the app's user)."""
    for directory, dirs, _ in os.walk(source):
        relative = os.path.relpath(directory, source)
        for name in [".", *dirs] if relative == "." else dirs:
            src = os.path.normpath(os.path.join(directory, name))
            dst = os.path.normpath(os.path.join(target, relative, name))
            try:
                # the top is /proc/self/fd/N: followed, it is the directory (lstat: the fd's link)
                st = os.stat(src) if src == os.path.normpath(source) else os.lstat(src)
                if stat.S_ISDIR(st.st_mode):
                    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
                    os.chmod(dst, stat.S_IMODE(st.st_mode))
            except OSError:
                pass


def _copy_file(source: str, target: str) -> str:
    if os.path.islink(source):
        if os.path.lexists(target):
            os.unlink(target)
        os.symlink(os.readlink(source), target)
        return target
    shutil.copy2(source, target, follow_symlinks=False)
    try:
        st = os.lstat(source)
        os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
    except OSError:
        pass
    return target


def export_tar(rootfs: str, fileobj) -> None:
    """The rootfs as a tar stream (podman export): members relative to /, symlinks kept."""
    import tarfile

    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(rootfs)):
            tar.add(os.path.join(rootfs, entry), arcname=entry)
