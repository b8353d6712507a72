"""A run of capsa's Python API in a fresh container: capsa.run, capsa.arun, and what Sandbox
runs each time (run_spec, run_events): create it with the run's stdio, start it, supervise it,
delete it."""

from __future__ import annotations

import os
import time

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


def _release_state_locks() -> None:
    """In with_stdio's child: close our copies of the state root's lock files. flock belongs to
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
    """In with_stdio's child, after a failure: wait for every child it has (all of them were
    started by the failed call), for `timeout` seconds at most."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.002)


def create_container(spec: dict, stdin: int, stdout: int, stderr: int):
    """Container.create, the init's fds 0-2 being stdin, stdout and stderr (see with_stdio)."""
    from capsa.container import Container

    container_id = new_id()
    with_stdio(lambda: Container.create(STATE_ROOT, container_id, API_DIR, spec=spec, rootless_cgroups=False).id,
                stdin, stdout, stderr)
    return Container.load(STATE_ROOT, container_id)


def with_stdio(call, stdin: int, stdout: int, stderr: int) -> str:
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
            container = create_container(spec, stdin_fd, out_w, err_w)
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
