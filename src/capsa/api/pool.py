"""capsa.Pool: warm sandboxes made ahead of the runs that take them."""

from __future__ import annotations

import os
import threading
import time

from capsa.api.arguments import (
    PATH,
    Limits,
    check_argv,
    check_cwd,
    check_env,
    check_output_limit,
    check_stdin,
    check_timeout,
)
from capsa.api.errors import InvalidArgumentError, SandboxClosedError, SandboxStartError
from capsa.api.oneshot import create_container
from capsa.api.result import Result
from capsa.api.rootfs import resolve
from capsa.api.session import setup
from capsa.api.spec import build_spec
from capsa.api.supervise import supervise
from capsa.errors import CapsaError

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
        self._timeout = check_timeout(timeout)
        self._output_limit = check_output_limit(output_limit)
        check_env(env)
        self._env = env
        self._rootfs = resolve(rootfs)
        self._size = size
        setup()
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
            container = create_container(spec, in_r, out_w, err_w)
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
        argv = check_argv(argv)
        if "=" in argv[0]:
            raise InvalidArgumentError("argv", f"a pooled run's program name cannot contain '=': {argv[0]!r}")
        env_list = check_env(self._env if env is None else env)
        cwd = check_cwd(cwd)
        stdin = check_stdin(stdin)
        timeout = self._timeout if timeout is None else check_timeout(timeout)
        output_limit = self._output_limit if output_limit is None else check_output_limit(output_limit)
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
        warm.stdout = warm.stderr = -1  # supervise closes them
        events = supervise(warm.container, out_r, err_r, timeout, output_limit)
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
