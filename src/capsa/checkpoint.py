"""Checkpoint and restore of containers with CRIU, as runc 1.1 does them.

capsa drives the `criu` command line (`criu dump`, `pre-dump`, `restore`): its errors are readable
as they are and it needs nothing more from capsa. Its one gap is runc's RPC option
`orphan-pts-master`, which a container with a terminal needs: for those, the same command line is
sent over CRIU's RPC instead (capsa.criu_rpc). What runc's libcontainer does around CRIU is done
here the same way:

- checkpoint: bind mounts, the container's cgroup binds, masked files (the host's /dev/null) and
  device nodes are external mounts (`--external mnt[DEST]:DEST`); network and pid namespaces the
  container joined by path are external namespaces (`--external net[INODE]:extRootNetNS`); the
  freezer cgroup freezes the tree (`--freeze-cgroup`); the init's stdio targets go to
  descriptors.json in the image directory; the network namespace is always "empty" (runc does not
  manage network devices).
- restore: a new container from the bundle, in state `creating` until CRIU is done; its cgroup is
  made and limited first and criu runs inside it (`--cgroup-root` maps v1 hierarchies to it); the
  rootfs is bind-mounted on <state dir>/criu-root (CRIU's root must be a mount point whose parent
  is not overmounted); external mounts map to the bundle's sources; external namespaces come back
  through `--inherit-fd`, and pipes in descriptors.json are replaced by capsa's own stdio; the
  restored init is a sibling of criu (`--restore-sibling`), i.e. capsa's child.

Before either, `criu check` runs (every time: a cached answer would go stale with a kernel or
CRIU upgrade); when it fails, nothing is touched and the error carries CRIU's own message.
"""

from __future__ import annotations

import os
import subprocess

from capsa import jsonfast
from capsa import state as st
from capsa.criu_rpc import CriuError, log_errors
from capsa.errors import CapsaError, StateError, UnsupportedError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

    from capsa.cgroups import Cgroup
    from capsa.create import Allocation, CreateConfig, Prepared

DESCRIPTORS_FILE = "descriptors.json"  # runc's name: tools (podman, CRIU's crit users) read it
CRIU_ROOT = "criu-root"
RESTORED_PID_FILE = "criu-restore.pid"
MANAGE_CGROUPS_MODES = ("soft", "full", "strict", "ignore")
# runc's key for an external namespace: extRoot<Type>NS, with criu's name of the type.
EXTERNAL_NAMESPACES = {"network": ("net", "extRootNetNS"), "pid": ("pid", "extRootPidNS")}
# criu's names for --join-ns (runc's configs.NsName).
CRIU_NAMESPACE_NAMES = {"network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts", "user": "user", "time": "time"}


class CriuOptions:
    """runc's CriuOpts, filled from the command line."""

    __slots__ = ("image_path", "work_path", "parent_path", "leave_running", "tcp_established", "ext_unix_sk",
                 "shell_job", "file_locks", "pre_dump", "auto_dedup", "lazy_pages", "status_fd", "page_server",
                 "manage_cgroups_mode", "empty_ns", "lsm_profile", "lsm_mount_context")

    def __init__(self, **values: Any):
        for name in self.__slots__:
            setattr(self, name, values.get(name))
        if self.status_fd is None:
            self.status_fd = -1
        self.empty_ns = list(self.empty_ns or [])


# -- criu itself ----------------------------------------------------------------------------------
def check_criu(criu: str) -> None:
    """Run `criu check`; raise UnsupportedError with criu's own words if this host cannot C/R."""
    try:
        result = subprocess.run([criu, "check"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise UnsupportedError(f"checkpoint/restore needs CRIU: {criu} not found (install criu, or give --criu PATH)") from None
    except PermissionError:
        raise UnsupportedError(f"checkpoint/restore needs CRIU: {criu} is not executable") from None
    except subprocess.TimeoutExpired:
        raise UnsupportedError(f"`{criu} check` did not finish within 120 s") from None
    if result.returncode == 0:
        return
    said = "; ".join(line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip())
    version = _criu_version(criu)
    raise UnsupportedError(
        f"CRIU cannot checkpoint or restore on this host: `{criu} check` failed (exit {result.returncode}) "
        f"with CRIU {version or '(unknown version)'} on kernel {os.uname().release}; a kernel newer than the "
        f"CRIU release knows is a common cause. Nothing was changed. criu said: {said}"
    )


def _criu_version(criu: str) -> str:
    try:
        result = subprocess.run([criu, "--version"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in result.stdout.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return ""


def _run_criu(argv: list[str], log_path: str, action: str, **kwargs: Any) -> None:
    try:
        result = subprocess.run(argv, **kwargs)
    except OSError as err:
        raise CriuError(f"cannot run {argv[0]}: {err.strerror}") from None
    if result.returncode != 0:
        raise CriuError(f"criu {action} failed (exit {result.returncode}){log_errors(log_path)}\nlog file: {log_path}")


def _common_flags(opts: CriuOptions) -> list[str]:
    argv = []
    for flag in ("tcp_established", "ext_unix_sk", "shell_job", "file_locks", "auto_dedup", "lazy_pages"):
        if getattr(opts, flag):
            argv.append("--" + flag.replace("_", "-"))
    if opts.manage_cgroups_mode:
        argv.append(f"--manage-cgroups={opts.manage_cgroups_mode}")
    else:
        argv.append("--manage-cgroups")
    # runc always gives CRIU an empty network namespace: it does not manage network devices.
    argv += ["--empty-ns", "net"]
    return argv


def _config_file(annotations: dict[str, str]) -> list[str]:
    """runc's CRIU configuration: the org.criu.config annotation ("" for none), else
    /etc/criu/runc.conf, which a runc user may already have."""
    if "org.criu.config" in annotations:
        path = annotations["org.criu.config"]
        return ["--config", path] if path else []
    return ["--config", "/etc/criu/runc.conf"] if os.path.isfile("/etc/criu/runc.conf") else []


def validate_options(opts: CriuOptions) -> None:
    """The checks runc makes of its flags before anything is touched."""
    if opts.manage_cgroups_mode and opts.manage_cgroups_mode not in MANAGE_CGROUPS_MODES:
        raise CapsaError(f"invalid --manage-cgroups-mode {opts.manage_cgroups_mode!r}: use soft, full, strict or ignore")
    for ns in opts.empty_ns:
        if ns != "network":
            raise CapsaError(f'--empty-ns: namespace "{ns}" is not supported (only "network")')
    if opts.page_server:
        address, _, port = opts.page_server.rpartition(":")
        if not address or not port:
            raise CapsaError("Use --page-server ADDRESS:PORT to specify page server")
        if not port.isdigit():
            raise CapsaError("Invalid port number")
    if opts.parent_path and os.path.isabs(opts.parent_path):
        raise CapsaError("--parent-path must be relative")


def prepare_image_paths(opts: CriuOptions, for_restore: bool = False) -> None:
    """runc's defaults and checks: images in ./checkpoint unless --image-path; a parent image
    directory relative to it that exists."""
    opts.image_path = os.path.abspath(opts.image_path or "checkpoint")
    if for_restore:
        if not os.path.isdir(opts.image_path):
            raise CapsaError(f"--image-path {opts.image_path}: no such directory (nothing to restore from)")
    else:
        os.makedirs(opts.image_path, 0o700, exist_ok=True)
    if opts.work_path:
        opts.work_path = os.path.abspath(opts.work_path)
        os.makedirs(opts.work_path, 0o700, exist_ok=True)
    if opts.parent_path:
        parent = os.path.join(opts.image_path, opts.parent_path)
        if not os.path.isdir(parent):
            raise CapsaError(f"invalid --parent-path: {parent}: not a directory")


def _log_path(opts: CriuOptions, name: str) -> str:
    # criu writes its log to the work directory, which defaults to the image directory.
    return os.path.join(opts.work_path or opts.image_path, name)


# -- checkpoint -----------------------------------------------------------------------------------
def checkpoint(container: Any, criu: str, opts: CriuOptions) -> None:
    """Dump (or pre-dump) a running or paused container into opts.image_path.

    A dump without --leave-running stops the container (CRIU kills its processes): its record
    then says `stopped`, remembers the image, and `restore` of the same id replaces it.
    """
    validate_options(opts)
    status = container.status()
    if status not in (st.RUNNING, st.PAUSED):
        raise StateError(f"container {container.id} cannot be checkpointed in {status} state")
    spec = container.spec
    check_criu(criu)
    prepare_image_paths(opts)
    with container.store.lock(container.id):
        container._reload()
        status = container.status()
        if status not in (st.RUNNING, st.PAUSED):
            raise StateError(f"container {container.id} cannot be checkpointed in {status} state")
        argv, log = dump_command(container, spec, criu, opts)
        if not opts.pre_dump:
            _write_descriptors(container.pid, opts.image_path)
        pass_fds = (opts.status_fd,) if opts.lazy_pages and opts.status_fd >= 0 else ()
        if _has_terminal(spec):
            from capsa import criu_rpc

            criu_rpc.run(argv, log, pass_fds=pass_fds)
        else:
            _run_criu(argv, log, "pre-dump" if opts.pre_dump else "dump", capture_output=True,
                      stdin=subprocess.DEVNULL, pass_fds=pass_fds)
        if opts.pre_dump or opts.leave_running:
            return
        container.record.update(status=st.STOPPED, checkpoint=opts.image_path)
        container.store.write(container.id, container.record)


def dump_command(container: Any, spec: dict[str, Any], criu: str, opts: CriuOptions) -> tuple[list[str], str]:
    """The criu command line for a dump or pre-dump of `container`, and the path of its log."""
    action = "pre-dump" if opts.pre_dump else "dump"
    log_name = f"{action}.log"
    argv = [criu, action, "--tree", str(container.pid), "--images-dir", opts.image_path, "--log-file", log_name,
            "-v4", "--root", container.record["rootfs"]]
    if opts.work_path:
        argv += ["--work-dir", opts.work_path]
    argv += _config_file(container.record.get("annotations") or {})
    argv += _common_flags(opts)
    if opts.leave_running:
        argv.append("--leave-running")
    for ns in (spec.get("linux") or {}).get("namespaces") or []:
        if ns.get("path") and ns["type"] in EXTERNAL_NAMESPACES:
            name, key = EXTERNAL_NAMESPACES[ns["type"]]
            argv += ["--external", f"{name}[{os.stat(ns['path']).st_ino}]:{key}"]
    cgroup = container.cgroup()
    if cgroup is not None:
        freezer = cgroup.path_for("freezer") or cgroup.cgroup2_dir()
        if freezer:
            argv += ["--freeze-cgroup", freezer]
    if opts.page_server:
        address, _, port = opts.page_server.rpartition(":")
        argv += ["--page-server", "--address", address.strip("[]"), "--port", port]
    if opts.parent_path:
        argv += ["--prev-images-dir", opts.parent_path, "--track-mem"]
    if opts.lazy_pages and opts.status_fd >= 0:
        argv += ["--status-fd", str(opts.status_fd)]
    if not opts.pre_dump:
        for key, _ in external_mounts(spec, container.record["bundle"], cgroup):
            argv += ["--external", f"mnt[{key}]:{key}"]
        for path in _masked_files(spec, container.pid):
            argv += ["--external", f"mnt[{path}]:/dev/null"]
    return argv, _log_path(opts, log_name)


def external_mounts(spec: dict[str, Any], bundle: str, cgroup: Cgroup | None) -> list[tuple[str, str]]:
    """(destination in the container, source on the host) of every mount CRIU must treat as
    external: bind mounts, the binds of the container's cgroup directories, device nodes."""
    from capsa.mountopts import parse_mount_options

    found = []
    for mount in spec.get("mounts") or []:
        kind = mount.get("type") or ""
        if kind in ("cgroup", "cgroup2"):
            found += _cgroup_binds(spec, mount["destination"], cgroup)
            continue
        if kind == "bind" or parse_mount_options(mount.get("options") or []).is_bind:
            source = mount.get("source") or ""
            found.append((_clean(mount["destination"]), os.path.join(bundle, source)))
    for device in (spec.get("linux") or {}).get("devices") or []:
        found.append((_clean(device["path"]), device["path"]))
    return found


def _cgroup_binds(spec: dict[str, Any], destination: str, cgroup: Cgroup | None) -> list[tuple[str, str]]:
    """capsa lays a cgroup mount out as binds of the container's own cgroup directories (see
    rootfs._mount_cgroup): one at `destination` (cgroup2 only), or one per hierarchy below it."""
    from capsa.launch import cgroup_sources

    sources = cgroup_sources(spec, cgroup)
    base = _clean(destination)
    return [(base if not name else f"{base}/{name}", source) for name, source in sorted(sources.items())]


def _masked_files(spec: dict[str, Any], pid: int) -> list[str]:
    """Masked paths that are files: capsa bound the host's /dev/null on them (runc's addMaskPaths)."""
    files = []
    for path in (spec.get("linux") or {}).get("maskedPaths") or []:
        try:
            if not os.path.isdir(f"/proc/{pid}/root{path}"):
                os.stat(f"/proc/{pid}/root{path}")
                files.append(path)
        except OSError:
            continue
    return files


def _clean(path: str) -> str:
    return "/" + "/".join(p for p in path.split("/") if p and p != ".")


def _write_descriptors(pid: int, image_path: str) -> None:
    """What the init's stdin, stdout and stderr were (runc's descriptors.json): restore gives a
    pipe among them capsa's own stdio."""
    targets = []
    for fd in range(3):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            targets.append("/dev/null")
    st.write_atomic(os.path.join(image_path, DESCRIPTORS_FILE), jsonfast.dumps(targets), 0o600)


# -- restore --------------------------------------------------------------------------------------
def refuse_unrestorable(spec: dict[str, Any]) -> None:
    """What the restored container would silently lack: CRIU brings back the scheduling policy
    (not SCHED_DEADLINE), but neither the I/O priority nor the memory policy, and it restores a
    bind mount as a bind of its source, not idmapped."""
    from capsa.mountopts import is_idmapped

    process, linux_spec = spec.get("process") or {}, spec.get("linux") or {}
    if (process.get("scheduler") or {}).get("policy") == "SCHED_DEADLINE":
        raise UnsupportedError("process.scheduler: restore cannot honour SCHED_DEADLINE: CRIU does not restore it")
    if process.get("ioPriority"):
        raise UnsupportedError("process.ioPriority: restore cannot honour it: CRIU does not restore I/O priorities")
    if linux_spec.get("memoryPolicy"):
        raise UnsupportedError("linux.memoryPolicy: restore cannot honour it: CRIU does not restore memory policies")
    for index, mount in enumerate(spec.get("mounts") or []):
        if is_idmapped(mount):
            raise UnsupportedError(f"mounts[{index}]: restore cannot honour an idmapped mount: CRIU would restore it "
                                   "as a plain bind of its source")


class Restoring:
    """A restore checked and ready to run (prepare_restore): the container as create's validate
    step prepared it, and what the image's descriptors.json says of the init's stdio."""

    __slots__ = ("prepared", "descriptors")

    def __init__(self, prepared: Prepared, descriptors: list[str]):
        self.prepared = prepared
        self.descriptors = descriptors


def prepare_restore(config: CreateConfig, criu: str, opts: CriuOptions) -> Restoring:
    """Everything restore checks before it touches anything: the flags, the bundle (create's
    validate step), what CRIU could not restore, the console, the image, `criu check`."""
    from capsa import create

    validate_options(opts)
    if os.geteuid() != 0:
        raise UnsupportedError("restore needs root: CRIU cannot restore a container as an unprivileged user")
    prepared = create.validate(config)
    refuse_unrestorable(prepared.spec)
    console_socket = config.console.socket if config.console is not None else None
    if _has_terminal(prepared.spec) and not console_socket:
        raise CapsaError("process.terminal is true: a --console-socket is needed to receive the terminal")
    if console_socket and not _has_terminal(prepared.spec):
        raise CapsaError("--console-socket given but process.terminal is false")
    prepare_image_paths(opts, for_restore=True)
    descriptors = _read_descriptors(opts.image_path)
    check_criu(criu)
    return Restoring(prepared, descriptors)


def restore(store: st.StateStore, restoring: Restoring, criu: str, opts: CriuOptions) -> Allocation:
    """Create the prepared container through create's steps, with CRIU's restore of the image in
    opts.image_path as the launch step; the container is running once it returns."""
    from capsa import create

    def launch(allocation: Allocation) -> None:
        allocation.pid = _restore_into(allocation, restoring, criu, opts)
        allocation.record.update(created=st.now_rfc3339(), restoredFrom=opts.image_path)

    return create.create(store, restoring.prepared, launch, st.RUNNING)


def _read_descriptors(image_path: str) -> list[str]:
    path = os.path.join(image_path, DESCRIPTORS_FILE)
    try:
        with open(path, "rb") as f:
            value = jsonfast.loads(f.read())
    except FileNotFoundError:
        raise CapsaError(f"{path} is missing: {image_path} is not a checkpoint of a container "
                         "(a --pre-dump image cannot be restored by itself)") from None
    except jsonfast.JSONError as err:
        raise CapsaError(f"{path}: {err}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CapsaError(f"{path}: expected a list of strings")
    return value


def _restore_into(allocation: Allocation, restoring: Restoring, criu: str, opts: CriuOptions) -> int:
    """Run `criu restore` for the container (inside its cgroup, limits applied); return the
    restored init's host pid."""
    from capsa import linux

    spec = restoring.prepared.spec
    cgroup = allocation.cgroup
    # systemd makes the scope around a process: criu's own, started first (the RPC), as runc does.
    by_manager = cgroup is not None and cgroup.placed_by_manager
    if cgroup is not None and not by_manager:
        _limit(cgroup, restoring)
    _make_mount_points(allocation.record["rootfs"], allocation.record["bundle"], spec)
    criu_root = os.path.join(allocation.directory, CRIU_ROOT)
    os.mkdir(criu_root, 0o755)
    namespace_fds: list[int] = []
    console = restoring.prepared.config.console
    try:
        linux.mount(allocation.record["rootfs"], criu_root, None, linux.MS_BIND | linux.MS_REC)
        try:
            argv, log, pid_path = restore_command(allocation, spec, cgroup, criu, opts, criu_root, restoring.descriptors,
                                                  namespace_fds)
            join = cgroup.self_join_files() if cgroup is not None and not by_manager else []
            if _has_terminal(spec) or by_manager:
                from capsa import criu_rpc

                def placed(pid: int) -> None:
                    linux_spec = spec.get("linux") or {}
                    cgroup.create_with(pid, linux_spec.get("resources"))
                    _limit(cgroup, restoring)

                # The RPC answers with the pid; the pid file stays unwritten.
                return criu_rpc.run(argv, log, pass_fds=tuple(namespace_fds), preexec_fn=lambda: _join(join),
                                    console_socket=console.socket if console is not None else None,
                                    started=placed if by_manager else None)
            _run_criu(argv, log, "restore", pass_fds=tuple(namespace_fds), preexec_fn=lambda: _join(join))
        finally:
            linux.umount2(criu_root, linux.MNT_DETACH)
    finally:
        for fd in namespace_fds:
            os.close(fd)
        os.rmdir(criu_root)
    try:
        with open(pid_path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        raise CriuError(f"criu restore succeeded but wrote no pid to {pid_path}") from None
    finally:
        st.unlink_quietly(pid_path)
    return pid


def _limit(cgroup: Cgroup, restoring: Restoring) -> None:
    linux_spec = restoring.prepared.spec.get("linux") or {}
    cgroup.apply(linux_spec.get("resources"), linux_spec.get("devices"), rootless=restoring.prepared.rootless_cgroups,
                 warn=restoring.prepared.config.warn)


def restore_command(container: Any, spec: dict[str, Any], cgroup: Cgroup | None, criu: str, opts: CriuOptions, criu_root: str,
                    descriptors: list[str], namespace_fds: list[int]) -> tuple[list[str], str, str]:
    """The criu command line for the restore, its log's path and the file it writes the pid to;
    `container` is what it reads of the container being made (its directory and record: a
    capsa.create.Allocation). Namespace fds it opens are appended to namespace_fds (for the caller to pass and close)."""
    pid_path = os.path.join(container.directory, RESTORED_PID_FILE)
    argv = [criu, "restore", "--images-dir", opts.image_path, "--log-file", "restore.log", "-v4",
            "--root", criu_root, "--restore-detached", "--restore-sibling", "--pidfile", pid_path,
            "--evasive-devices"]
    if opts.work_path:
        argv += ["--work-dir", opts.work_path]
    argv += _config_file(container.record.get("annotations") or {})
    argv += _common_flags(opts)
    if opts.lsm_profile:
        argv += ["--lsm-profile", opts.lsm_profile]
    if opts.lsm_mount_context:
        argv += ["--lsm-mount-context", opts.lsm_mount_context]
    argv += _namespace_flags(spec, namespace_fds)
    argv += _cgroup_roots(cgroup) if cgroup is not None else []
    for key, source in external_mounts(spec, container.record["bundle"], cgroup):
        argv += ["--external", f"mnt[{key}]:{source}"]
    if (spec.get("linux") or {}).get("maskedPaths"):
        argv += ["--external", "mnt[/dev/null]:/dev/null"]
    for fd, target in enumerate(descriptors):
        if "pipe:" in target:
            # The restored init's stdio pipe becomes capsa's own fd (criu inherits our 0, 1, 2).
            argv += ["--inherit-fd", f"fd[{fd}]:{target}"]
    return argv, _log_path(opts, "restore.log"), pid_path


def _namespace_flags(spec: dict[str, Any], namespace_fds: list[int]) -> list[str]:
    argv = []
    for ns in (spec.get("linux") or {}).get("namespaces") or []:
        path = ns.get("path")
        if not path:
            continue
        kind = ns["type"]
        if kind in EXTERNAL_NAMESPACES:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as err:
                raise CapsaError(f"requested {kind} namespace {path} cannot be opened: {err.strerror}") from None
            namespace_fds.append(fd)
            argv += ["--inherit-fd", f"fd[{fd}]:{EXTERNAL_NAMESPACES[kind][1]}"]
        elif kind == "cgroup":
            raise UnsupportedError(f"cannot restore into the cgroup namespace {path}: CRIU cannot join one (as runc)")
        else:
            argv += ["--join-ns", f"{CRIU_NAMESPACE_NAMES[kind]}:{path}"]
    return argv


def _cgroup_roots(cgroup: Cgroup, found: dict[str, str] | None = None) -> list[str]:
    """--cgroup-root CONTROLLER:/path for each v1 hierarchy, and on a unified (cgroup2-only) host
    the default root, --cgroup-root /path, as runc gives CRIU a root for every line of criu's own
    /proc/PID/cgroup ("" for v2): the dumped cgroups are restored under the new container's.
    Without the v2 root, a container restored under another id went back into its old cgroup's
    path (CRIU made it again), out of the new container's reach. found: hierarchies() (tests)."""
    from capsa.cgroups import CGROUP_ROOT, hierarchies

    mounted = {controllers: point for point, controllers in (hierarchies() if found is None else found).items()}
    argv = []
    for controllers, directory in cgroup.paths.items():
        point = mounted.get(controllers)
        if point is None or not directory.startswith(point + "/"):
            continue
        if controllers:
            argv += ["--cgroup-root", f"{controllers}:{directory[len(point):]}"]
        elif point == CGROUP_ROOT:  # unified; a hybrid host's v2 hierarchy is left to criu's cgroup
            argv += ["--cgroup-root", directory[len(point):]]
    return argv


def _make_mount_points(rootfs: str, bundle: str, spec: dict[str, Any]) -> None:
    """Mount points missing from the rootfs are made as create would (runc's
    prepareCriuRestoreMounts), except below a tmpfs, whose content CRIU restores itself."""
    from capsa.mountopts import parse_mount_options
    from capsa.rootfs import Rootfs

    mounts = spec.get("mounts") or []
    tmpfs = [_clean(m["destination"]) for m in mounts if m.get("type") == "tmpfs"]
    root = Rootfs(rootfs)
    try:
        for mount in mounts:
            destination = _clean(mount["destination"])
            if mount.get("type") in ("cgroup", "cgroup2") or any(destination.startswith(t + "/") for t in tmpfs):
                continue
            is_bind = mount.get("type") == "bind" or parse_mount_options(mount.get("options") or []).is_bind
            source = os.path.join(bundle, mount.get("source") or "")
            os.close(root.mount_point(destination, os.path.isdir(source) if is_bind else True))
    finally:
        root.close()


def _has_terminal(spec: dict[str, Any]) -> bool:
    return bool((spec.get("process") or {}).get("terminal"))


def _join(files: list[str]) -> None:
    """In criu's child before exec: join the container's cgroup (runc's criuApplyCgroups)."""
    for path in files:
        with open(path, "w") as f:
            f.write("0")
