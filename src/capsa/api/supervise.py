"""Supervising a run of capsa's Python API: its output read up to a cap, the timeout enforced
on every process of the run, the Result put together; Stream, the output as it comes."""

from __future__ import annotations

import os
import select
import time

from capsa.api.result import Result

# After the init exits the kernel kills the rest of its pid namespace; the pipes reach EOF soon.
DRAIN_GRACE = 5.0


class Wait:
    """What a run's generator (pool.PooledSandbox.events, oneshot.run_events) waits for: one of
    `fds` readable (or at EOF), or `timeout` seconds (None: no limit). It yields a Wait and is
    sent the list of the fds that are ready: wait() blocks for it, await_ready() waits on the
    asyncio event loop. It also yields ("stdout" | "stderr", bytes) as output comes."""

    __slots__ = ("fds", "timeout")

    def __init__(self, fds: list[int], timeout: float | None):
        self.fds = fds
        self.timeout = timeout

    def wait(self) -> list[int]:
        poller = select.poll()
        for fd in self.fds:
            poller.register(fd, select.POLLIN)
        milliseconds = None if self.timeout is None else int(self.timeout * 1000) + 1
        return [fd for fd, _ in poller.poll(milliseconds)]

    async def await_ready(self) -> list[int]:
        import asyncio

        loop = asyncio.get_running_loop()
        woken = loop.create_future()
        ready: list[int] = []

        def readable(fd: int) -> None:
            if fd not in ready:  # the loop may call it again before this task resumes
                ready.append(fd)
            if not woken.done():
                woken.set_result(None)

        for fd in self.fds:
            loop.add_reader(fd, readable, fd)
        try:
            await asyncio.wait_for(woken, self.timeout)
        except TimeoutError:
            pass
        finally:
            for fd in self.fds:
                loop.remove_reader(fd)
        return ready


def drive(events):
    """Run a run's generator to its end here, blocking; its Result (the output it yields is in
    the Result too)."""
    value = None
    while True:
        try:
            item = events.send(value)
        except StopIteration as done:
            return done.value
        value = item.wait() if isinstance(item, Wait) else None


async def adrive(events, first_step_in_thread: bool = False):
    """drive() on the asyncio event loop: no thread waits for the run. first_step_in_thread: the
    generator's first step (a cold run's container creation, ~10 ms of kernel work) runs in the
    loop's default executor, so that it does not hold the loop."""
    import asyncio

    try:
        if first_step_in_thread:
            item = await asyncio.get_running_loop().run_in_executor(None, events.send, None)
        else:
            item = events.send(None)
        while True:
            value = await item.await_ready() if isinstance(item, Wait) else None
            item = events.send(value)
    except StopIteration as done:
        return done.value
    except BaseException:
        events.close()  # cancelled (or failed): the run is killed and its container deleted
        raise


class Output:
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


def supervise(container, out_r: int, err_r: int, timeout: float | None, output_limit: int, init=None) -> Result:
    """The run of the container's init (started): a generator, see run_events. `init`: what
    tells the init's end (fileno() readable once it has ended, wait() its ExitStatus):
    oneshot.ReportedExit, or by default the init's own handle (a child of ours)."""
    started = time.monotonic()
    budget = [output_limit]
    outputs = {out_r: Output("stdout", out_r, budget), err_r: Output("stderr", err_r, budget)}
    # The init's own handle, not container.wait(): the container is deleted next, so recording
    # the exit in its state (under its lock) would be wasted.
    init = init if init is not None else container.init_process()
    try:
        timed_out, ended = yield from _collect(container, init, outputs, None if timeout is None else started + timeout)
    finally:
        for output in outputs.values():
            output.close()
    from capsa.process import oom_kill_count

    status = init.wait(timeout=30)
    reported = getattr(init, "usage", None)  # oneshot.ReportedExit: read by the zygote before the delete
    if reported is not None:
        oom_kills, cpu_time, peak_memory = reported
    else:
        oom_kills = oom_kill_count(container.cgroup())
        cpu_time, peak_memory = usage(container)
    oom_killed = oom_kills > 0
    return Result(
        stdout=outputs[out_r].value(), stderr=outputs[err_r].value(),
        exit_code=status.exit_code if status.known else -1, signal=status.signal, timed_out=timed_out,
        oom_killed=oom_killed,
        output_truncated=any(o.truncated for o in outputs.values()),
        wall_time=ended - started, cpu_time=cpu_time, peak_memory=peak_memory,
    )


def _collect(container, init, outputs: dict[int, Output], deadline: float | None) -> tuple[bool, float]:
    """Read the run's output until its init has exited and the pipes are at EOF; kill the whole
    run at the deadline, or if its pipes stay open DRAIN_GRACE seconds after the init exited
    (a process that left the pid namespace's reach cannot exist, but no wait is unbounded).
    Returns (timed out, when the init exited)."""
    main = init.fileno()
    timed_out = killed = False
    ended = None
    watched = [*outputs, main]
    while watched:
        now = time.monotonic()
        limit = deadline if ended is None else ended + DRAIN_GRACE
        if limit is not None and now >= limit:
            if killed:
                break  # killed and still not at EOF: give up on what is left unread
            timed_out, killed = ended is None, True
            _kill_all(container)
            deadline, ended = None, ended or now
            limit = now + DRAIN_GRACE
        ready = yield Wait(watched, None if limit is None else max(0.0, limit - now))
        for fd in ready:
            if fd == main:
                watched.remove(fd)
                ended = ended or time.monotonic()
            else:
                output = outputs[fd]
                data = output.read()
                if output.done:
                    watched.remove(fd)
                    output.close()
                if data:
                    yield output.name, data
    return timed_out, ended if ended is not None else time.monotonic()


def _kill_all(container) -> None:
    """Every process of the run: those of its cgroup (frozen first where it has a freezer, so
    that none forks away), and its init, whose death ends whatever is left of its pid namespace."""
    cgroup = container.cgroup()
    if cgroup is not None:
        cgroup.kill_all(9)
    try:
        os.kill(container.pid, 9)
    except ProcessLookupError:
        pass


def usage(container) -> tuple[float, int]:
    """CPU seconds and peak memory of the run's cgroup: the two files that say them (v1
    cpuacct.usage and memory.max_usage_in_bytes, v2 cpu.stat and memory.peak), not every
    statistic of the cgroup (half a millisecond)."""
    from capsa.cgroups.common import read

    cgroup = container.cgroup()
    if cgroup is None:
        return 0.0, 0
    cpu_dir, memory_dir, unified = cgroup.path_for("cpuacct") or cgroup.path_for("cpu"), cgroup.path_for("memory"), \
        cgroup.cgroup2_dir()
    cpu = memory = 0
    try:
        if cpu_dir and cpu_dir != unified:
            cpu = int(read(f"{cpu_dir}/cpuacct.usage")) / 1e9
        elif cpu_dir:
            line = next(line for line in read(f"{cpu_dir}/cpu.stat").splitlines() if line.startswith("usage_usec"))
            cpu = int(line.split()[1]) / 1e6
        if memory_dir:
            memory = int(read(f"{memory_dir}/{'memory.peak' if memory_dir == unified else 'memory.max_usage_in_bytes'}"))
    except (OSError, ValueError, StopIteration):
        pass  # a controller the host does not have: unknown (0)
    return cpu, memory


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
        value = None
        try:
            while True:
                item = self._events.send(value)
                if not isinstance(item, Wait):
                    return item
                value = item.wait()
        except StopIteration as done:
            self.result = done.value
            raise StopIteration from None

    def close(self) -> None:
        self._events.close()  # GeneratorExit in the run: its container is killed and deleted

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
