"""A run of capsa's Python API in a fresh container: capsa.run, capsa.arun, and what Sandbox
runs each time (run_spec, run_events): have the program's zygote create it with the run's stdio
(its init execs at once), supervise it, delete it."""

from __future__ import annotations

import os

from capsa.api.arguments import (
    Limits,
    check_argv,
    check_cwd,
    check_env,
    check_output_limit,
    check_stdin,
    check_timeout,
)
from capsa.api.errors import SandboxStartError
from capsa.api.result import Result
from capsa.api.rootfs import API_DIR, resolve
from capsa.api.session import STATE_ROOT, new_id, setup
from capsa.api.spec import build_spec
from capsa.api.supervise import adrive, drive, supervise


def _stdin_fd(data: bytes | None) -> int:
    if not data:
        return os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    fd = os.memfd_create("capsa-stdin", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def create_run_once(spec: dict, stdio: tuple[int, int, int], exit_pipe: int):
    """The run's container, created by the program's zygote (capsa.api.zygote), the init's fds 0-2
    being `stdio` and exec'ing at once; the zygote, its parent, writes its wait status to
    `exit_pipe` once it has ended. A failure is a SandboxStartError with the runtime's message;
    nothing of the container is left. The fds are the caller's to close (the zygote has copies)."""
    from capsa import state
    from capsa.api.zygote import zygote
    from capsa.container import Container

    try:
        _, record = zygote().run_once(new_id(), spec, STATE_ROOT, API_DIR, stdio, exit_pipe)
    except RuntimeError as err:
        raise SandboxStartError(str(err)) from None
    return Container(state.StateStore(STATE_ROOT), record, spec)


class ReportedExit:
    """How a run-once container's init ended, as its parent (the zygote) reports it on the exit
    pipe: readable (fileno) once it has ended; wait() gives its ExitStatus (not `known` if the
    zygote ended first). With the status come the cgroup's `usage` (OOM kills, CPU seconds, peak
    memory), read by the zygote, which then deletes the container: `reported` says it did."""

    def __init__(self, fd: int):
        self.fd = fd
        self.status = None
        self.usage: tuple[int, float, int] | None = None

    @property
    def reported(self) -> bool:
        return self.usage is not None

    def fileno(self) -> int:
        return self.fd

    def wait(self, timeout: float | None = None):
        import marshal
        import select

        from capsa.process import ExitStatus

        if self.status is None:
            data = b""
            while self.fd >= 0 and select.select([self.fd], [], [], timeout)[0]:
                chunk = os.read(self.fd, 64)
                if not chunk:
                    break
                data += chunk
            if data:
                wait_status, *usage = marshal.loads(data)
                self.usage = tuple(usage)
                self.status = ExitStatus.from_wait_status(wait_status)
            else:
                self.status = ExitStatus()
        return self.status

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def run_spec(spec: dict, stdin: bytes | None, timeout: float | None, output_limit: int) -> Result:
    """Create, start, supervise and delete one container; the Result of its run."""
    return drive(run_events(spec, stdin, timeout, output_limit))


def run_events(spec: dict, stdin: bytes | None, timeout: float | None, output_limit: int):
    """A generator of one run: yields ("stdout" | "stderr", bytes) as the run writes, returns
    its Result. Closed early (the consumer stops), it kills the run and deletes its container."""
    setup()
    stdin_fd = _stdin_fd(stdin)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    exit_r, exit_w = os.pipe()
    ended = ReportedExit(exit_r)
    container = None
    supervised = False
    try:
        try:
            # Created running: the init execs once set up, without a start (its state write and
            # socket round trip); the record's "created" is never read before the delete below.
            container = create_run_once(spec, (stdin_fd, out_w, err_w), exit_w)
        except SandboxStartError as err:
            raise SandboxStartError(f"cannot create the sandbox: {err}") from None
        finally:
            for fd in (stdin_fd, out_w, err_w, exit_w):
                os.close(fd)
        supervised = True
        return (yield from supervise(container, out_r, err_r, timeout, output_limit, ended))  # closes out_r, err_r
    finally:
        if not supervised:
            os.close(out_r)
            os.close(err_r)
        ended.close()
        if container is not None and not ended.reported:
            # Ended early (closed, failed): kill and delete it here. The zygote, seeing its init
            # end, finds it gone (or waits for our lock, then finds it gone).
            from capsa.errors import NotFoundError

            try:
                container.delete(force=True)
            except NotFoundError:
                pass  # its init ended meanwhile and the zygote deleted it


def run(argv, *, rootfs, timeout=None, memory=None, cpus=None, pids=None, network=False, stdin=None, env=None,
        cwd="/work", output_limit=None, cpu_time=None, file_size=None, scratch=None) -> Result:
    """Run argv in a fresh sandbox and return its Result; see docs/api.md.

    rootfs: a root directory, an OCI bundle or capsa.HostTools(). timeout: seconds of wall time,
    after which every process of the run is killed (timed_out). memory, file_size, scratch,
    output_limit: sizes (bytes or "256M"). cpus: CPU quota. pids: processes at once. cpu_time:
    seconds of CPU per process. env: the whole environment (PATH added if missing); nothing of
    the caller's leaks in. stdin: bytes given on standard input."""
    argv = check_argv(argv)
    limits = Limits.from_arguments(memory, cpus, pids, cpu_time, file_size, scratch, network)
    env_list, cwd = check_env(env), check_cwd(cwd)
    stdin, timeout, output_limit = check_stdin(stdin), check_timeout(timeout), check_output_limit(output_limit)
    rootfs = resolve(rootfs)
    setup()  # before the spec: it makes what the spec names (the /dev template)
    spec = build_spec(argv, rootfs, limits, env_list, cwd)
    return run_spec(spec, stdin, timeout, output_limit)


async def arun(argv, *, rootfs, timeout=None, memory=None, cpus=None, pids=None, network=False, stdin=None,
               env=None, cwd="/work", output_limit=None, cpu_time=None, file_size=None, scratch=None) -> Result:
    """run() for asyncio: the container is created in the loop's default executor (~10 ms of
    kernel work), then the run's output and end are waits on the event loop (pipes, the init's
    pidfd); no thread waits for a run."""
    argv = check_argv(argv)
    limits = Limits.from_arguments(memory, cpus, pids, cpu_time, file_size, scratch, network)
    env_list, cwd = check_env(env), check_cwd(cwd)
    stdin, timeout, output_limit = check_stdin(stdin), check_timeout(timeout), check_output_limit(output_limit)
    rootfs = resolve(rootfs)
    setup()  # before the spec: it makes what the spec names (the /dev template)
    spec = build_spec(argv, rootfs, limits, env_list, cwd)
    return await adrive(run_events(spec, stdin, timeout, output_limit), first_step_in_thread=True)
