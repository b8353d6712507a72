"""Checkpoint and restore of managed containers (capsactl container checkpoint / restore), on
capsa's own CRIU support (capsa.checkpoint, through the library runtime: never a runtime binary).

checkpoint: CRIU dumps the running container into <graph root>/containers/<id>/checkpoint; without
--leave-running its process is gone (the monitor records the exit) and the record says
Checkpointed. --export FILE writes, as libpod's prepareCheckpointExport does, a tar.gz of:

    manifest.json    the format, the architecture (OCI's name), capsa's version
    config.dump      the store's row: id, name, image id and name, config (with the OCI spec)
                     and the roots it was made under (paths in the spec are rewritten on import)
    spec.dump        the bundle's config.json as the container ran it
    checkpoint/      CRIU's images (and descriptors.json)
    rootfs-diff.tar  the container's changes: the overlay upper directory, whiteouts included

restore: a checkpointed container of this store gets its process back (CRIU restores it under
a new monitor); with --import, the archive is read and checked first (truncated, another
architecture, a name in use, an image this store lacks: each its own error, nothing made), then a
new container is made from it (a new id; --name renames it), its changes are put back in its
upper directory, and CRIU restores its process. A restore that fails after that removes the
imported container again.
"""

from __future__ import annotations

import os

from capsa.manager.errors import InvalidState, ManagerError

FORMAT = 1
MANIFEST = "manifest.json"
CONFIG = "config.dump"
SPEC = "spec.dump"
IMAGES = "checkpoint"
ROOTFS_DIFF = "rootfs-diff.tar"
# OCI's (Go's) names of the architectures, from uname's.
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386",
                  "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def host_architecture() -> str:
    machine = os.uname().machine
    return _ARCHITECTURES.get(machine, machine)


def manifest() -> dict:
    from capsa import __version__

    return {"format": FORMAT, "architecture": host_architecture(), "capsaVersion": __version__}


def check_manifest(value, architecture: str | None = None) -> None:
    """An archive's manifest, as this host can restore it: the same architecture (CRIU's images
    are the machine's registers and memory) and a format this capsa reads."""
    architecture = architecture or host_architecture()
    if not isinstance(value, dict):
        raise ManagerError(f"checkpoint archive: {MANIFEST} is not an object")
    if value.get("format") != FORMAT:
        raise ManagerError(f"checkpoint archive: format {value.get('format')!r} is not one this capsa reads "
                           f"(format {FORMAT}; written by capsa {value.get('capsaVersion', '?')})")
    if value.get("architecture") != architecture:
        raise ManagerError(f"checkpoint archive: made on {value.get('architecture')!r}, this host is {architecture!r}: "
                           "CRIU restores a process only on the architecture it was dumped on")


def rewrite_paths(text: str, old: dict, new: dict) -> str:
    """The container's config (JSON text) with the old store's roots and container id replaced
    by the new ones: the rootfs, userdata binds and cgroup path name them."""
    for key in ("graph", "run", "state"):
        if old.get(key) and old[key] != new[key]:
            text = text.replace(old[key].rstrip("/") + "/", new[key].rstrip("/") + "/")
    return text.replace(old["id"], new["id"])


def image_directory(paths, container_id: str) -> str:
    return os.path.join(paths.container(container_id), IMAGES)


def _roots(paths, container_id: str) -> dict:
    return {"graph": paths.graph_root, "run": paths.run_root, "state": paths.state_root, "id": container_id}


def criu_path() -> str:
    """criu on PATH, else Debian's /usr/sbin/criu (a root shell's PATH may lack /usr/sbin)."""
    import shutil

    return shutil.which("criu") or ("/usr/sbin/criu" if os.path.exists("/usr/sbin/criu") else "criu")


def check_criu() -> None:
    """capsa's own `criu check` (capsa.checkpoint.check_criu): its error names CRIU's version, the
    kernel and what criu said."""
    from capsa import checkpoint
    from capsa.errors import CapsaError

    try:
        checkpoint.check_criu(criu_path())
    except CapsaError as err:
        raise ManagerError(str(err)) from None


def _library_runtime(manager, container):
    runtime = manager.runtime(container)
    if runtime.path is not None:
        raise ManagerError(f"container {container.name} runs on {runtime.name}: checkpoint and restore need capsa's "
                           "own runtime (created without --runtime)")
    return runtime


def _refuse_unsupported(container) -> None:
    if container.config.get("Tty"):
        raise ManagerError(f"container {container.name} has a terminal (-t): capsactl cannot checkpoint it yet")


# -- checkpoint ------------------------------------------------------------------------------------
def checkpoint(manager, text: str, *, export: str | None = None, leave_running: bool = False,
               tcp_established: bool = False):
    """Dump a running container with CRIU; return it (exited unless leave_running)."""
    from capsa.manager import events
    from capsa.manager.containers import PAUSED, RUNNING

    container = manager.get(text)
    if container.status not in (RUNNING, PAUSED):
        raise InvalidState(f"container {container.name} is {container.status}: only a running or paused container "
                           "can be checkpointed")
    _refuse_unsupported(container)
    if container.config.get("AutoRemove") and not leave_running:
        raise ManagerError(f"container {container.name} was run with --rm: its exit after the checkpoint would remove "
                           "it and its checkpoint; use --leave-running")
    runtime = _library_runtime(manager, container)
    if export is not None:
        _check_exportable(container, export)
    check_criu()
    images = image_directory(manager.paths, container.id)
    import shutil

    shutil.rmtree(images, ignore_errors=True)
    os.makedirs(images, 0o700)
    try:
        runtime.checkpoint(container.id, images, leave_running=leave_running, tcp_established=tcp_established,
                           criu=criu_path())
    except Exception as err:
        shutil.rmtree(images, ignore_errors=True)
        raise ManagerError(f"checkpoint of {container.name}: {err}") from None
    if not leave_running:
        manager.wait(container.id)  # the monitor records the end CRIU gave the process
        _mark(manager, container.id, Checkpointed=True, CheckpointPath=images, CheckpointedAt=_now())
    events.emit(manager.paths, "checkpoint", id=container.id, name=container.name,
                image=container.config["ImageName"])
    if export is not None:
        write_export(manager, manager.get(container.id, sync=False), images, export)
    return manager.get(container.id)


def _now() -> str:
    from capsa.manager.containers import now

    return now()


def _check_exportable(container, export: str) -> None:
    if any(mount["type"] == "volume" for mount in container.config.get("Mounts") or []):
        raise ManagerError(f"container {container.name} has volumes: --export carries no volumes (use bind mounts)")
    directory = os.path.dirname(os.path.abspath(export))
    if not os.path.isdir(directory):
        raise ManagerError(f"--export {export}: {directory} is not a directory")


def _mark(manager, container_id: str, **fields) -> None:
    with manager.store.transaction() as db:
        current = manager._read(container_id, db)
        if current is None:
            return
        for key, value in fields.items():
            if value is None:
                current.state.pop(key, None)
            else:
                current.state[key] = value
        manager._write(db, current, current.status)


def write_export(manager, container, images: str, export: str) -> None:
    """The archive of a checkpoint (see the module's docstring), written whole or not at all."""
    import json
    import tarfile
    import tempfile

    from capsa.manager.store import dumps

    upper = os.path.join(manager.paths.container(container.id), "upper")
    if not os.path.isdir(upper):
        raise ManagerError("--export needs the overlay storage driver (the container's changes are its upper directory)")
    export = os.path.abspath(export)
    row = {"id": container.id, "name": container.name, "image_id": container.image_id,
           "image": container.config.get("ImageName"), "config": container.config,
           "roots": _roots(manager.paths, container.id)}
    spec_path = os.path.join(manager.userdata(container.id), "config.json")
    partial = export + ".partial"
    try:
        with tempfile.TemporaryDirectory(prefix="capsactl-export-", dir=os.path.dirname(export)) as scratch:
            for name, content in ((MANIFEST, json.dumps(manifest())), (CONFIG, dumps(row))):
                with open(os.path.join(scratch, name), "w") as f:
                    f.write(content)
            diff = os.path.join(scratch, ROOTFS_DIFF)
            with tarfile.open(diff, "w", format=tarfile.PAX_FORMAT) as tar:
                tar.add(upper, arcname=".")
            with tarfile.open(partial, "w:gz") as tar:
                tar.add(os.path.join(scratch, MANIFEST), MANIFEST)  # first: read before anything else
                tar.add(os.path.join(scratch, CONFIG), CONFIG)
                if os.path.exists(spec_path):
                    tar.add(spec_path, SPEC)
                tar.add(images, IMAGES)
                tar.add(diff, ROOTFS_DIFF)
        os.rename(partial, export)
    except OSError as err:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise ManagerError(f"--export {export}: {err.strerror or err}") from None


# -- restore ---------------------------------------------------------------------------------------
def restore(manager, text: str | None = None, *, import_path: str | None = None, name: str | None = None,
            keep: bool = False, tcp_established: bool = False):
    """A checkpointed container running again; return it."""
    if import_path is None:
        if name is not None:
            raise ManagerError("--name can only be used with --import")
        if not text:
            raise ManagerError("restore needs a container, or --import FILE")
        return _restore_here(manager, text, keep, tcp_established)
    if text:
        raise ManagerError("restore --import takes no container name (use --name to name the new one)")
    return _restore_import(manager, import_path, name, keep, tcp_established)


def _restore_here(manager, text: str, keep: bool, tcp_established: bool):
    from capsa.manager.containers import EXITED

    container = manager.get(text)
    images = container.state.get("CheckpointPath") or image_directory(manager.paths, container.id)
    if container.status != EXITED or not container.state.get("Checkpointed") or not os.path.isdir(images):
        raise InvalidState(f"container {container.name} is {container.status} and has no checkpoint to restore "
                           "(checkpoint it first, without --leave-running)")
    _refuse_unsupported(container)
    _library_runtime(manager, container)
    check_criu()
    return _run_restore(manager, container, images, keep, tcp_established)


def _run_restore(manager, container, images: str, keep: bool, tcp_established: bool):
    from capsa.manager import events

    try:
        manager.start(container.id, restore={"image_path": images, "tcp_established": tcp_established,
                                                   "criu": criu_path()})
    except ManagerError as err:
        raise ManagerError(f"restore of {container.name}: {err}") from None
    _mark(manager, container.id, Checkpointed=None, CheckpointPath=None, Restored=True, RestoredAt=_now())
    if not keep:
        import shutil

        shutil.rmtree(images, ignore_errors=True)
    events.emit(manager.paths, "restore", id=container.id, name=container.name, image=container.config["ImageName"])
    return manager.get(container.id)


class Archive:
    """A checkpoint archive, unpacked into a scratch directory and checked."""

    def __init__(self, directory: str):
        self.directory = directory
        self.manifest = None
        self.row: dict = {}

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)


def read_archive(path: str, directory: str) -> Archive:
    """Unpack `path` into `directory` and check it: every part there, the manifest this host's.
    A truncated or corrupt archive is an error naming the file."""
    import json
    import tarfile
    import zlib

    try:
        with tarfile.open(path, "r:gz") as tar:
            tar.extractall(directory, members=checked_members(tar, plain=True), numeric_owner=True)
    except FileNotFoundError:
        raise ManagerError(f"--import {path}: no such file") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise ManagerError(f"--import {path}: not a complete checkpoint archive (truncated or corrupt: {err})") from None
    archive = Archive(directory)
    for part in (MANIFEST, CONFIG, IMAGES, ROOTFS_DIFF):
        if not os.path.exists(archive.path(part)):
            raise ManagerError(f"--import {path}: not a capsactl checkpoint archive ({part} is missing)")
    try:
        with open(archive.path(MANIFEST)) as f:
            archive.manifest = json.load(f)
        with open(archive.path(CONFIG)) as f:
            archive.row = json.load(f)
    except ValueError as err:
        raise ManagerError(f"--import {path}: unreadable {MANIFEST} or {CONFIG}: {err}") from None
    check_manifest(archive.manifest)
    if not isinstance(archive.row, dict) or not all(k in archive.row for k in ("id", "name", "image_id", "config",
                                                                             "roots")):
        raise ManagerError(f"--import {path}: {CONFIG} is not a container's record")
    return archive


def _restore_import(manager, import_path: str, name: str | None, keep: bool, tcp_established: bool):
    import tempfile

    from capsa.manager.store import valid_name

    manager.paths.ensure()
    os.makedirs(manager.paths.tmp, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="capsactl-import-", dir=manager.paths.tmp) as scratch:
        archive = read_archive(os.path.abspath(import_path), scratch)
        name = name or archive.row["name"]
        if not valid_name(name):
            raise ManagerError(f"container name {name!r} is not valid: letters, digits, '_', '.' and '-', "
                               "starting with a letter or digit")
        if manager.exists(name):
            from capsa.manager.errors import NameInUse

            raise NameInUse("container", name, manager.resolve_id(name))
        _check_image(manager, archive.row)
        if manager.storage.driver == "vfs":
            raise ManagerError("restore --import needs the overlay storage driver (this store uses vfs)")
        check_criu()
        container = _import_container(manager, archive, name)
        try:
            images = image_directory(manager.paths, container.id)
            os.rename(archive.path(IMAGES), images)
            return _run_restore(manager, container, images, keep, tcp_established)
        except BaseException:
            manager.remove(container.id, force=True)
            raise


def checked_members(tar, plain: bool = False):
    """The archive's members, each checked to land inside the destination: no absolute name, no
    "..", no path through a symlink the archive made, no hard link out (what tarfile's "tar"
    filter checks, which this Python may lack; members are kept as they are, so a container's
    setuid files and whiteouts come back unchanged). plain: only files and directories."""
    links: set[str] = set()
    for member in tar.getmembers():
        name = os.path.normpath(member.name)
        parts = name.split("/")
        if name.startswith("/") or ".." in parts:
            raise ManagerError(f"archive member {member.name!r} points outside the archive")
        if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
            raise ManagerError(f"archive member {member.name!r} is below a symbolic link")
        if plain and not (member.isfile() or member.isdir()):
            raise ManagerError(f"archive member {member.name!r} is not a file or directory")
        if member.islnk() and (member.linkname.startswith("/") or ".." in os.path.normpath(member.linkname).split("/")):
            raise ManagerError(f"archive member {member.name!r} links outside the archive")
        if member.issym():
            links.add(name)
        yield member


def _check_image(manager, row: dict) -> None:
    from capsa.manager.errors import NoSuchImage

    try:
        manager.images.get(row["image_id"])
    except NoSuchImage:
        raise ManagerError(f"the checkpoint's image {row.get('image') or row['image_id']} (id {row['image_id'][:12]}) "
                           "is not in this store: pull or load it first") from None


def _import_container(manager, archive: Archive, name: str):
    """The archive's container as a new one of this store (a new id, its config's paths
    rewritten, its changes in its upper directory), status created."""
    import json
    import sqlite3
    import tarfile

    from capsa.manager import events
    from capsa.manager.containers import CREATED, now
    from capsa.manager.errors import NameInUse
    from capsa.manager.store import dumps, is_unique_violation

    row = archive.row
    container_id = os.urandom(32).hex()
    config = json.loads(rewrite_paths(json.dumps(row["config"]), row["roots"], _roots(manager.paths, container_id)))
    config["Name"] = name
    state = {"Checkpointed": True, "CheckpointPath": image_directory(manager.paths, container_id),
             "ImportedFrom": row["id"]}
    try:
        with manager.store.transaction() as db:
            db.execute("INSERT INTO containers (id, name, image_id, status, config, state, created) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (container_id, name, row["image_id"], CREATED, dumps(config), dumps(state), now()))
    except sqlite3.IntegrityError as err:
        if is_unique_violation(err):
            raise NameInUse("container", name, manager.resolve_id(name)) from None
        raise
    try:
        manager.storage.create(container_id)
        upper = os.path.join(manager.paths.container(container_id), "upper")
        with tarfile.open(archive.path(ROOTFS_DIFF)) as tar:
            tar.extractall(upper, members=checked_members(tar), numeric_owner=True)
    except BaseException:
        manager.remove(container_id, force=True)
        raise
    events.emit(manager.paths, "create", id=container_id, name=name, image=config.get("ImageName", ""))
    return manager.get(container_id)
