"""The container's init process: everything between the fork and the exec of the user's program.

This code runs in the child of `capsa create`, inside the container's new namespaces, as pid 1 of
the container when it has its own pid namespace. It builds the rootfs, applies the process settings,
reports "ready" to the parent and then blocks until `capsa start` connects, when it drops its
privileges and execs the user's program. It stays non-dumpable all along, so nothing in the
container can open it through /proc (the CVE-2019-5736 class); exec makes the new program
dumpable again.
"""

from __future__ import annotations

# Everything the init and an exec'd process need must be imported before they enter the
# container's namespaces (see load_modules): the modules every container needs are imported
# here, the others by load_modules.
import _signal
import _socket
import posix

from capsa import caps, hooks, linux, posixlite, rootfs
from capsa import trampoline as _trampoline
from capsa.errors import EBUSY, EINVAL, ELOOP, ENOSYS, EOPNOTSUPP, EPERM, CapsaError, ContainerStartError
from capsa.spec import RLIMITS, ROOTFS_PROPAGATION
from capsa.syncpipe import Channel

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any, NoReturn

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run(plan: Any, fds: Any, channel: Channel, seccomp_filter: Any = None) -> NoReturn:
    """A new container's init (capsa.launch: plan.init): set the container up, report "ready",
    wait for `start` and exec the process; on any failure report it and exit. seccomp_filter:
    plan.seccomp built (build_seccomp) before the namespaces were entered."""
    try:
        _setup_and_exec(plan, fds, channel, seccomp_filter)
    except BaseException as err:  # noqa: BLE001 - every failure must reach the parent, then _exit
        _report(channel, err)
    posix._exit(1)


class Tenant:
    """What a process joining existing namespaces (exec) makes before it enters them: the
    seccomp filter (libseccomp, the cache), the exec trampoline and the LSM labels (through the
    host's procfs), all out of reach after setns(mnt)."""

    __slots__ = ("seccomp_filter", "trampoline", "labels")

    def __init__(self, *, seccomp_filter: Any, trampoline: int | None, labels: Any):
        self.seccomp_filter = seccomp_filter
        self.trampoline = trampoline
        self.labels = labels


def prepare_tenant(plan: Any, seccomp_filter: Any, trampoline: int | None) -> Tenant:
    return Tenant(seccomp_filter=seccomp_filter, trampoline=trampoline, labels=exec_labels(plan.process))


def run_tenant(plan: Any, fds: Any, channel: Channel, tenant: Tenant) -> NoReturn:
    """exec: set up and exec plan.process in a running container whose namespaces we have
    joined; the container's memory policy and seccomp filter apply to it."""
    process = plan.process
    try:
        listener_state = channel.expect("go")
        _prepare_listener(tenant.seccomp_filter, fds.seccomp_listener, listener_state)
        posix.setsid()
        if process.get("terminal"):
            _setup_terminal(rootfs.Rootfs("/"), fds.console, process, bind=False)
        executable, env = _prepare_process(process, plan.inherited_fds, plan.listen_fds, plan.memory_policy)
        _become_process(process, tenant.labels, tenant.seccomp_filter)
        exec_program(executable, process["args"], env, tenant.trampoline)
    except BaseException as err:  # noqa: BLE001 - every failure must reach the parent, then _exit
        _report(channel, err)
    posix._exit(127)


def _prepare_process(process: dict[str, Any], keep: int, listen_fds: int | None, memory_policy: dict[str, Any] | None,
                     ) -> tuple[str, dict[str, str]]:
    """What every payload does last, in the container's root, before it becomes the process: its
    rlimits, cwd, environment and executable, the fds that survive exec, its scheduling."""
    _apply_rlimits(process.get("rlimits") or [])
    enter_cwd(process["cwd"])
    env = _environment(process, listen_fds)
    executable = find_executable(process["args"][0], env)
    _prepare_fds(keep)
    apply_scheduling(process, memory_policy)
    return executable, env


def load_modules(process: dict[str, Any], spec: dict[str, Any] | None = None) -> None:
    """Import now what the init (`spec` given) or an exec'd `process` will import later.

    Called by the child before it enters the container's namespaces: once it is the root of a
    user namespace, the host may not let it read where capsa, or Python, is installed (a venv in
    a 0700 directory such as /root: "cannot import name 'trampoline'"), and once it has
    joined the container's mount namespace, or pivoted into its root, the host's files are out
    of reach altogether. The modules only some containers use are imported only for those.
    """
    linux_spec = (spec or {}).get("linux") or {}
    if process.get("terminal"):
        from capsa import console  # noqa: F401
    if process.get("apparmorProfile") or process.get("selinuxLabel") or linux_spec.get("mountLabel"):
        from capsa import lsm  # noqa: F401
    if linux_spec.get("seccomp"):
        from capsa import seccomp  # noqa: F401
    if spec is not None and _has_hooks(spec, "createContainer", "startContainer"):
        import subprocess  # noqa: F401 - the hooks the init runs itself, inside the container


def exec_labels(process: dict[str, Any]) -> Any:
    """The AppArmor/SELinux labels to apply at exec (capsa.lsm), None when the process has none."""
    if not (process.get("apparmorProfile") or process.get("selinuxLabel")):
        return None
    from capsa import lsm

    return lsm.ExecLabels(process)


def trampoline_fd() -> int | None:
    """This process's sealed exec trampoline (see capsa.trampoline; made once, launch hands it to
    its children); None where it does not exist (non x86-64)."""
    return _trampoline.shared_fd() if _trampoline.supported() else None


def exec_program(executable: str, args: list[str], env: dict[str, str], trampoline: int | None) -> NoReturn:
    """Exec the user's program through the trampoline, so that /proc/self/exe is never our binary."""
    if trampoline is None:
        posix.execve(executable, args, env)
    argv = ["capsa-exec", executable, *args]
    try:
        posix.execve(f"/proc/self/fd/{trampoline}", argv, env)
    except FileNotFoundError:
        posix.execve(trampoline, argv, env)  # no /proc in the container: execveat(fd, "", AT_EMPTY_PATH)


def _report(channel: Channel, err: BaseException) -> None:
    if isinstance(err, CapsaError):
        message = str(err)
    elif isinstance(err, OSError):
        message = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
    else:
        message = f"internal error in container init: {type(err).__name__}: {err}"
    try:
        channel.send("error", message)
    except OSError:
        pass


def _setup_and_exec(plan: Any, fds: Any, channel: Channel, seccomp_filter: Any) -> None:
    config = plan.init
    spec = config.spec
    process = plan.process
    linux_spec = spec.get("linux") or {}
    new_namespaces = {ns.type for ns in plan.namespaces if not ns.joined}
    in_userns = any(ns.type == "user" for ns in plan.namespaces)
    listener_state = channel.expect("go")
    if "cgroup" in new_namespaces:
        linux.unshare(linux.CLONE_NEWCGROUP)
    posix.setsid()
    if not config.no_new_keyring:
        _new_session_keyring(config.container_id)
    if "network" in new_namespaces:
        linux.loopback_up()

    dev_null = posix.open("/dev/null", posix.O_PATH | posix.O_CLOEXEC)
    _check_dev_null(dev_null)
    # The host's procfs, before any mount of the container's exists: where the LSM labels go.
    labels = exec_labels(process)
    mounts = spec.get("mounts") or []
    if "mount" in new_namespaces:
        propagation = _propagation(linux_spec.get("rootfsPropagation"))
        rootfs.prepare_root(config.rootfs, propagation)
    # Opened only now: the fd must be the rootfs bind mount that prepare_root put on top.
    root = rootfs.Rootfs(config.rootfs)
    if "mount" in new_namespaces:
        rootfs.mount_all(root, mounts, in_userns, config.cgroup_sources, linux_spec.get("mountLabel"),
                         fds.mount_trees, _detached_source(channel) if in_userns else None)
        if not rootfs.dev_is_bind_mounted(mounts):
            rootfs.create_devices(root, linux_spec.get("devices") or [], in_userns)
            rootfs.create_dev_links(root)
    if process.get("terminal"):
        _setup_terminal(root, fds.console, process)

    if _has_hooks(spec, "prestart", "createRuntime"):
        channel.send("hooks")
        channel.expect("ok")
    hooks.run_hooks(spec, "createContainer", plan.state)
    _prepare_listener(seccomp_filter, fds.seccomp_listener, listener_state)
    exec_trampoline = fds.trampoline

    cwd = process["cwd"]
    try:
        posix.close(root.mkdir_all(cwd))
    except OSError as err:
        raise ContainerStartError(f"process.cwd {cwd!r}: cannot create it in the container: {posix.strerror(err.errno)}") from None
    # The container's procfs, checked once (CVE-2025-52881 class: a fake one, or a /proc swapped
    # after it was mounted); sysctls, masks and read-only paths under /proc go through this fd.
    proc = None
    if "mount" in new_namespaces and any(m["destination"].rstrip("/") == "/proc" for m in mounts):
        proc = rootfs.open_procfs_root(root, "mounts")
    try:
        # sysctl goes through the container's /proc before readonlyPaths can make /proc/sys read-only.
        _apply_sysctl(root, proc, linux_spec.get("sysctl") or {})
        if "mount" in new_namespaces:
            rootfs.mask_paths(root, linux_spec.get("maskedPaths") or [], dev_null, proc)
            rootfs.readonly_paths(root, linux_spec.get("readonlyPaths") or [], proc)
    finally:
        if proc is not None:
            posix.close(proc)
    if "mount" in new_namespaces:
        if config.no_pivot:
            rootfs.move_into(config.rootfs)
        else:
            rootfs.pivot_into(config.rootfs)
        if (spec.get("root") or {}).get("readonly"):
            rootfs.remount_root_readonly()
        if linux_spec.get("rootfsPropagation"):
            linux.mount(None, "/", None, _propagation(linux_spec["rootfsPropagation"]))
    else:
        posix.chroot(config.rootfs)
    posix.close(dev_null)
    root.close()
    posix.chdir("/")

    _set_names(spec)
    if config.serve is not None:
        channel.send("ready")
        channel.close()
        config.serve(plan, seccomp_filter, exec_trampoline)
        posix._exit(0)
    executable, env = _prepare_process(process, plan.inherited_fds, plan.listen_fds, plan.memory_policy)

    # As runc: the LSM labels, the user, the capabilities and no_new_privs are set before the
    # init waits for `start`, which then only releases the exec (and startContainer hooks, which
    # run as the process's user). A seccomp filter without no_new_privs is the exception: only
    # CAP_SYS_ADMIN may load it, so it would have to be loaded before the wait, and the init's
    # own accept, read and exec would run under it; everything waits for `start` instead.
    drop_early = seccomp_filter is None or bool(process.get("noNewPrivileges"))
    if drop_early:
        _become_process(process, labels, None)
    channel.send("ready")
    channel.close()
    if config.exec_at_once:
        start = -1
    else:
        start = _wait_for_start(config.listen_fd)
    try:
        plan.state["status"] = "created"
        hooks.run_hooks(spec, "startContainer", plan.state)
        if not drop_early:
            _become_process(process, labels, seccomp_filter)
        elif seccomp_filter is not None:
            seccomp_filter.load()  # with no_new_privs: as late as possible, just before exec
        exec_program(executable, process["args"], env, exec_trampoline)
    except BaseException as err:  # noqa: BLE001 - tell `capsa start` why, then give up
        if start >= 0:
            _report(Channel(start), err)
        posix._exit(127)


def enter_cwd(cwd: str) -> None:
    """chdir to process.cwd without ever leaving the container's root (CVE-2024-21626 class).

    The path is resolved inside "/" (the container's root by now) with RESOLVE_IN_ROOT and
    RESOLVE_NO_MAGICLINKS, so "/proc/self/fd/N" naming a directory fd this process still holds
    (capsa's own, or one leaked by the caller) cannot take the process out of it; then, as runc
    does since that CVE, getcwd() must still find the directory under the root.
    """
    root = rootfs.Rootfs("/")
    try:
        fd = root.open(cwd, posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
    except OSError as err:
        hint = " (a magic link such as /proc/self/fd/N cannot be the working directory)" if err.errno == ELOOP else ""
        raise ContainerStartError(f"process.cwd {cwd!r}: {posix.strerror(err.errno)}{hint}") from None
    finally:
        root.close()
    try:
        posix.fchdir(fd)
    finally:
        posix.close(fd)
    try:
        posix.getcwd()
    except FileNotFoundError:
        raise ContainerStartError(
            f"process.cwd {cwd!r}: the working directory is outside the container's root (possible breakout): refused"
        ) from None


def _new_session_keyring(container_id: str) -> None:
    try:
        linux.join_session_keyring(container_id)
    except OSError as err:
        if err.errno != ENOSYS:  # a kernel without keys: nothing to isolate
            raise ContainerStartError(f"cannot create a session keyring: {err.strerror}") from None


def _detached_source(channel: Channel) -> Any:
    """Ask the runtime for a bind source the init cannot reach (rootfs.mount_all)."""
    def ask(index: int) -> tuple[int, str]:
        channel.send("mountfd", str(index))
        return channel.receive_fd("mountfd")

    return ask


def _check_dev_null(fd: int) -> None:
    # Masked paths get the host's /dev/null bind-mounted over them: make sure it is the real one.
    info = posix.fstat(fd)
    if linux.file_type(info.st_mode) != linux.S_IFCHR or info.st_rdev != posix.makedev(1, 3):
        raise ContainerStartError("/dev/null on the host is not the null device")


def _has_hooks(spec: dict[str, Any], *phases: str) -> bool:
    all_hooks = spec.get("hooks") or {}
    return any(all_hooks.get(phase) for phase in phases)


def _propagation(name: str | None) -> int:
    return ROOTFS_PROPAGATION[name] if name else 0


def _setup_terminal(root: rootfs.Rootfs, console_fd: int, process: dict[str, Any], bind: bool = True) -> None:
    from capsa import console

    if console_fd is None or console_fd < 0:
        raise ContainerStartError("process.terminal is true but no console socket was given")
    ptmx = root.open("/dev/ptmx")
    try:
        master, slave, name = console.open_pty(ptmx)
    finally:
        posix.close(ptmx)
    console.set_size(master, process.get("consoleSize"))
    console.give_to_user(slave, (process.get("user") or {}).get("uid", 0))
    if bind:
        try:
            rootfs.bind_console(root, slave)
        except (OSError, CapsaError):
            pass  # a rootfs without /dev (no mount namespace) still gets the pty as stdio
    console.send_fd(console_fd, master, name)
    posix.close(master)
    posix.close(console_fd)
    console.make_controlling(slave)
    if slave > 2:
        posix.close(slave)


def _set_names(spec: dict[str, Any]) -> None:
    if spec.get("hostname"):
        linux.sethostname(spec["hostname"])
    if spec.get("domainname"):
        linux.setdomainname(spec["domainname"])


def _apply_sysctl(root: rootfs.Rootfs, checked_proc: int | None, sysctl: dict[str, str]) -> None:
    """Write each sysctl under the root of the container's procfs, found once and checked, and
    reached from there without a symlink or a mount crossing: a /proc swapped after it was
    mounted (CVE-2025-52881 class) cannot send a value to another file."""
    if not sysctl:
        return
    proc = posix.dup(checked_proc) if checked_proc is not None else rootfs.open_procfs_root(root, "linux.sysctl")
    resolve = linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_XDEV
    try:
        for key, value in sysctl.items():
            path = "sys/" + key.replace(".", "/")
            try:
                fd = linux.openat2(proc, path, posix.O_WRONLY, resolve)
                try:
                    posix.write(fd, value.encode())
                finally:
                    posix.close(fd)
            except OSError as err:
                raise ContainerStartError(f"linux.sysctl.{key}: cannot set {value!r}: {posix.strerror(err.errno)}") from None
    finally:
        posix.close(proc)


def _apply_rlimits(rlimits: list[dict[str, Any]]) -> None:
    for index, rlimit in enumerate(rlimits):
        soft = _rlim(rlimit["soft"], linux.RLIM_INFINITY)
        hard = _rlim(rlimit["hard"], linux.RLIM_INFINITY)
        try:
            linux.setrlimit(RLIMITS[rlimit["type"]], soft, hard)
        except OSError as err:
            raise ContainerStartError(
                f"process.rlimits[{index}]: cannot set {rlimit['type']} to {rlimit['soft']}:{rlimit['hard']}: "
                f"{err.strerror}"
            ) from None


def _rlim(value: int, infinity: int) -> int:
    return infinity if value >= 2**63 - 1 else value


def env_of(process: dict[str, Any]) -> dict[str, str]:
    """process.env as a dict (a later NAME wins)."""
    env: dict[str, str] = {}
    for entry in process.get("env") or ():
        key, _, value = entry.partition("=")
        env[key] = value
    return env


def _environment(process: dict[str, Any], listen_fds: int | None) -> dict[str, str]:
    env = env_of(process)
    if listen_fds is not None:
        # Socket activation passes through: the fds are 3.. and the process is the listener.
        env["LISTEN_FDS"] = str(listen_fds)
        env["LISTEN_PID"] = str(posix.getpid())
    if "HOME" not in env:
        env["HOME"] = _home_of((process.get("user") or {}).get("uid", 0))
    return env


def _home_of(uid: int) -> str:
    """HOME from the container's /etc/passwd, as runc sets it; "/" if the image has none."""
    # Inside the container's root and through no magic link: the image's /etc/passwd may be a
    # symlink to /proc/self/fd/N, and N may be a host fd this process still holds.
    root = rootfs.Rootfs("/")
    try:
        fd = root.open("/etc/passwd", posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
    except OSError:
        return "/"
    finally:
        root.close()
    try:
        if linux.file_type(posix.fstat(fd).st_mode) != linux.S_IFREG:
            return "/"
        data = posix.read(fd, 1 << 20)
    finally:
        posix.close(fd)
    return home_in_passwd(data, uid)


def home_in_passwd(data: bytes, uid: int) -> str:
    """The home directory of `uid` in an /etc/passwd's `data`; "/" if it has none."""
    for line in data.decode(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[2] == str(uid):
            return fields[5] or "/"
    return "/"


def find_executable(name: str, env: dict[str, str]) -> str:
    """Resolve args[0] in the container (PATH from process.env) so that create fails if it is missing."""
    if "/" in name:
        candidates = [name]
    else:
        candidates = [posixlite.join(d or ".", name) for d in env.get("PATH", DEFAULT_PATH).split(":")]
    for candidate in candidates:
        try:
            info = posix.stat(candidate)
        except OSError:
            continue
        if linux.file_type(info.st_mode) == linux.S_IFREG:
            if not posix.access(candidate, posix.X_OK):
                raise ContainerStartError(f'exec: "{name}": permission denied')
            return candidate
    if "/" in name:
        raise ContainerStartError(f'exec: "{name}": stat {name}: no such file or directory')
    raise ContainerStartError(f'exec: "{name}": executable file not found in $PATH')


def _prepare_fds(keep: int) -> None:
    """Only stdio and the preserved fds (3 .. 3+keep-1) may survive the exec (CVE-2024-21626 class)."""
    linux.close_range_cloexec(3 + keep)
    for fd in range(3, 3 + keep):
        try:
            posix.set_inheritable(fd, True)
        except OSError:
            pass


def _wait_for_start(listen_fd: int) -> int:
    """Block until `capsa start` connects to the start socket; return the connection."""
    listener = _socket.socket(fileno=listen_fd)
    while True:
        connection, _ = listener._accept()
        if posix.read(connection, 1) == b"S":
            break
        posix.close(connection)
    listener.close()
    return connection


def build_seccomp(profile: dict[str, Any] | None, cache_dir: str | None = None) -> Any:
    if not profile:
        return None
    from capsa.seccomp import shared_filter

    return shared_filter(profile, cache_dir)


def _prepare_listener(seccomp_filter: Any, fd: int | None, state: str) -> None:
    """A filter with SCMP_ACT_NOTIFY sends its notify fd and `state` to the listener at load."""
    if seccomp_filter is not None and seccomp_filter.notifies:
        seccomp_filter.set_listener(fd, state)


def _become_process(process: dict[str, Any], labels: Any, seccomp_filter: Any) -> None:
    """Everything that makes this process the container's process, but its exec."""
    if labels is not None:
        labels.apply()
    _become_process_user(process, seccomp_filter)
    _reset_signals()


def _become_process_user(process: dict[str, Any], seccomp_filter: Any = None) -> None:
    capabilities = process.get("capabilities")
    no_new_privs = process.get("noNewPrivileges")
    if seccomp_filter is not None and not no_new_privs:
        # Without no_new_privs only CAP_SYS_ADMIN may load a filter: load it before the drop.
        seccomp_filter.load()
    caps.drop_bounding(capabilities)
    caps.switch_user(process.get("user") or {})
    caps.apply_sets(capabilities)
    if no_new_privs:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
        if seccomp_filter is not None:
            seccomp_filter.load()  # as late as possible: the runtime's own setup stays unfiltered
    umask = (process.get("user") or {}).get("umask")
    posix.umask(0o022 if umask is None else umask)


def _reset_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ and handles SIGINT: the user's program must get defaults.
    Only those not at their default are reset: Python's own record of every disposition (no system
    call; read from the kernel at its start for those it never set) says which; the ~60 others
    would each cost an rt_sigaction for nothing."""
    for number in range(1, _signal.NSIG):
        if number in (_signal.SIGKILL, _signal.SIGSTOP):
            continue
        try:
            if _signal.getsignal(number) is not _signal.SIG_DFL:  # SIG_IGN, a handler, or None (not Python's)
                _signal.signal(number, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])


# -- process.scheduler, process.ioPriority, linux.memoryPolicy -------------------------------------
def apply_scheduling(process: dict[str, Any], memory_policy: dict[str, Any] | None) -> None:
    """The process's scheduling policy, I/O priority and NUMA memory policy, as runc sets them:
    in the process itself, once set up and before it drops its privileges (real-time classes
    need CAP_SYS_NICE); exec and fork keep all three."""
    if process.get("scheduler"):
        _set_scheduler(process["scheduler"])
    if process.get("ioPriority"):
        _set_io_priority(process["ioPriority"])
    if memory_policy:
        _set_memory_policy(memory_policy)


def _set_scheduler(scheduler: dict[str, Any]) -> None:
    from capsa.spec import SCHED_FLAGS, SCHED_POLICIES

    policy = scheduler["policy"]
    flags = 0
    for name in scheduler.get("flags") or ():
        flags |= SCHED_FLAGS[name]
    try:
        linux.sched_setattr(SCHED_POLICIES[policy], flags, scheduler.get("nice") or 0, scheduler.get("priority") or 0,
                            scheduler.get("runtime") or 0, scheduler.get("deadline") or 0, scheduler.get("period") or 0)
    except OSError as err:
        raise ContainerStartError(f"process.scheduler: the kernel refused {policy}: {posix.strerror(err.errno)}"
                                  f"{_scheduler_hint(policy, err.errno)}") from None


def _scheduler_hint(policy: str, error: int) -> str:
    """Why sched_setattr(2) says no, in the terms of config.json."""
    if error == EPERM:
        hints = []
        if _in_user_namespace():
            hints.append("in a user namespace the container lacks CAP_SYS_NICE over the host's scheduler, which "
                         "real-time and deadline policies and a lower nice value need")
        if policy in ("SCHED_FIFO", "SCHED_RR"):
            hints.append("with real-time group scheduling (cgroup v1) the container's cpu cgroup needs a real-time "
                         "budget: linux.resources.cpu.realtimeRuntime")
        if policy == "SCHED_DEADLINE":
            hints.append("SCHED_DEADLINE needs every CPU of its scheduling domain allowed (no linux.resources.cpu.cpus "
                         "restriction)")
        return f" ({'; '.join(hints)})" if hints else ""
    if error == EINVAL and policy == "SCHED_ISO":
        return " (Linux does not implement SCHED_ISO)"
    if error == EINVAL and policy == "SCHED_DEADLINE":
        return " (the period must lie within the sysctls kernel.sched_deadline_period_min_us and _max_us)"
    if error == EBUSY:
        return " (admission control: the CPUs have no deadline bandwidth left for runtime/period)"
    if error == EOPNOTSUPP:
        return " (SCHED_FLAG_UTIL_CLAMP_*: this kernel has no utilization clamping, CONFIG_UCLAMP_TASK)"
    return ""


def _set_io_priority(io_priority: dict[str, Any]) -> None:
    from capsa.spec import IOPRIO_CLASSES

    value = IOPRIO_CLASSES[io_priority["class"]] << linux.IOPRIO_CLASS_SHIFT | io_priority["priority"]
    try:
        # The process group, as runc (setsid made this process its only member so far).
        linux.ioprio_set(linux.IOPRIO_WHO_PGRP, 0, value)
    except OSError as err:
        hint = ""
        if err.errno == EPERM:
            hint = " (IOPRIO_CLASS_RT needs CAP_SYS_ADMIN or CAP_SYS_NICE over the host" + (
                ", which a container in a user namespace lacks)" if _in_user_namespace() else ")")
        raise ContainerStartError(f"process.ioPriority: the kernel refused {io_priority['class']} "
                                  f"{io_priority['priority']}: {posix.strerror(err.errno)}{hint}") from None


def _set_memory_policy(policy: dict[str, Any]) -> None:
    from capsa.spec import MEMORY_POLICY_FLAGS, MEMORY_POLICY_MODES, parse_node_list

    mode = MEMORY_POLICY_MODES[policy["mode"]]
    for name in policy.get("flags") or ():
        mode |= MEMORY_POLICY_FLAGS[name]
    nodes = policy.get("nodes") or ""
    try:
        linux.set_mempolicy(mode, parse_node_list(nodes, "linux.memoryPolicy.nodes"))
    except OSError as err:
        if err.errno == ENOSYS:
            hint = " (this kernel has no NUMA support, CONFIG_NUMA)"
        elif err.errno == EINVAL:
            hint = f" ({_memory_policy_hint(policy)})"
        else:
            hint = ""
        raise ContainerStartError(f"linux.memoryPolicy: the kernel refused {policy['mode']} on nodes {nodes!r}: "
                                  f"{posix.strerror(err.errno)}{hint}") from None


def _memory_policy_hint(policy: dict[str, Any]) -> str:
    """Why set_mempolicy(2) says EINVAL to a policy that passed validation."""
    hints = []
    if policy.get("nodes"):
        hints.append(f"the nodes must include a memory node this container may use ({_allowed_memory_nodes()})")
    since = {"MPOL_PREFERRED_MANY": "5.15", "MPOL_WEIGHTED_INTERLEAVE": "6.9"}.get(policy["mode"])
    if since:
        hints.append(f"{policy['mode']} needs Linux {since}")
    if "MPOL_F_NUMA_BALANCING" in (policy.get("flags") or ()):
        hints.append("MPOL_F_NUMA_BALANCING goes with MPOL_BIND (and, on recent kernels, MPOL_PREFERRED_MANY)")
    return "; ".join(hints) or "the kernel refused the mode with these flags"


def _allowed_memory_nodes() -> str:
    """Mems_allowed_list of this process (its cpuset's memory nodes), as /proc shows it, if it can."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Mems_allowed_list:"):
                    return "allowed here: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "see Mems_allowed_list in /proc/PID/status"


def _in_user_namespace() -> bool:
    from capsa.procfs import in_user_namespace

    return in_user_namespace()
