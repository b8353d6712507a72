"""Running a container's health check (the rules are capsa.manager.health's): one check as an
exec in the running container, its result counted into State.Health, a `health_status` event
when the status changes, and the --health-on-failure action once it is unhealthy.

Who runs it: `capsactl healthcheck run NAME` (in the caller), and the container's monitor on
its own schedule, every --health-interval (capsa.manager.monitor's _HealthTimer): the monitor
starts `scheduled_main` in a fresh `python -I -S` (it stays lean itself) and starts no new
check while one runs. podman uses a systemd timer for this; capsa needs no systemd.

The timeout holds: the check runs in a forked child (the exec through the container's runtime,
its stdout and stderr a pipe to us); at the timeout the child and every process under it (the
runtime's exec, the check in the container and what it started) are killed with SIGKILL, and
the result is a failure (exit code -1, docker's), whatever the check would have said.
"""

from __future__ import annotations

import os
import time

from capsa.manager.errors import InvalidState, ManagerError

MAX_READ = 64 * 1024  # of a check's output; 500 bytes are kept (capsa.manager.health.MAX_OUTPUT)
TIMED_OUT = -1


class NoHealthcheck(ManagerError):
    def __init__(self, name: str):
        super().__init__(f"container {name} has no defined healthcheck")


def config_of(container):
    """The container's HealthConfig, or None (no --health-cmd and no Healthcheck in its image)."""
    from capsa.manager.health import HealthConfig

    record = container.config.get("Healthcheck")
    return HealthConfig.from_record(record) if record else None


def run_check(manager, text: str, scheduled: bool = False) -> tuple[str, int] | None:
    """One check of the running container `text`, its result recorded: (the health status after
    it, the check's exit code). Scheduled by the monitor: a container that is not running (any
    more) is no error, None."""
    from capsa.manager.containers import RUNNING

    container = manager.get(text)
    config = config_of(container)
    if config is None:
        if scheduled:
            return None
        raise NoHealthcheck(container.name)
    if container.status != RUNNING:
        if scheduled:
            return None
        raise InvalidState(f"container {container.name} is not running (it is {container.status}): a health "
                           "check runs only in a running container")
    from capsa.manager.containers import now

    start = now()
    if scheduled:
        _watchdog(config.timeout + WATCHDOG_GRACE)
    with manager.store.closed_for_fork():  # the check's child must not share SQLite's lock table
        code, output = exec_with_timeout(manager.paths, container, config.command(), config.timeout)
    end = now()
    if scheduled:
        _watchdog(WATCHDOG_AFTER_CHECK)
    status, changed = record_result(manager, container.id, config, code, output, start, end)
    if status is None:
        if scheduled:
            return None
        raise InvalidState(f"container {container.name} stopped during its health check")
    if changed:
        from capsa.manager import events

        events.emit(manager.paths, "health_status", id=container.id, name=container.name,
                    image=container.config.get("ImageName", ""), attributes={"health_status": status})
    from capsa.manager.health import UNHEALTHY

    if status == UNHEALTHY and code != 0:
        on_failure(manager, container, config.on_failure)
    return status, code


# A scheduled checker that outlives its check by this much is stuck (a lock never granted, a
# runtime call that never returns): SIGALRM's default action ends it, so that the monitor, which
# never runs two checks at once, starts the next one on time.
WATCHDOG_GRACE = 60
WATCHDOG_AFTER_CHECK = 600  # recording the result and an on-failure stop (its own timeout included)


def _watchdog(seconds: float) -> None:
    import signal

    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(max(1, int(seconds + 0.999)))


def record_result(manager, container_id: str, config, code: int, output: str, start: str,
                  end: str) -> tuple[str | None, bool]:
    """The result counted into the container's State.Health, in one transaction: (the status
    after it, whether it changed); (None, False) if the container stopped meanwhile."""
    from capsa.manager.containers import RUNNING
    from capsa.manager.health import HealthState

    with manager.store.transaction() as db:
        current = manager._read(container_id, db)
        if current is None or current.status != RUNNING:
            return None, False
        health = HealthState.from_record(current.state.get("Health"))
        changed = health.add_result(config, code, output, start, end,
                                    in_start_period(current.state.get("StartedAt"), config.start_period))
        current.state["Health"] = health.record()
        manager._write(db, current, current.status)
    return health.status, changed


def in_start_period(started_at: str | None, start_period: float, now_ns: int | None = None) -> bool:
    """Whether a check now falls in the start period after `started_at` (RFC 3339)."""
    if not start_period or not started_at:
        return False
    from capsa.manager.times import parse_rfc3339

    started = parse_rfc3339(started_at)
    if started is None:
        return False
    return ((time.time_ns() if now_ns is None else now_ns) - started) < start_period * 1e9


def on_failure(manager, container, action: str) -> None:
    """--health-on-failure: kill (SIGKILL; not the user's kill, so a restart policy still
    applies), stop (as the user's stop), restart; none does nothing."""
    if action == "kill":
        manager._signal(manager.runtime(container), container, 9)
    elif action == "stop":
        manager.stop(container.id)
    elif action == "restart":
        manager.restart(container.id)


# -- one exec, with its timeout ----------------------------------------------------------------
def exec_with_timeout(paths, container, argv: list[str], timeout: float) -> tuple[int, str]:
    """Run argv in the container; (its exit code, what it wrote to stdout and stderr). Past the
    timeout it is killed, all of it: (-1, a message saying so)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: the exec, with the pipe as its stdout and stderr
        os.close(read_end)
        _run_exec_child(paths, container, argv, write_end)
    os.close(write_end)
    try:
        output, finished = _collect(pid, read_end, time.monotonic() + timeout)
    except BaseException:  # interrupted (^C on `healthcheck run`): nothing of the check is left
        kill_tree(pid)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(read_end)
    if not finished:
        kill_tree(pid)
        os.waitpid(pid, 0)
        return TIMED_OUT, f"health check exceeded its timeout of {timeout:g}s: killed"
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return (code if code >= 0 else 128 - code), output.decode(errors="replace")


def _run_exec_child(paths, container, argv: list[str], write_end: int) -> None:
    code = 125
    try:
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        from capsa.manager import execs

        code = execs.exec_process(paths, container.id, container.runtime_path, argv)
    except ManagerError as err:  # the command cannot run: podman's 126/127, its message the output
        os.write(2, f"{err}\n".encode())
        code = getattr(err, "exit_code", 125)
    except BaseException as err:  # noqa: BLE001 - the child must end here, whatever happened
        os.write(2, f"the health check could not run: {err or type(err).__name__}\n".encode())
    finally:
        os._exit(code if code is not None and 0 <= code < 256 else 125)


def _collect(pid: int, fd: int, deadline: float) -> tuple[bytes, bool]:
    """The child's output until it has exited (True) or the deadline passed (False). Once it
    has exited, what is left in the pipe is read without waiting: a process the check left in
    the background may hold the pipe open."""
    import select

    pidfd = os.pidfd_open(pid)
    chunks: list[bytes] = []
    reading = True
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return b"".join(chunks), False
            readable, _, _ = select.select([fd, pidfd] if reading else [pidfd], [], [], remaining)
            if pidfd in readable:
                os.set_blocking(fd, False)
                _read_into(fd, chunks)
                return b"".join(chunks), True
            if fd in readable:
                reading = _read_into(fd, chunks, once=True)
    finally:
        os.close(pidfd)


def _read_into(fd: int, chunks: list[bytes], once: bool = False) -> bool:
    """Read into chunks (up to MAX_READ kept); False at the end of the pipe."""
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        if sum(map(len, chunks)) < MAX_READ:
            chunks.append(data)
        if once:
            return True


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every process under it (found through /proc's parent links; again until
    none is left that was not signalled, as one may fork meanwhile)."""
    signalled: set[int] = set()
    for _ in range(5):
        targets = descendants(pid, _parents()) | {pid}
        new = targets - signalled
        if not new:
            return
        for target in new:
            try:
                os.kill(target, 9)
            except ProcessLookupError:
                pass
        signalled |= new


def descendants(pid: int, parents: dict[int, int]) -> set[int]:
    """The processes under `pid`, given each process's parent."""
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found, pending = set(), [pid]
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def _parents() -> dict[int, int]:
    from capsa import procfs

    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = procfs.stat_fields(int(entry))
            if fields and fields[0] not in ("Z", "X"):
                parents[int(entry)] = int(fields[1])
    return parents


# -- the monitor's scheduled check --------------------------------------------------------------
def scheduled_main(arguments: list[str]) -> None:
    """What the monitor starts every interval: graph root, run root, state root, container id."""
    code = 1
    try:
        from capsa.manager.containers import Containers
        from capsa.manager.paths import Paths
        from capsa.manager.store import Store

        graph, run, state, container_id = arguments
        store = Store(Paths(graph, run, state))
        try:
            run_check(Containers(store, refresh=False), container_id, scheduled=True)
        except ManagerError:
            pass  # removed or stopped meanwhile: nothing to check, nothing to report
        finally:
            store.close()
        code = 0
    except BaseException:  # noqa: BLE001 - nobody to raise to: the monitor's log gets the traceback
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)
