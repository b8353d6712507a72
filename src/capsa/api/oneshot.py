"""A run of capsa's Python API in a fresh container: capsa.run, capsa.arun, and what Sandbox
runs each time (run_spec, run_events): create it with the run's stdio (its init execs at once),
supervise it, delete it."""

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
from capsa.api.supervise import supervise
from capsa.errors import CapsaError


def _stdin_fd(data: bytes | None) -> int:
    if not data:
        return os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    fd = os.memfd_create("capsa-stdin", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def create_container(spec: dict, stdin: int, stdout: int, stderr: int, *, exec_at_once: bool = False, serve=None):
    """Container.create, the init's fds 0-2 being stdin, stdout and stderr: the launch makes them
    the init's own (launch's stdio option), so this program's stdio is never pointed at a run.
    exec_at_once: the init execs as soon as it is set up (no start). A failure is a
    SandboxStartError with the runtime's message; nothing of the container is left."""
    from capsa.container import Container

    low = [fd for fd in (stdin, stdout, stderr) if fd <= 2]  # only if this program closed its own 0-2
    moved = {fd: _fcntl_dup_above(fd) for fd in low}
    try:
        return Container.create(STATE_ROOT, new_id(), API_DIR, spec=spec, rootless_cgroups=False,
                                stdio=tuple(moved.get(fd, fd) for fd in (stdin, stdout, stderr)),
                                exec_at_once=exec_at_once, serve=serve)
    except CapsaError as err:
        raise SandboxStartError(str(err)) from None
    finally:
        for fd in moved.values():
            os.close(fd)


def _fcntl_dup_above(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


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
    setup()
    stdin_fd = _stdin_fd(stdin)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    container = None
    supervised = False
    try:
        try:
            # Created running: the init execs once set up, without a start (its state write and
            # socket round trip); the record's "created" is never read before the delete below.
            container = create_container(spec, stdin_fd, out_w, err_w, exec_at_once=True)
        except SandboxStartError as err:
            raise SandboxStartError(f"cannot create the sandbox: {err}") from None
        finally:
            for fd in (stdin_fd, out_w, err_w):
                os.close(fd)
        supervised = True
        return (yield from supervise(container, out_r, err_r, timeout, output_limit))  # closes out_r, err_r
    finally:
        if not supervised:
            os.close(out_r)
            os.close(err_r)
        if container is not None:
            container.delete(force=True)


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
    spec = build_spec(argv, resolve(rootfs), limits, env_list, cwd)
    return run_spec(spec, stdin, timeout, output_limit)


async def arun(argv, **options) -> Result:
    """run() for asyncio: the run is supervised in a thread of the loop's default executor, so
    that many runs go on at once (their creations take turns; see docs/api.md)."""
    import asyncio

    return await asyncio.to_thread(run, argv, **options)
