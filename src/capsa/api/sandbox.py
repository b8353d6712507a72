"""capsa.Sandbox: a sandbox whose /work persists across its runs (a tmpfs of its own, bound into
each run's fresh container)."""

from __future__ import annotations

import os
import threading

from capsa.api.arguments import (
    Limits,
    check_argv,
    check_cwd,
    check_env,
    check_output_limit,
    check_stdin,
    check_timeout,
)
from capsa.api.errors import InvalidArgumentError, SandboxClosedError, SandboxError
from capsa.api.oneshot import run_events, run_spec
from capsa.api.result import Result
from capsa.api.rootfs import resolve
from capsa.api.session import make_scratch, remove_scratch, setup
from capsa.api.spec import build_spec, host_id_range
from capsa.api.supervise import Stream


class Sandbox:
    """A sandbox whose /work persists across its runs; each run is otherwise fresh (new
    processes, /tmp, IPC, network namespace). A context manager; close() removes /work.

    write_file/read_file reach /work only, resolved inside it (a symlink a run planted cannot
    lead them out)."""

    def __init__(self, *, rootfs, memory=None, cpus=None, pids=None, network=False, timeout=None, scratch=None,
                 cpu_time=None, file_size=None, output_limit=None, env=None):
        self._limits = Limits.from_arguments(memory, cpus, pids, cpu_time, file_size, scratch, network)
        self._timeout = check_timeout(timeout)
        self._output_limit = check_output_limit(output_limit)
        self._env = env
        check_env(env)
        self._rootfs = resolve(rootfs)
        setup()
        self._lock = threading.Lock()
        self._work = make_scratch(self._limits.scratch)
        self._closed = False

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                remove_scratch(os.path.dirname(self._work))

    def check_open(self) -> None:
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
        self.check_open()
        argv = check_argv(argv)
        env_list = check_env(self._env if env is None else env)
        cwd = check_cwd(cwd)
        stdin = check_stdin(stdin)
        timeout = self._timeout if timeout is None else check_timeout(timeout)
        output_limit = self._output_limit if output_limit is None else check_output_limit(output_limit)
        spec = build_spec(argv, self._rootfs, self._limits, env_list, cwd, work_source=self._work)
        return spec, stdin, timeout, output_limit

    def write_file(self, path: str, data, mode: int = 0o644) -> None:
        """Write data (bytes or str) to path under /work, owned by the sandbox's root."""
        self.check_open()
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
        self.check_open()
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
