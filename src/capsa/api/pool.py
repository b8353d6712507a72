"""capsa.Pool: warm sandboxes, each serving run after run through its agent (capsa.api.agent).

A pooled sandbox is a container made once, whose init stays as an agent; each run gets, from
that agent, a process prepared ahead in namespaces of its own (pid, mount, IPC, UTS, network)
with fresh /tmp, /work, /dev/shm, mqueue and /proc: the run starts with one message on a
socket (its stdio fds with it) and ends when the agent reports it. A run never meets a file,
process, socket, IPC object or environment of an earlier one; the container's limits (memory,
CPU, pids) and its seccomp filter, capabilities and read-only root hold for every run.
"""

from __future__ import annotations

import collections
import os
import select
import socket
import threading
import time

from capsa.api import agent
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
from capsa.api.result import Result
from capsa.api.rootfs import API_DIR, resolve
from capsa.api.session import STATE_ROOT, new_id, setup
from capsa.api.spec import build_spec
from capsa.api.supervise import DRAIN_GRACE, Output, Wait, adrive, drive
from capsa.api.zygote import zygote
from capsa.errors import CapsaError

# The agent, the slot it prepares for the next run and (where the agent is a process of its own:
# capsa.api.holder) the init holding the sandbox are processes of the sandbox too: a pool's pids
# limit is the run's, these three added.
AGENT_PIDS = 3
# How long a run killed at its timeout may take to be reported before its Result is returned
# anyway; the sandbox then goes back to the pool once its agent has reported the run (the kernel
# may take seconds to end a large process tree: a fork bomb without a pids limit), or is deleted
# if that takes more than RECLAIM_WAIT.
KILL_GRACE = 2.0
RECLAIM_WAIT = 300.0
# How often a task waiting for a sandbox (Pool.arun) looks whether the pool closed or cannot
# make sandboxes any more.
_RECHECK = 0.5


class _Broken(Exception):
    """The sandbox's agent is gone (a run took the whole sandbox down: OOM, or the pool closing)."""


class PooledSandbox:
    """One sandbox of a pool: its container (whose init is the agent) and our end of the
    agent's socket. Runs one run at a time (the pool hands it to one caller at a time)."""

    def __init__(self, container, control: socket.socket, watch_oom: bool, waiter: bool = False):
        self.container = container
        self.control = control
        self.watch_oom = watch_oom
        self.waiter = waiter  # the slots wait in capsa.api.waiter: requests in its format
        self.home = "/"  # HOME of a run whose env has none (the agent sends it with each slot)
        self.slot = -1  # the pidfd of the prepared slot (capsa.api.agent), once the agent sent it
        self.unreported = False  # a killed run's end is not reported yet: see reclaim()
        self.oom_kills = self._oom_kills()
        self.peak = _PeakMemory(container.cgroup())

    @classmethod
    def make(cls, spec: dict, settings: agent.Settings, watch_oom: bool) -> PooledSandbox:
        """Made by the program's zygote (capsa.api.zygote), so that the agent is a fork of a small
        process that stays idle, not of the calling program."""
        from capsa.container import Container

        container_id = new_id()
        try:
            _, control = zygote().create(container_id, spec, STATE_ROOT, API_DIR, settings)
        except RuntimeError as err:
            raise SandboxStartError(f"cannot create a pooled sandbox: {err}") from None
        try:
            container = Container.load(STATE_ROOT, container_id)
        except CapsaError as err:
            control.close()
            raise SandboxStartError(f"cannot create a pooled sandbox: {err}") from None
        sandbox = cls(container, control, watch_oom, settings.waiter)
        try:
            sandbox.wait_ready()
        except BaseException:
            sandbox.discard()
            raise
        return sandbox

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for the agent's first slot (its pidfd, and HOME): the sandbox is then ready."""
        readable, _, _ = select.select([self.control], [], [], timeout)
        message = self._receive() if readable else None
        if message is None or message[:1] != agent.PIDFD:
            raise SandboxStartError("cannot create a pooled sandbox: its agent did not start")

    def _oom_kills(self) -> int:
        if not self.watch_oom:
            return 0
        from capsa.process import oom_kill_count

        try:
            return oom_kill_count(self.container.cgroup())
        except OSError:
            return 0

    def events(self, argv: list[str], env: list[str], cwd: str, stdin: bytes | None, timeout: float | None,
               output_limit: int):
        """A generator of one run: yields ("stdout" | "stderr", bytes) as the run writes, returns
        its Result; raises _Broken (with the Result as its second argument) if the agent died
        under the run. Closed early, it kills the run."""
        request = self._request(argv, env, cwd)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        stdin_fd = _stdin_fd(stdin)
        try:
            try:
                self.control.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                  _fd_bytes(stdin_fd, out_w, err_w))])
            except OSError as err:
                os.close(out_r)
                os.close(err_r)
                raise _Broken(f"the sandbox is gone: {err.strerror}") from None
        finally:
            for fd in (stdin_fd, out_w, err_w):
                os.close(fd)
        started = time.monotonic()
        budget = [output_limit]
        outputs = {out_r: Output("stdout", out_r, budget), err_r: Output("stderr", err_r, budget)}
        try:
            report, timed_out, ended = yield from self._collect(outputs, started, timeout)
        except GeneratorExit:
            self._kill()
            raise
        finally:
            for output in outputs.values():
                output.close()
        oom_killed = False
        if self.watch_oom:
            count = self._oom_kills()
            oom_killed, self.oom_kills = count > self.oom_kills, count
        peak_memory = self.peak.take()
        stdout, stderr = outputs[out_r].value(), outputs[err_r].value()
        truncated = any(o.truncated for o in outputs.values())
        if report is None:  # killed and not reported yet, or the agent is gone (and the run with it)
            killed = Result(stdout=stdout, stderr=stderr, exit_code=128 + 9, signal=9, timed_out=timed_out,
                            oom_killed=oom_killed, output_truncated=truncated, wall_time=ended - started,
                            cpu_time=0.0, peak_memory=peak_memory)
            if self.unreported:
                return killed
            raise _Broken("the run ended its sandbox", killed)
        status, cpu_time, _, error = report
        if error is not None:
            raise SandboxStartError(f"cannot start the run: {_start_error(error, argv, cwd)}")
        exit_code, signal = _exit_of(status)
        return Result(stdout=stdout, stderr=stderr, exit_code=exit_code, signal=signal, timed_out=timed_out,
                      oom_killed=oom_killed, output_truncated=truncated, wall_time=ended - started,
                      cpu_time=cpu_time, peak_memory=peak_memory)

    def _collect(self, outputs: dict[int, Output], started: float, timeout: float | None):
        """Read the output until the agent reported the run's end and the pipes are at EOF; at
        the deadline kill the run (its slot's pidfd). Returns (report or None, timed out, ended)."""
        control = self.control.fileno()
        deadline = None if timeout is None else started + timeout
        report = ended = None
        timed_out = False
        watched = [*outputs, control]
        while watched:
            now = time.monotonic()
            if ended is None and deadline is not None and now >= deadline:
                if timed_out:
                    self.unreported = True  # killed, no word from the agent yet: see reclaim()
                    break
                timed_out = True
                self._kill()
                deadline = now + KILL_GRACE
            elif ended is not None and now >= ended + DRAIN_GRACE:
                break  # the run is over; a pipe someone still holds is given up on
            limit = deadline if ended is None else ended + DRAIN_GRACE
            ready = yield Wait(watched, None if limit is None else max(0.0, limit - now))
            for fd in ready:
                if fd == control:
                    message = self._receive()
                    if message is None or message[:1] == agent.DONE:
                        # The run's end; or the agent's, and every process of the sandbox
                        # with it (the pipes reach EOF now).
                        watched.remove(control)
                        ended = time.monotonic()
                        report = None if message is None else _loads(message[1:])
                    elif timed_out:
                        self._kill()  # the pidfd came after the deadline
                else:
                    output = outputs[fd]
                    data = output.read()
                    if output.done:
                        watched.remove(fd)
                        output.close()
                    if data:
                        yield output.name, data
        return report, timed_out, ended if ended is not None else time.monotonic()

    def reclaim(self) -> bool:
        """Wait (RECLAIM_WAIT at most) for the agent's report of a killed run that came late;
        True if it came and the sandbox can serve again."""
        deadline = time.monotonic() + RECLAIM_WAIT
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.control], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                break
            message = self._receive()
            if message is None:
                return False
            if message[:1] == agent.DONE:
                self.unreported = False
                self.peak.take()
                if self.watch_oom:
                    self.oom_kills = self._oom_kills()
                return True
        return False

    def _request(self, argv: list[str], env: list[str], cwd: str) -> bytes:
        """The run's request, as the slot reads it: capsa.api.waiter's, or the agent's marshal."""
        if not any(entry.startswith("HOME=") for entry in env):
            env = [*env, f"HOME={self.home}"]
        if not self.waiter:
            import marshal

            return agent.RUN + marshal.dumps((argv, env, cwd))
        from capsa.api import waiter

        try:
            return waiter.request(argv, env, cwd)
        except ValueError as err:
            raise InvalidArgumentError("argv", str(err)) from None

    def _receive(self) -> bytes | None:
        """The agent's next message; a slot's pidfd is kept (self.slot). None: the agent is gone."""
        try:
            data, ancillary, _, _ = self.control.recvmsg(1 << 16, socket.CMSG_SPACE(4))
        except OSError:
            return None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                for i in range(0, len(payload) - 3, 4):
                    self._set_slot(int.from_bytes(payload[i:i + 4], "little"))
        if data[:1] == agent.PIDFD and len(data) > 1:
            self.home = data[1:].decode(errors="replace")
        return data or None

    def _set_slot(self, pidfd: int) -> None:
        if self.slot >= 0:
            os.close(self.slot)
        self.slot = pidfd

    def _kill(self) -> None:
        """Kill the run: its slot (pid 1 of the run's pid namespace) and so every process of it."""
        import signal

        if self.slot >= 0:
            try:
                signal.pidfd_send_signal(self.slot, signal.SIGKILL)
            except OSError:
                pass

    def discard(self) -> None:
        """Delete the sandbox: closing the socket ends the agent; delete kills what is left."""
        self.control.close()
        self._set_slot(-1)
        self.peak.close()
        try:
            self.container.delete(force=True)
        except CapsaError:
            pass  # clean_leftovers deletes what could not be
        try:
            self.container.init_process().wait(timeout=10)  # reap the agent (our child: we are a subreaper)
        except (TimeoutError, OSError, CapsaError):
            pass


class _PeakMemory:
    """The high-water mark of the sandbox's memory cgroup, reset after each run: a run's peak
    memory (with that of the sandbox's own agent and prepared process, which the cgroup charges
    only for the pages they have written since the fork: a few hundred KB). A process's own peak
    RSS (wait4's ru_maxrss) would not do: exec keeps the larger of the old and new images', and
    the old one is the Python process that prepared the run. v1: memory.max_usage_in_bytes,
    reset by writing 0; v2: memory.peak, reset per open file (Linux 6.12) by writing to it."""

    def __init__(self, cgroup):
        self.fd = -1
        self.v1 = True
        directory = cgroup.path_for("memory") if cgroup is not None else None
        if directory is None:
            return
        self.v1 = cgroup.cgroup2_dir() != directory
        name = "memory.max_usage_in_bytes" if self.v1 else "memory.peak"
        try:
            self.fd = os.open(f"{directory}/{name}", os.O_RDWR | os.O_CLOEXEC)
            self._reset()
        except OSError:
            self.close()

    def take(self) -> int:
        """The peak since the last take (0 if unknown), and reset it."""
        if self.fd < 0:
            return 0
        try:
            value = int(os.pread(self.fd, 64, 0).split()[0])
            self._reset()
            return value
        except (OSError, ValueError, IndexError):
            return 0

    def _reset(self) -> None:
        try:
            os.pwrite(self.fd, b"0" if self.v1 else b"reset\n", 0)
        except OSError:
            pass  # a kernel without the reset: the peak is since the sandbox was made

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _start_error(error: bytes, argv: list[str], cwd: str) -> str:
    """Why a run could not start, from the agent's report: the waiter's step and errno, or the
    Python slot's message."""
    if error[:1] == b"\0":
        from capsa.api import waiter

        return waiter.error_message(error, argv, cwd)
    return error.decode(errors="replace")


def _fd_bytes(*fds: int) -> bytes:
    return b"".join(fd.to_bytes(4, "little") for fd in fds)


def _stdin_fd(data: bytes | None) -> int:
    if not data:
        return os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    fd = os.memfd_create("capsa-stdin", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _loads(data: bytes):
    import marshal

    return marshal.loads(data)


def _exit_of(status: int) -> tuple[int, int | None]:
    """(exit code, signal) of a wait status: the shell's number, 128 + signal when killed."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status), os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


def _waiter_supported() -> bool:
    from capsa.api import waiter

    return waiter.supported()


class Pool:
    """Warm sandboxes, made ahead by a background thread. pool.run(argv) takes an idle one, runs
    argv in it (in a process prepared ahead in fresh namespaces: see capsa.api.agent) and gives
    it back; a run that breaks its sandbox (OOM-killing its agent, say) costs the pool that
    sandbox, which is replaced. Runs from several threads (or asyncio tasks) go on at once, one
    per sandbox; more wait for one to be free."""

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

        self._idle: queue.Queue = queue.Queue()
        # asyncio tasks waiting for a sandbox (arun): (loop, future), served before threads
        self._async_waiters: collections.deque = collections.deque()
        self._lock = threading.Condition()
        self._count = 0  # sandboxes that exist or are being made
        self._all: set[PooledSandbox] = set()
        self._closed = False
        self._failure: BaseException | None = None
        self._spec = self._agent_spec()
        self._settings = agent.Settings(scratch=self._limits.scratch, waiter=_waiter_supported(),
                                        network=self._limits.network)
        self._add(self._make())  # the first one here: a rootfs it cannot be made in fails now
        self._count = 1
        self._threads = [threading.Thread(target=self._keep_warm, name=f"capsa-pool-{n}", daemon=True)
                         for n in range(min(size, os.cpu_count() or 1))]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _agent_spec(self) -> dict:
        spec = build_spec(["capsa-pool-agent"], self._rootfs, self._limits, [PATH], "/")
        pids = spec["linux"].get("resources", {}).get("pids")
        if pids:
            pids["limit"] += AGENT_PIDS
        return spec

    def _make(self) -> PooledSandbox:
        return PooledSandbox.make(self._spec, self._settings, watch_oom=self._limits.memory is not None)

    def _add(self, sandbox: PooledSandbox) -> None:
        with self._lock:
            self._all.add(sandbox)
        self._put_idle(sandbox)

    def _put_idle(self, sandbox: PooledSandbox) -> None:
        """An idle sandbox: to the first asyncio task waiting for one, else to the queue; deleted
        if the pool is closed (close() empties the queue once: one put back later, by a task
        that stopped waiting, say, would stay)."""
        with self._lock:
            if not self._closed:
                while self._async_waiters:
                    loop, future = self._async_waiters.popleft()
                    try:
                        loop.call_soon_threadsafe(self._deliver, future, sandbox)
                        return
                    except RuntimeError:
                        continue  # its loop is closed
                self._idle.put(sandbox)
                return
        self._drop(sandbox)

    def _deliver(self, future, sandbox: PooledSandbox) -> None:
        """In the waiting task's loop: hand it the sandbox, or back if it stopped waiting."""
        if future.done():
            self._put_idle(sandbox)
        else:
            future.set_result(sandbox)

    def _keep_warm(self) -> None:
        """Make sandboxes until `size` exist (one such thread per CPU: creations side by side)."""
        while True:
            with self._lock:
                while not self._closed and self._count >= self._size:
                    self._lock.wait()
                if self._closed:
                    return
                self._count += 1
            try:
                self._add(self._make())
                self._failure = None
            except BaseException as err:  # reported to the callers waiting for a sandbox
                self._failure = err
                with self._lock:
                    self._count -= 1
                time.sleep(0.5)

    def _take(self) -> PooledSandbox:
        import queue

        while True:
            if self._closed:
                raise SandboxClosedError("the pool is closed")
            try:
                return self._idle.get(timeout=0.5)
            except queue.Empty:
                if self._failure is not None and self._idle.empty():
                    raise SandboxStartError(f"the pool cannot make sandboxes: {self._failure}") from None

    def _give_back(self, sandbox: PooledSandbox, broken: bool) -> None:
        if not broken and not self._closed:
            if sandbox.unreported:
                threading.Thread(target=self._reclaim, args=(sandbox,), name="capsa-pool-reclaim", daemon=True).start()
            else:
                self._put_idle(sandbox)
            return
        self._drop(sandbox)

    def _drop(self, sandbox: PooledSandbox) -> None:
        """Delete a sandbox of the pool (the keep-warm threads make another unless it is closed)."""
        with self._lock:
            self._all.discard(sandbox)
            self._count -= 1
            self._lock.notify()
        sandbox.discard()

    def _reclaim(self, sandbox: PooledSandbox) -> None:
        self._give_back(sandbox, broken=not sandbox.reclaim())

    async def _atake(self) -> PooledSandbox:
        """_take() for asyncio: the task waits on its event loop, no thread blocks."""
        import asyncio
        import queue

        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise SandboxClosedError("the pool is closed")
            future = loop.create_future()
            with self._lock:
                try:
                    return self._idle.get_nowait()
                except queue.Empty:
                    self._async_waiters.append((loop, future))
            try:
                # Not wait_for(shield(future)): a sandbox delivered in the turn its timeout
                # fired was lost (the task saw a timeout, the future held the sandbox). Here the
                # future itself says whether one came.
                await asyncio.wait([future], timeout=_RECHECK)
                if future.done():
                    return future.result()
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._put_idle(future.result())  # handed to us as we were cancelled
                future.cancel()
                raise
            finally:
                if not future.done():
                    future.cancel()  # a sandbox delivered to it now goes back (_deliver)
                with self._lock:
                    try:
                        self._async_waiters.remove((loop, future))
                    except ValueError:
                        pass  # served (or being served)
            if self._failure is not None and self._idle.empty():
                raise SandboxStartError(f"the pool cannot make sandboxes: {self._failure}") from None

    def run(self, argv, *, stdin=None, timeout=None, cwd="/work", env=None, output_limit=None) -> Result:
        """Run argv in a warm sandbox (see the class)."""
        arguments = self._arguments(argv, stdin, timeout, cwd, env, output_limit)
        return drive(self._events(self._take(), *arguments))

    async def arun(self, argv, *, stdin=None, timeout=None, cwd="/work", env=None, output_limit=None) -> Result:
        """run() for asyncio: waiting for a sandbox, the run's output and its end are waits on the
        event loop (pipes, the agent's socket): no thread per run, so thousands may wait at once."""
        arguments = self._arguments(argv, stdin, timeout, cwd, env, output_limit)
        sandbox = await self._atake()
        return await adrive(self._events(sandbox, *arguments))  # started at once: it owns the sandbox

    def stream(self, argv, *, stdin=None, timeout=None, cwd="/work", env=None, output_limit=None):
        """run(), giving the output as it comes: a capsa.Stream (see Sandbox.stream)."""
        from capsa.api.supervise import Stream

        arguments = self._arguments(argv, stdin, timeout, cwd, env, output_limit)
        return Stream(self._events(None, *arguments))

    def _arguments(self, argv, stdin, timeout, cwd, env, output_limit) -> tuple:
        return (check_argv(argv), check_env(self._env if env is None else env), check_cwd(cwd), check_stdin(stdin),
                self._timeout if timeout is None else check_timeout(timeout),
                self._output_limit if output_limit is None else check_output_limit(output_limit))

    def _events(self, sandbox, argv, env_list, cwd, stdin, timeout, output_limit):
        """A run's generator (see supervise.Wait) in `sandbox`, or in one taken when it starts."""
        if sandbox is None:
            sandbox = self._take()
        broken = True
        try:
            result = yield from sandbox.events(argv, env_list, cwd, stdin, timeout, output_limit)
            broken = False
            return result
        except _Broken as err:
            if len(err.args) > 1:
                return err.args[1]  # the run's Result: it took its sandbox down with it
            raise SandboxStartError(f"cannot run in a pooled sandbox: {err.args[0]}") from None
        except SandboxStartError:
            broken = False  # the run could not exec; the sandbox is as good as before
            raise
        finally:
            self._give_back(sandbox, broken)

    def close(self) -> None:
        """Delete every sandbox of the pool; runs under way finish first."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout=60)
        while not self._idle.empty():
            sandbox = self._idle.get_nowait()
            with self._lock:
                self._all.discard(sandbox)
            sandbox.discard()
