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
    """Host path -> container path (cp semantics: into an existing directory, else as that name;
    "dir/." copies the directory's contents). The copy goes through a tar stream unpacked member
    by member inside the rootfs (tar_in): a running container that swaps a directory for a
    symlink while we copy still cannot lead a write outside its rootfs."""
    if not os.path.lexists(source):
        raise ManagerError(f"cp: {source}: no such file or directory")
    contents_only = source.endswith("/.")
    try:
        target_fd = _open_in_root(rootfs, path)
    except FileNotFoundError:
        target_fd = None
    except OSError as err:
        raise ManagerError(f"cp: {path}: {err.strerror}") from None
    if target_fd is not None:
        is_directory = stat.S_ISDIR(os.stat(_fd_path(target_fd)).st_mode)
        os.close(target_fd)
    else:
        is_directory = False
    if is_directory:
        directory, name = path, ("." if contents_only else os.path.basename(os.path.normpath(source)))
    else:
        directory, name = os.path.split(os.path.normpath(path))
        if not name:
            raise ManagerError(f"cp: {path}: not a directory in the container")
    _stream_into(source, name, rootfs, directory or "/")


def _stream_into(source: str, name: str, rootfs: str, directory: str) -> None:
    """`source` as the tar member `name` (a directory with its tree), written by a thread into a
    pipe that tar_in reads."""
    import tarfile
    import threading

    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(write_end, "wb") as out, tarfile.open(fileobj=out, mode="w|",
                                                                 format=tarfile.PAX_FORMAT) as tar:
                tar.add(source, arcname=name)
        except BaseException as err:  # noqa: BLE001 - reported by the caller
            failure.append(err)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        with os.fdopen(read_end, "rb") as stream:
            tar_in(stream, rootfs, directory)
    finally:
        producer.join()
    if failure and not isinstance(failure[0], BrokenPipeError):
        error = failure[0]
        raise ManagerError(f"cp: {source}: {getattr(error, 'strerror', None) or error}") from None


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


# --- tar streams: cp CONTAINER:PATH - and cp - CONTAINER:DIR ------------------------------------------

def tar_out(rootfs: str, path: str, fileobj) -> None:
    """The container's `path` as a tar stream (podman's `cp CONTAINER:PATH -`): its members are
    named from the path's last component, as tar -C parent -c name makes them."""
    import tarfile

    try:
        fd = _open_in_root(rootfs, path)
    except FileNotFoundError:
        raise ManagerError(f"cp: {path}: no such file or directory in the container") from None
    try:
        source = _fd_path(fd)
        name = os.path.basename(os.path.normpath(path)) or "."
        with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            top = tar.gettarinfo(source, arcname=name)  # /proc/self/fd/N: lstat would see the link
            st = os.stat(source)
            top.type = tarfile.DIRTYPE if stat.S_ISDIR(st.st_mode) else tarfile.REGTYPE
            top.mode, top.uid, top.gid, top.mtime = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime
            top.size = 0 if top.isdir() else st.st_size
            top.linkname = ""
            if top.isdir():
                tar.addfile(top)
                for entry in sorted(os.listdir(source)):
                    tar.add(os.path.join(source, entry), arcname=f"{name}/{entry}")
            else:
                with open(source, "rb") as f:
                    tar.addfile(top, f)
    finally:
        os.close(fd)


def tar_in(fileobj, rootfs: str, path: str) -> None:
    """A tar stream unpacked into the container's directory `path` (`cp - CONTAINER:DIR`). Each
    member's parent is opened inside the rootfs (RESOLVE_IN_ROOT) and the member made relative
    to it, never through a name: a symlink in the tar or in the container (evil -> /) leads
    inside the rootfs, not to the host's files; absolute names and `..` are refused."""
    import tarfile

    try:
        target_fd = _open_in_root(rootfs, path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise ManagerError(f"cp: {path}: not a directory in the container ({err.strerror})") from None
    os.close(target_fd)
    base = path.rstrip("/") or "/"
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for member in tar:
                name = os.path.normpath(member.name)
                if member.name.startswith("/") or name == ".." or name.startswith("../"):
                    raise ManagerError(f"cp: the tar member {member.name!r} reaches outside {path}")
                if name == ".":
                    continue
                _extract_member(tar, member, rootfs, os.path.join(base, name))
    except tarfile.TarError as err:
        raise ManagerError(f"cp: the input is not a tar archive, or is truncated ({err})") from None


def _open_parent(rootfs: str, parent: str) -> int:
    """The directory `parent` inside the rootfs, made (each level inside the rootfs) if missing:
    a tar need not list the directories of its files."""
    try:
        return _open_in_root(rootfs, parent, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise ManagerError(f"cp: {parent}: {err.strerror} in the container") from None
    above, name = os.path.split(parent.rstrip("/"))
    if not name:
        raise ManagerError(f"cp: {parent}: no such directory in the container")
    fd = _open_parent(rootfs, above or "/")
    try:
        os.mkdir(name, 0o755, dir_fd=fd)
    except FileExistsError:
        pass
    finally:
        os.close(fd)
    try:
        return _open_in_root(rootfs, parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise ManagerError(f"cp: {parent}: {err.strerror} in the container") from None


def _extract_member(tar, member, rootfs: str, path: str) -> None:
    parent, leaf = os.path.split(path)
    dir_fd = _open_parent(rootfs, parent)
    try:
        if member.isdir():
            try:
                os.mkdir(leaf, 0o700, dir_fd=dir_fd)
            except FileExistsError:
                pass
        elif member.issym():
            _unlink_at(leaf, dir_fd)
            os.symlink(member.linkname, leaf, dir_fd=dir_fd)
        elif member.isfile():
            _unlink_at(leaf, dir_fd)
            fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dir_fd)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(tar.extractfile(member), out)
        else:
            return  # devices, fifos, hard links: not copied (podman copies them; rare in cp)
        try:
            os.chown(leaf, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)
            if not member.issym():
                os.chmod(leaf, member.mode & 0o7777, dir_fd=dir_fd)
        except OSError:
            pass
    finally:
        os.close(dir_fd)


def _unlink_at(name: str, dir_fd: int) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise ManagerError(f"cp: {name}: a directory is in the way of a file")
    os.unlink(name, dir_fd=dir_fd)
