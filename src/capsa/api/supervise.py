"""Supervising a run of capsa's Python API: its output read up to a cap, the timeout enforced
on every process of the run, the Result put together; Stream, the output as it comes."""

from __future__ import annotations

import os
import selectors
import time

from capsa.api.result import Result

# After the init exits the kernel kills the rest of its pid namespace; the pipes reach EOF soon.
DRAIN_GRACE = 5.0


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


def supervise(container, out_r: int, err_r: int, timeout: float | None, output_limit: int) -> Result:
    """The run of the container's init (started): a generator, see run_events."""
    started = time.monotonic()
    budget = [output_limit]
    outputs = {out_r: Output("stdout", out_r, budget), err_r: Output("stderr", err_r, budget)}
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


def _collect(container, outputs: dict[int, Output], deadline: float | None) -> tuple[bool, float]:
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
