"""capsa's Python API: run untrusted code in an isolated sandbox from a Python program.

    import capsa
    r = capsa.run(["python3", "-c", "print(1)"], rootfs=capsa.HostTools(), timeout=5, memory="256M")
    with capsa.Sandbox(rootfs=capsa.HostTools(), memory="256M") as sb:
        sb.write_file("/work/main.py", b"print(2)")
        r = sb.run(["python3", "/work/main.py"], timeout=2)
    with capsa.Pool(4, rootfs=capsa.HostTools()) as pool:
        r = pool.run(["python3", "-c", "print(3)"], timeout=2)     # or: await pool.arun([...])

Each run is a fresh container (capsa.container.Container) made from a spec built here with the
safe defaults (see build_spec and docs/api.md): a new user namespace mapping root inside to an
unprivileged host range, a network namespace with loopback only, no capabilities, no_new_privs,
a seccomp profile, a read-only root with runc's masked paths, cgroup limits, and a scratch /work
and /tmp that are empty at the start of a run (a Sandbox keeps /work across its runs; a Pool
makes its sandboxes ahead and uses each for one run).

The API is a library over the runtime's library: it never calls the CLI. It is loaded lazily
(capsa.__getattr__), so the runtime's own start-up does not pay for it.
"""

from __future__ import annotations

import itertools
import os
import selectors
import threading
import time
from dataclasses import dataclass

from capsa.api_errors import (
    InvalidArgumentError,
    RootfsError,
    SandboxClosedError,
    SandboxError,
    SandboxStartError,
)
from capsa.api_rootfs import API_DIR, HostTools, Rootfs, resolve
from capsa.errors import CapsaError

__all__ = [
    "run", "arun", "Sandbox", "Stream", "Pool", "Result", "HostTools", "SandboxError", "InvalidArgumentError", "RootfsError",
    "SandboxStartError", "SandboxClosedError", "parse_size",
]

STATE_ROOT = API_DIR + "/state"
SANDBOX_DIR = API_DIR + "/sandboxes"
# Root inside a sandbox is this host uid (and gid), the next 65535 ids follow: ids no host user
# has, so a process that escapes its namespaces owns nothing of the host. /etc/subuid's entry
# for "capsa" takes precedence.
DEFAULT_HOST_ID = 1_300_000_000
ID_RANGE = 65536
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_OUTPUT_LIMIT = 16 * 1024 * 1024
DEFAULT_SCRATCH = 64 * 1024 * 1024
# After the init exits the kernel kills the rest of its pid namespace; the pipes reach EOF soon.
DRAIN_GRACE = 5.0
_MS_NOSUID, _MS_NODEV = 2, 4

# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """How a run ended. exit_code is the shell's number (128 + signal when killed by one)."""

    stdout: bytes
    stderr: bytes
    exit_code: int
    signal: int | None
    timed_out: bool
    oom_killed: bool
    output_truncated: bool
    wall_time: float  # seconds, from start to exit
    cpu_time: float  # seconds of CPU used by every process of the run (cgroup accounting)
    peak_memory: int  # bytes, the run's cgroup high-water mark (0 if unknown)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.oom_killed or self.output_truncated)


# -- arguments ----------------------------------------------------------------------------------

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
          "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}


def parse_size(value, name: str = "size") -> int:
    """Bytes from an int or a string such as "256M", "1.5G", "64KiB" (binary units)."""
    if isinstance(value, bool):
        raise InvalidArgumentError(name, f"expected a size (bytes or a string like '256M'), not {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip().upper()
        digits = text.rstrip("KMGIB")
        unit = text[len(digits):]
        try:
            number = int(float(digits) * _UNITS[unit])
        except (ValueError, KeyError):
            raise InvalidArgumentError(name, f"cannot read {value!r} as a size (bytes or a string like '256M')") from None
    else:
        raise InvalidArgumentError(name, f"expected a size (bytes or a string like '256M'), not {type(value).__name__}")
    if number <= 0:
        raise InvalidArgumentError(name, f"must be positive, not {value!r}")
    return number


def _positive(value, name: str, kind=float):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidArgumentError(name, f"must be a positive number, not {value!r}")
    if kind is int and int(value) != value:
        raise InvalidArgumentError(name, f"must be a whole number, not {value!r}")
    return kind(value)


@dataclass(frozen=True)
class Limits:
    memory: int | None = None  # bytes (memory cgroup); the OOM killer ends a run above it
    cpus: float | None = None  # CPU quota in CPUs (1.5: one and a half CPUs' time per period)
    pids: int | None = None  # processes and threads at once
    cpu_time: int | None = None  # seconds of CPU per process (RLIMIT_CPU)
    file_size: int | None = None  # bytes per file written (RLIMIT_FSIZE)
    scratch: int = DEFAULT_SCRATCH  # bytes of /work and of /tmp (tmpfs size)
    network: bool = False

    @classmethod
    def from_arguments(cls, memory=None, cpus=None, pids=None, cpu_time=None, file_size=None, scratch=None,
                       network=False) -> Limits:
        if network not in (False, True):
            raise InvalidArgumentError("network", f"must be False or True, not {network!r}")
        if network:
            raise InvalidArgumentError("network", "network=True is not implemented yet: sandboxes have loopback only")
        return cls(
            memory=None if memory is None else parse_size(memory, "memory"),
            cpus=_positive(cpus, "cpus"),
            pids=_positive(pids, "pids", int),
            cpu_time=None if cpu_time is None else max(1, int(-(-_positive(cpu_time, "cpu_time") // 1))),
            file_size=None if file_size is None else parse_size(file_size, "file_size"),
            scratch=DEFAULT_SCRATCH if scratch is None else parse_size(scratch, "scratch"),
            network=network,
        )


def _check_argv(argv) -> list[str]:
    if isinstance(argv, (str, bytes)) or not isinstance(argv, (list, tuple)) or not argv:
        raise InvalidArgumentError("argv", f"expected a non-empty list of strings, not {argv!r}")
    if not all(isinstance(a, str) and "\0" not in a for a in argv):
        raise InvalidArgumentError("argv", "every argument must be a string without NUL")
    return list(argv)


def _check_env(env) -> list[str]:
    if env is None:
        return [PATH]
    if not isinstance(env, dict):
        raise InvalidArgumentError("env", f"expected a dict of strings, not {type(env).__name__}")
    result = [PATH] if "PATH" not in env else []
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key or not isinstance(value, str) or "\0" in value:
            raise InvalidArgumentError("env", f"bad entry {key!r}: names are non-empty strings without '=', values strings")
        result.append(f"{key}={value}")
    return result


def _check_cwd(cwd) -> str:
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise InvalidArgumentError("cwd", f"must be an absolute path inside the sandbox, not {cwd!r}")
    return cwd


def _check_stdin(stdin) -> bytes | None:
    if stdin is None:
        return None
    if isinstance(stdin, str):
        return stdin.encode()
    if isinstance(stdin, (bytes, bytearray, memoryview)):
        return bytes(stdin)
    raise InvalidArgumentError("stdin", f"expected bytes or str, not {type(stdin).__name__}")


def _check_timeout(timeout) -> float | None:
    return _positive(timeout, "timeout")


def _check_output_limit(limit) -> int:
    return DEFAULT_OUTPUT_LIMIT if limit is None else parse_size(limit, "output_limit")


# -- the spec -----------------------------------------------------------------------------------


def host_id_range() -> int:
    """The first host id root inside a sandbox maps to: /etc/subuid's range for "capsa" (if it
    has ID_RANGE ids), else DEFAULT_HOST_ID."""
    try:
        with open("/etc/subuid") as f:
            for line in f:
                name, _, rest = line.strip().partition(":")
                start, _, count = rest.partition(":")
                if name == "capsa" and start.isdigit() and count.isdigit() and int(count) >= ID_RANGE:
                    return int(start)
    except OSError:
        pass
    return DEFAULT_HOST_ID


# A blocklist (default allow): the syscalls Docker's and podman's default profile refuse to a
# container without capabilities, plus namespace creation (a new user namespace would hand the
# process every capability over a fresh set of kernel code). Refused with EPERM; clone3 with
# ENOSYS so that libc falls back to clone, whose flags the filter can see, as Docker does.
_DENIED_SYSCALLS = [
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module", "finit_module",
    "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "get_mempolicy", "init_module", "ioperm", "iopl",
    "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount", "mount_setattr",
    "move_mount", "move_pages", "name_to_handle_at", "nfsservctl", "open_by_handle_at", "open_tree",
    "perf_event_open", "personality", "pivot_root", "process_vm_readv", "process_vm_writev", "ptrace",
    "query_module", "quotactl", "quotactl_fd", "reboot", "request_key", "set_mempolicy", "setns", "settimeofday",
    "stime", "swapoff", "swapon", "sysfs", "syslog", "_sysctl", "umount", "umount2", "unshare", "uselib",
    "userfaultfd", "ustat", "vm86", "vm86old", "fanotify_init", "pidfd_getfd",
]
_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)


def default_seccomp() -> dict:
    clone_rules = [{"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                    "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]}
                   for flag in _NAMESPACE_FLAGS]
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": [
            {"names": list(_DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            *clone_rules,
        ],
    }


def can_limit_swap() -> bool:
    """The host accounts swap (v1: memory.memsw files; v2: memory.swap.max, where capsa accepts
    "no swap" even without accounting)."""
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers") or os.path.exists(
        "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")


def build_spec(argv: list[str], rootfs: Rootfs, limits: Limits, env: list[str], cwd: str,
               work_source: str | None = None) -> dict:
    """The OCI spec of one run: runc's default config made stricter (see the module's doc).

    work_source: a host directory to bind at /work (a Sandbox's, kept across runs); without it
    /work is a fresh tmpfs."""
    from capsa.specgen import default_spec

    spec = default_spec(cgroup_namespace=False)
    host_id = host_id_range()
    process = spec["process"]
    process.update(terminal=False, args=argv, env=env, cwd=cwd, noNewPrivileges=True,
                   capabilities={kind: [] for kind in ("bounding", "effective", "permitted", "ambient", "inheritable")})
    rlimits = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}, {"type": "RLIMIT_CORE", "hard": 0, "soft": 0}]
    if limits.cpu_time:
        # The soft limit sends SIGXCPU, the hard one a second later SIGKILL.
        rlimits.append({"type": "RLIMIT_CPU", "soft": limits.cpu_time, "hard": limits.cpu_time + 1})
    if limits.file_size:
        rlimits.append({"type": "RLIMIT_FSIZE", "soft": limits.file_size, "hard": limits.file_size})
    process["rlimits"] = rlimits
    spec["root"] = {"path": rootfs.path, "readonly": True}
    spec["hostname"] = "sandbox"
    scratch = ["nosuid", "nodev", "mode=1777", f"size={limits.scratch}"]
    mounts = [m for m in spec["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    mounts += rootfs.mounts
    mounts.append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": list(scratch)})
    if work_source:
        mounts.append({"destination": "/work", "type": "bind", "source": work_source,
                       "options": ["rbind", "rw", "nosuid", "nodev"]})
    else:
        mounts.append({"destination": "/work", "type": "tmpfs", "source": "tmpfs", "options": list(scratch)})
    spec["mounts"] = mounts
    linux = spec["linux"]
    linux["namespaces"] = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "user")]
    linux["uidMappings"] = [{"containerID": 0, "hostID": host_id, "size": ID_RANGE}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": host_id, "size": ID_RANGE}]
    linux["maskedPaths"] = linux["maskedPaths"] + ["/proc/kallsyms", "/sys/devices/virtual/powercap"]
    linux["seccomp"] = default_seccomp()
    resources = linux.setdefault("resources", {})
    if limits.memory:
        resources["memory"] = {"limit": limits.memory}
        if can_limit_swap():
            resources["memory"]["swap"] = limits.memory  # memory + swap: no swap, so the OOM killer acts
    if limits.cpus:
        resources["cpu"] = {"quota": int(limits.cpus * 100_000), "period": 100_000}
    if limits.pids:
        resources["pids"] = {"limit": limits.pids}
    return spec


# -- running one container ----------------------------------------------------------------------

_counter = itertools.count()
_setup_lock = threading.Lock()
_set_up = False


def _setup() -> None:
    """Once per program: load the runtime's modules, be a subreaper (the container's init is
    re-parented to us, so its exit status is ours to learn), clean what programs using the API
    left when they died, and start this program's guard (capsa.api_guard)."""
    global _set_up
    with _setup_lock:
        if _set_up:
            return
        if os.geteuid() != 0:
            raise SandboxStartError("capsa's Python API runs as root for now (rootless sandboxes are not done yet)")
        from capsa import process

        _preload()
        os.makedirs(STATE_ROOT, mode=0o700, exist_ok=True)
        os.makedirs(SANDBOX_DIR, mode=0o711, exist_ok=True)
        process.become_subreaper()
        clean_leftovers()
        _start_guard()
        _set_up = True


_guard_pipe: int | None = None


def _start_guard() -> None:
    """capsa.api_guard: deletes this program's sandboxes once it is gone, however it ends. It
    holds the read end of a pipe whose write end only this program has (close-on-exec; a child
    this program forks without exec holds it too, and delays the clean-up until it ends)."""
    global _guard_pipe
    import subprocess
    import sys

    import capsa

    read_end, write_end = os.pipe()
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(capsa.__file__)))
    code = f"import sys; sys.path.insert(0, {package_parent!r}); from capsa.api_guard import main; sys.exit(main())"
    try:
        subprocess.Popen([sys.executable, "-I", "-c", code], stdin=read_end, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    finally:
        os.close(read_end)
    _guard_pipe = write_end


# What creating and exec'ing import: loaded here once, not in each forked child (_with_stdio) anew.
_RUNTIME_MODULES = (
    "capsa.container", "capsa.create", "capsa.launch", "capsa.init", "capsa.rootless", "capsa.spec", "capsa.cgroups",
    "capsa.cgroups.v1", "capsa.cgroups.v1_resources", "capsa.cgroups.v2", "capsa.cgroups.v2_resources",
    "capsa.rootfs", "capsa.caps", "capsa.seccomp", "capsa.bpf", "capsa.lsm", "capsa.idmap", "capsa.mountopts",
    "capsa.procfs", "capsa.process", "capsa.syncpipe", "capsa.trampoline", "capsa.hooks",
)


def _preload() -> None:
    import importlib

    for name in _RUNTIME_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # a module a later version renamed: then the child imports what it needs
            pass


def _owner_alive(name: str) -> bool:
    """Names of what the API makes start with the maker's pid: api-<pid>-<n>, <pid>-<n>."""
    pid = name.removeprefix("api-").split("-", 1)[0]
    if not pid.isdigit():
        return True
    return int(pid) == os.getpid() or os.path.exists(f"/proc/{pid}")


def clean_leftovers() -> None:
    """Delete the containers and sandbox directories of API users that are gone (crashed)."""
    from capsa.container import Container

    for container in Container.list(STATE_ROOT, warn=lambda message: None):
        if not _owner_alive(container.id):
            try:
                container.delete(force=True)
            except CapsaError:
                pass
    for name in os.listdir(SANDBOX_DIR) if os.path.isdir(SANDBOX_DIR) else []:
        if not _owner_alive(name):
            _remove_scratch(os.path.join(SANDBOX_DIR, name))


def _new_id() -> str:
    return f"api-{os.getpid()}-{next(_counter)}"


def _stdin_fd(data: bytes | None) -> int:
    if not data:
        return os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    fd = os.memfd_create("capsa-stdin", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _release_state_locks() -> None:
    """In _with_stdio's child: close our copies of the state root's lock files. flock belongs to
    the open file, which the fork shared: a lock another thread of ours held at the fork would
    otherwise stay held, after that thread let it go, until the child ends."""
    prefix = STATE_ROOT + "/"
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith(prefix):
                os.close(int(name))
        except OSError:
            pass


def _reap_children(timeout: float = 2.0) -> None:
    """In _with_stdio's child, after a failure: wait for every child it has (all of them were
    started by the failed call), for `timeout` seconds at most."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.002)


def _create(spec: dict, stdin: int, stdout: int, stderr: int):
    """Container.create, the init's fds 0-2 being stdin, stdout and stderr (see _with_stdio)."""
    from capsa.container import Container

    container_id = _new_id()
    _with_stdio(lambda: Container.create(STATE_ROOT, container_id, API_DIR, spec=spec, rootless_cgroups=False).id,
                stdin, stdout, stderr)
    return Container.load(STATE_ROOT, container_id)


def _with_stdio(call, stdin: int, stdout: int, stderr: int) -> str:
    """call() (which returns a str) in a forked child of ours whose fds 0-2 are the run's.

    A container's init and an exec'd process inherit their creator's fds 0-2, as runc's do. Doing
    that here would point this program's own stdio at the run for a while, under every thread of
    it; the child points its own. What the child starts is forked by an intermediate process that
    exits; the child is a subreaper while it lives, then that process is re-parented to us (a
    subreaper too). When the call fails, the child reaps what it started (a failed exec's process:
    left a zombie of ours, it would keep its container's init from dying). A CapsaError (or any
    other) in the child comes back as a SandboxStartError with its message."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.close(read_end)
            _release_state_locks()
            for target, fd in enumerate((stdin, stdout, stderr)):
                os.dup2(fd, target)
            from capsa import process

            process.become_subreaper()
            message = "ok:" + call()
        except BaseException as err:
            message = "error:" + (str(err) or type(err).__name__)
            _reap_children()
        finally:
            try:
                view = memoryview(message.encode())
                while view:
                    view = view[os.write(write_end, view):]
            finally:
                os._exit(0)
    os.close(write_end)
    # Wait for the child, then read: what it started may hold a copy of write_end for a while
    # (until it closes the fds it does not keep), so EOF would come late. The message is small
    # enough for the pipe's buffer.
    try:
        os.waitpid(pid, 0)
        os.set_blocking(read_end, False)
        chunks = []
        try:
            while chunk := os.read(read_end, 65536):
                chunks.append(chunk)
        except BlockingIOError:
            pass
    finally:
        os.close(read_end)
    kind, _, value = b"".join(chunks).decode(errors="replace").partition(":")
    if kind != "ok":
        raise SandboxStartError(value or "the sandbox's creator died")
    return value


class _Output:
    """Collects one pipe up to a shared cap; past it the pipe is closed (the writer gets EPIPE)."""

    def __init__(self, name: str, fd: int, budget: list[int]):
        self.name, self.fd, self.budget, self.chunks, self.truncated = name, fd, budget, [], False
        self.done = False

    def read(self) -> bytes:
        """Read what is there and return what is kept of it. At EOF, or once truncated, it is
        done: the caller closes the pipe, so that a writer that goes on gets EPIPE (SIGPIPE) rather than blocking
        until the timeout."""
        data = os.read(self.fd, 65536)
        if len(data) > self.budget[0]:
            data = data[: self.budget[0]]
            self.truncated = True
        self.done = not data or self.truncated
        self.budget[0] -= len(data)
        if data:
            self.chunks.append(data)
        return data


    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def value(self) -> bytes:
        return b"".join(self.chunks)


def run_spec(spec: dict, stdin: bytes | None, timeout: float | None, output_limit: int) -> Result:
    """Create, start, supervise and delete one container; the Result of its run."""
    events = run_events(spec, stdin, timeout, output_limit)
    while True:
        try:
            next(events)
        except StopIteration as done:
            return done.value


def run_events(spec: dict, stdin: bytes | None, timeout: float | None, output_limit: int):
    """A generator of one run: yields ("stdout" | "stderr", bytes) as the run writes, returns
    its Result. Closed early (the consumer stops), it kills the run and deletes its container."""
    _setup()
    stdin_fd = _stdin_fd(stdin)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    container = None
    supervised = False
    try:
        try:
            container = _create(spec, stdin_fd, out_w, err_w)
        except SandboxStartError as err:
            raise SandboxStartError(f"cannot create the sandbox: {err}") from None
        finally:
            for fd in (stdin_fd, out_w, err_w):
                os.close(fd)
        try:
            container.start()
        except CapsaError as err:
            raise SandboxStartError(f"cannot start the sandbox: {err}") from err
        supervised = True
        return (yield from _supervise(container, out_r, err_r, timeout, output_limit))  # closes out_r, err_r
    finally:
        if not supervised:
            os.close(out_r)
            os.close(err_r)
        if container is not None:
            container.delete(force=True)


def _supervise(container, out_r: int, err_r: int, timeout: float | None, output_limit: int) -> Result:
    """The run of the container's init (started): a generator, see run_events."""
    started = time.monotonic()
    budget = [output_limit]
    outputs = {out_r: _Output("stdout", out_r, budget), err_r: _Output("stderr", err_r, budget)}
    try:
        timed_out, ended = yield from _collect(container, outputs, None if timeout is None else started + timeout)
    finally:
        for output in outputs.values():
            output.close()
    from capsa.process import oom_kill_count

    # The init's own handle, not container.wait(): the container is deleted next, so recording
    # the exit in its state (under its lock) would be wasted.
    status = container.init_process().wait(timeout=30)
    oom_killed = oom_kill_count(container.cgroup()) > 0
    cpu_time, peak_memory = _usage(container)
    return Result(
        stdout=outputs[out_r].value(), stderr=outputs[err_r].value(),
        exit_code=status.exit_code if status.known else -1, signal=status.signal, timed_out=timed_out,
        oom_killed=oom_killed,
        output_truncated=any(o.truncated for o in outputs.values()),
        wall_time=ended - started, cpu_time=cpu_time, peak_memory=peak_memory,
    )


def _collect(container, outputs: dict[int, _Output], deadline: float | None) -> tuple[bool, float]:
    """Read the run's output until its init has exited and the pipes are at EOF; kill the whole
    run at the deadline, or if its pipes stay open DRAIN_GRACE seconds after the init exited
    (a process that left the pid namespace's reach cannot exist, but no wait is unbounded).
    Returns (timed out, when the init exited)."""
    main = container.init_process()
    timed_out = killed = False
    ended = None
    with selectors.DefaultSelector() as selector:
        for fd in outputs:
            selector.register(fd, selectors.EVENT_READ)
        selector.register(main.fileno(), selectors.EVENT_READ)
        while len(selector.get_map()):
            now = time.monotonic()
            limit = deadline if ended is None else ended + DRAIN_GRACE
            if limit is not None and now >= limit:
                if killed:
                    break  # killed and still not at EOF: give up on what is left unread
                timed_out, killed = ended is None, True
                _kill_all(container)
                deadline, ended = None, ended or now
                limit = now + DRAIN_GRACE
            for key, _ in selector.select(None if limit is None else max(0.0, limit - now)):
                if key.fd == main.fileno():
                    selector.unregister(key.fd)
                    ended = ended or time.monotonic()
                else:
                    output = outputs[key.fd]
                    data = output.read()
                    if output.done:
                        selector.unregister(key.fd)
                        output.close()
                    if data:
                        yield output.name, data
    return timed_out, ended if ended is not None else time.monotonic()


def _kill_all(container) -> None:
    """Every process of the run, frozen first so that none forks away (the cgroup's kill)."""
    cgroup = container.cgroup()
    if cgroup is not None:
        cgroup.kill_all(9)
    try:
        os.kill(container.pid, 9)
    except ProcessLookupError:
        pass


def _usage(container) -> tuple[float, int]:
    from capsa.cgroups import stats

    cgroup = container.cgroup()
    if cgroup is None:
        return 0.0, 0
    try:
        data = stats(cgroup)
    except OSError:
        return 0.0, 0
    cpu = ((data.get("cpu") or {}).get("usage") or {}).get("total") or 0
    memory = ((data.get("memory") or {}).get("usage") or {}).get("max") or 0
    return cpu / 1e9, memory


# -- public entry points ------------------------------------------------------------------------


def run(argv, *, rootfs, timeout=None, memory=None, cpus=None, pids=None, network=False, stdin=None, env=None,
        cwd="/work", output_limit=None, cpu_time=None, file_size=None, scratch=None) -> Result:
    """Run argv in a fresh sandbox and return its Result; see docs/api.md.

    rootfs: a root directory, an OCI bundle or capsa.HostTools(). timeout: seconds of wall time,
    after which every process of the run is killed (timed_out). memory, file_size, scratch,
    output_limit: sizes (bytes or "256M"). cpus: CPU quota. pids: processes at once. cpu_time:
    seconds of CPU per process. env: the whole environment (PATH added if missing); nothing of
    the caller's leaks in. stdin: bytes given on standard input."""
    argv = _check_argv(argv)
    limits = Limits.from_arguments(memory, cpus, pids, cpu_time, file_size, scratch, network)
    env_list, cwd = _check_env(env), _check_cwd(cwd)
    stdin, timeout, output_limit = _check_stdin(stdin), _check_timeout(timeout), _check_output_limit(output_limit)
    spec = build_spec(argv, resolve(rootfs), limits, env_list, cwd)
    return run_spec(spec, stdin, timeout, output_limit)


async def arun(argv, **options) -> Result:
    """run() for asyncio: the run is supervised in a thread of the loop's default executor, so
    that many runs go on at once (their creations take turns; see docs/api.md)."""
    import asyncio

    return await asyncio.to_thread(run, argv, **options)


class Stream:
    """The output of a run as it comes (Sandbox.stream): iterate for ("stdout" | "stderr", bytes);
    then .result is its Result. A context manager: leaving it (or close()) kills an unfinished run."""

    def __init__(self, events):
        self._events = events
        self.result: Result | None = None

    def __iter__(self):
        return self

    def __next__(self) -> tuple[str, bytes]:
        if self.result is not None:
            raise StopIteration
        try:
            return next(self._events)
        except StopIteration as done:
            self.result = done.value
            raise StopIteration from None

    def close(self) -> None:
        self._events.close()  # GeneratorExit in the run: its container is killed and deleted

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Sandbox:
    """A sandbox whose /work persists across its runs; each run is otherwise fresh (new
    processes, /tmp, IPC, network namespace). A context manager; close() removes /work.

    write_file/read_file reach /work only, resolved inside it (a symlink a run planted cannot
    lead them out)."""

    def __init__(self, *, rootfs, memory=None, cpus=None, pids=None, network=False, timeout=None, scratch=None,
                 cpu_time=None, file_size=None, output_limit=None, env=None):
        self._limits = Limits.from_arguments(memory, cpus, pids, cpu_time, file_size, scratch, network)
        self._timeout = _check_timeout(timeout)
        self._output_limit = _check_output_limit(output_limit)
        self._env = env
        _check_env(env)
        self._rootfs = resolve(rootfs)
        _setup()
        self._lock = threading.Lock()
        self._work = _make_scratch(self._limits.scratch)
        self._closed = False

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                _remove_scratch(os.path.dirname(self._work))

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxClosedError("the sandbox is closed")

    def run(self, argv, *, stdin=None, timeout=None, cwd="/work", env=None, output_limit=None) -> Result:
        """Run argv in the sandbox (a fresh container over this sandbox's /work)."""
        return run_spec(*self._prepare(argv, stdin, timeout, cwd, env, output_limit))

    async def arun(self, argv, **options) -> Result:
        """run() for asyncio: the run is supervised in a thread of the loop's default executor."""
        import asyncio

        return await asyncio.to_thread(self.run, argv, **options)

    def stream(self, argv, *, stdin=None, timeout=None, cwd="/work", env=None, output_limit=None) -> Stream:
        """Run argv, giving its output as it comes: iterate the returned Stream for
        ("stdout" | "stderr", bytes) pairs; its .result is the Result once the iteration ends.
        Leaving the iteration early (or closing the Stream) kills the run."""
        return Stream(run_events(*self._prepare(argv, stdin, timeout, cwd, env, output_limit)))

    def _prepare(self, argv, stdin, timeout, cwd, env, output_limit) -> tuple:
        self._check_open()
        argv = _check_argv(argv)
        env_list = _check_env(self._env if env is None else env)
        cwd = _check_cwd(cwd)
        stdin = _check_stdin(stdin)
        timeout = self._timeout if timeout is None else _check_timeout(timeout)
        output_limit = self._output_limit if output_limit is None else _check_output_limit(output_limit)
        spec = build_spec(argv, self._rootfs, self._limits, env_list, cwd, work_source=self._work)
        return spec, stdin, timeout, output_limit

    def write_file(self, path: str, data, mode: int = 0o644) -> None:
        """Write data (bytes or str) to path under /work, owned by the sandbox's root."""
        self._check_open()
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError("data", f"expected bytes or str, not {type(data).__name__}")
        fd = self._open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchown(fd, host_id_range(), host_id_range())
        finally:
            os.close(fd)

    def read_file(self, path: str) -> bytes:
        """The content of path under /work."""
        self._check_open()
        fd = self._open(path, os.O_RDONLY)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _open(self, path: str, flags: int, mode: int = 0) -> int:
        from capsa import linux

        if not isinstance(path, str) or not (path == "/work" or path.startswith("/work/")):
            raise InvalidArgumentError("path", f"must be a path under /work, not {path!r}")
        relative = path[len("/work"):].lstrip("/")
        if not relative:
            raise InvalidArgumentError("path", "names /work itself, not a file in it")
        root = os.open(self._work, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return linux.openat2(root, relative, flags | os.O_CLOEXEC | os.O_NOFOLLOW,
                                 linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS, mode)
        except FileNotFoundError:
            raise SandboxError(f"{path}: no such file in the sandbox") from None
        except OSError as err:
            raise SandboxError(f"{path}: {err.strerror}") from None
        finally:
            os.close(root)


def _make_scratch(size: int) -> str:
    """A tmpfs of `size` bytes for a Sandbox's /work, owned by the sandbox's root."""
    from capsa import linux

    host_id = host_id_range()
    directory = os.path.join(SANDBOX_DIR, f"{os.getpid()}-{next(_counter)}")
    work = os.path.join(directory, "work")
    os.makedirs(work, mode=0o755)
    try:
        linux.mount("tmpfs", work, "tmpfs", _MS_NOSUID | _MS_NODEV,
                    f"size={size},mode=0755,uid={host_id},gid={host_id}")
    except BaseException:
        _remove_scratch(directory)
        raise
    return work


def _remove_scratch(directory: str) -> None:
    import shutil

    from capsa import linux

    try:
        linux.umount2(os.path.join(directory, "work"), linux.MNT_DETACH)
    except OSError:
        pass
    shutil.rmtree(directory, ignore_errors=True)


# -- pools --------------------------------------------------------------------------------------

# The init of a pooled sandbox: made and set up ahead, it waits on its stdin for the command line
# of its one run (shell words, quoted by shlex), then becomes that run (exec). What follows the
# line on stdin is the run's stdin: the shell reads a pipe one byte at a time, never past the line.
POOL_INIT = ["/bin/sh", "-c", 'IFS= read -r line && eval "$line"']


class _Warm:
    """A pooled sandbox: a created container, and our ends of its stdio pipes."""

    def __init__(self, container, stdin: int, stdout: int, stderr: int):
        self.container, self.stdin, self.stdout, self.stderr = container, stdin, stdout, stderr

    def close_fds(self) -> None:
        for fd in (self.stdin, self.stdout, self.stderr):
            if fd >= 0:
                os.close(fd)
        self.stdin = self.stdout = self.stderr = -1


class Pool:
    """Warm sandboxes, made ahead by a background thread: pool.run(argv) starts one that is ready
    (namespaces, mounts, cgroup, seccomp all set up; its init waiting), tells it what to run, and
    throws it away after: each sandbox serves one run, so a run never meets anything an earlier
    run touched. The rootfs needs /bin/sh and env (busybox's or the host's). A program that does
    not exist is exit code 127 (the shell's), not an error."""

    def __init__(self, size: int = 4, *, rootfs, memory=None, cpus=None, pids=None, network=False, timeout=None,
                 scratch=None, cpu_time=None, file_size=None, output_limit=None, env=None):
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 256:
            raise InvalidArgumentError("size", f"must be a whole number from 1 to 256, not {size!r}")
        self._limits = Limits.from_arguments(memory, cpus, pids, cpu_time, file_size, scratch, network)
        self._timeout = _check_timeout(timeout)
        self._output_limit = _check_output_limit(output_limit)
        _check_env(env)
        self._env = env
        self._rootfs = resolve(rootfs)
        self._size = size
        _setup()
        import queue

        self._ready: queue.Queue = queue.Queue()
        self._retired: list = []
        self._wanted = threading.Condition()
        self._closed = False
        self._failure: BaseException | None = None
        self._ready.put(self._warm())  # the first one here: a rootfs it cannot be made in fails now
        self._making = 0
        self._threads = [threading.Thread(target=self._keep_warm, name=f"capsa-pool-{n}", daemon=True)
                         for n in range(min(size, os.cpu_count() or 1))]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _warm(self) -> _Warm:
        spec = build_spec(list(POOL_INIT), self._rootfs, self._limits, [PATH], "/")
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            container = _create(spec, in_r, out_w, err_w)
        except SandboxStartError as err:
            for fd in (in_w, out_r, err_r):
                os.close(fd)
            raise SandboxStartError(f"cannot create a pooled sandbox: {err}") from None
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        return _Warm(container, in_w, out_r, err_r)

    def _keep_warm(self) -> None:
        """Delete used sandboxes and make new ones until `size` are ready or being made (one
        such thread per CPU: creations run in children of their own, side by side)."""
        while True:
            with self._wanted:
                while not self._closed and not self._retired and self._ready.qsize() + self._making >= self._size:
                    self._wanted.wait()
                if self._closed:
                    return
                retired, self._retired = self._retired, []
                make = self._ready.qsize() + self._making < self._size
                self._making += make
            for warm in retired:
                _discard(warm)
            if make:
                try:
                    self._ready.put(self._warm())
                    self._failure = None
                except BaseException as err:  # reported to the callers waiting for a sandbox
                    self._failure = err
                    time.sleep(0.5)
                finally:
                    with self._wanted:
                        self._making -= 1

    def _take(self) -> _Warm:
        import queue

        while True:
            if self._closed:
                raise SandboxClosedError("the pool is closed")
            try:
                return self._ready.get(timeout=0.5)
            except queue.Empty:
                if self._failure is not None and self._ready.empty():
                    raise SandboxStartError(f"the pool cannot make sandboxes: {self._failure}") from None

    def _retire(self, warm: _Warm) -> None:
        with self._wanted:
            if not self._closed:
                self._retired.append(warm)
                self._wanted.notify()
                return
        _discard(warm)

    def run(self, argv, *, stdin=None, timeout=None, cwd="/work", env=None, output_limit=None) -> Result:
        """Run argv in a ready sandbox (see the class)."""
        argv = _check_argv(argv)
        if "=" in argv[0]:
            raise InvalidArgumentError("argv", f"a pooled run's program name cannot contain '=': {argv[0]!r}")
        env_list = _check_env(self._env if env is None else env)
        cwd = _check_cwd(cwd)
        stdin = _check_stdin(stdin)
        timeout = self._timeout if timeout is None else _check_timeout(timeout)
        output_limit = self._output_limit if output_limit is None else _check_output_limit(output_limit)
        warm = self._take()
        with self._wanted:
            self._wanted.notify()  # one fewer ready: make another meanwhile
        try:
            return _pooled_run(warm, _command_line(argv, env_list, cwd), stdin or b"", timeout, output_limit)
        finally:
            self._retire(warm)

    async def arun(self, argv, **options) -> Result:
        """run() for asyncio (a thread per run)."""
        import asyncio

        return await asyncio.to_thread(self.run, argv, **options)

    def close(self) -> None:
        """Delete every sandbox of the pool; runs under way finish first."""
        with self._wanted:
            if self._closed:
                return
            self._closed = True
            self._wanted.notify_all()
        for thread in self._threads:
            thread.join(timeout=60)
        retired, self._retired = self._retired, []
        for warm in retired:
            _discard(warm)
        while not self._ready.empty():
            _discard(self._ready.get_nowait())


def _command_line(argv: list[str], env: list[str], cwd: str) -> bytes:
    """What POOL_INIT evaluates: cd to cwd, then exec argv with exactly env (env -i)."""
    import shlex

    words = ["exec", "env", "-i", *env, *argv]
    line = f"cd -- {shlex.quote(cwd)} && " + " ".join(shlex.quote(w) for w in words)
    if "\n" in line:
        raise InvalidArgumentError("argv", "a pooled run's arguments, environment and cwd cannot contain a newline")
    return line.encode() + b"\n"


def _pooled_run(warm: _Warm, line: bytes, stdin: bytes, timeout: float | None, output_limit: int) -> Result:
    """Start the warm sandbox, feed it the command line and stdin, supervise it."""
    writer = None
    try:
        try:
            warm.container.start()
        except CapsaError as err:
            raise SandboxStartError(f"cannot start a pooled sandbox: {err}") from err
        data = line + stdin
        if len(data) <= 32768:  # fits the pipe's buffer: written at once
            _write_all(warm.stdin, data)
            os.close(warm.stdin)
        else:
            writer = threading.Thread(target=_feed, args=(warm.stdin, data), daemon=True)
            writer.start()
        warm.stdin = -1
        out_r, err_r = warm.stdout, warm.stderr
        warm.stdout = warm.stderr = -1  # _supervise closes them
        events = _supervise(warm.container, out_r, err_r, timeout, output_limit)
        while True:
            try:
                next(events)
            except StopIteration as done:
                return done.value
    finally:
        if writer is not None:
            writer.join(timeout=10)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _feed(fd: int, data: bytes) -> None:
    """A large stdin, written while the run reads it; a run that stops reading gets EOF never and
    we EPIPE once it is gone."""
    try:
        _write_all(fd, data)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard(warm: _Warm) -> None:
    """Delete a pooled sandbox (used or not) and close our ends of its pipes."""
    warm.close_fds()
    try:
        warm.container.delete(force=True)
    except CapsaError:
        pass  # clean_leftovers deletes what could not be
    try:
        warm.container.wait(timeout=10)  # reap its init (our child: we are a subreaper)
    except (TimeoutError, OSError, CapsaError):
        pass
