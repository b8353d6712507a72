"""Processes the library can wait on, and the supervision of a container's process.

`Process` is a handle on one host process: a pidfd where the kernel has one (pidfd_open, Linux
5.3), else its pid checked against its start time (/proc/PID/stat) so that a recycled pid is never
taken for it. It signals the process (pidfd_send_signal: never a recycled pid), polls and waits
for it (waitid P_PIDFD), and gives its pidfd to select/poll/asyncio users: the fd becomes
readable when the process exits.

Only a process's parent learns its exit status. A container's init is forked by an intermediate
child that exits, so the init is re-parented to the nearest subreaper: make the caller one
(`become_subreaper()`, as `capsa run` does) before creating the container, and waiting gives the
init's status. A caller that is not its parent (another `capsa` call, a monitor started later)
still learns when the process ends (the pidfd becomes readable), but not how: `ExitStatus.known`
is then False.

The supervision helpers are what `capsa run`, `exec` and `restore` do while their container runs:
forward every signal they get to it, copy its terminal (capsa.terminal), reap every child (a
subreaper inherits the container's orphans) until it exits, and watch the cgroup for OOM kills.

Loaded by `run` and `exec`: it imports no more than posix and _signal (and procfs and errors,
which capsa.container loads anyway).
"""

from __future__ import annotations

import posix

from capsa import procfs
from capsa.errors import ENOSYS

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any


class ExitStatus:
    """How a process ended: exited with `code`, or killed by `signal` (with a core dump or not).

    Both are None when the process ended but its status was not ours to learn (`known` False).
    """

    __slots__ = ("code", "signal", "core_dumped")

    def __init__(self, code: int | None = None, signal: int | None = None, core_dumped: bool = False):
        self.code = code
        self.signal = signal
        self.core_dumped = core_dumped

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        """From the status word of waitpid(2) (os.waitpid's second value)."""
        if posix.WIFSIGNALED(status):
            return cls(signal=posix.WTERMSIG(status), core_dumped=posix.WCOREDUMP(status))
        if posix.WIFEXITED(status):
            return cls(code=posix.WEXITSTATUS(status))
        raise ValueError(f"wait status {status:#x} is neither an exit nor a termination by a signal")

    @classmethod
    def from_siginfo(cls, si_code: int, si_status: int) -> ExitStatus:
        """From waitid(2)'s siginfo: si_code CLD_EXITED (si_status is the exit code), CLD_KILLED
        or CLD_DUMPED (si_status is the signal)."""
        if si_code == posix.CLD_EXITED:
            return cls(code=si_status)
        if si_code in (posix.CLD_KILLED, posix.CLD_DUMPED):
            return cls(signal=si_status, core_dumped=si_code == posix.CLD_DUMPED)
        raise ValueError(f"waitid si_code {si_code} is not an exit")

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ExitStatus:
        """From the fields record() wrote into a container's state."""
        signal = record.get("exitSignal")
        if signal is not None:
            return cls(signal=signal)
        return cls(code=record.get("exitCode"))

    @property
    def known(self) -> bool:
        return self.code is not None or self.signal is not None

    @property
    def exit_code(self) -> int | None:
        """The shell's number for it: the exit code, or 128 + the signal (137 for SIGKILL)."""
        if self.signal is not None:
            return 128 + self.signal
        return self.code

    def record(self) -> dict[str, Any]:
        """The fields kept in a container's state.json (never in the OCI state `capsa state` prints)."""
        fields: dict[str, Any] = {}
        if self.known:
            fields["exitCode"] = self.exit_code
        if self.signal is not None:
            fields["exitSignal"] = self.signal
        return fields

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExitStatus):
            return NotImplemented
        return (self.code, self.signal, self.core_dumped) == (other.code, other.signal, other.core_dumped)

    def __hash__(self) -> int:
        return hash((self.code, self.signal, self.core_dumped))

    def __repr__(self) -> str:
        if self.signal is not None:
            return f"ExitStatus(signal={self.signal}{', core_dumped=True' if self.core_dumped else ''})"
        if self.code is not None:
            return f"ExitStatus(code={self.code})"
        return "ExitStatus(unknown)"


def open_pidfd(pid: int) -> int | None:
    """A pidfd of `pid` (close-on-exec), None where the kernel or the interpreter has none.
    ProcessLookupError if there is no such process (a zombie still has its pid)."""
    pidfd_open = getattr(posix, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return pidfd_open(pid)
    except OSError as err:
        if err.errno == ENOSYS:  # Linux before 5.3
            return None
        raise


class Process:
    """A handle on one host process. See the module's docstring for what it can learn and when."""

    def __init__(self, pid: int, pidfd: int | None = None, start_time: int | None = None):
        self.pid = pid
        self.pidfd = pidfd
        self.start_time = start_time
        self._status: ExitStatus | None = None
        self._not_our_child = False

    @classmethod
    def open(cls, pid: int, start_time: int | None = None) -> Process:
        """A handle on `pid`; with `start_time` (ticks since boot, /proc/PID/stat), only if `pid`
        is still that process, else ProcessLookupError."""
        if pid <= 0:
            raise ProcessLookupError(f"no process {pid}")
        pidfd = open_pidfd(pid)
        # Checked after the pidfd is opened: if pid was still the process then, the pidfd is its.
        if start_time is not None and procfs.start_time(pid) != start_time:
            if pidfd is not None:
                posix.close(pidfd)
            raise ProcessLookupError(f"process {pid} has exited")
        if pidfd is None and start_time is None:
            # No pidfd: the start time is what tells this process from a later one with its pid.
            start_time = procfs.start_time(pid)
            if start_time is None:
                raise ProcessLookupError(f"process {pid} has exited")
        return cls(pid, pidfd, start_time)

    # -- the pidfd -------------------------------------------------------------------------------
    def fileno(self) -> int:
        """The pidfd, readable once the process has exited (for select, poll and asyncio's add_reader)."""
        if self.pidfd is None:
            from capsa.errors import UnsupportedError

            raise UnsupportedError("this kernel has no pidfd (Linux 5.3 or later): poll() the process instead")
        return self.pidfd

    def close(self) -> None:
        if self.pidfd is not None:
            posix.close(self.pidfd)
            self.pidfd = None

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self.pidfd is not None:
            try:
                posix.close(self.pidfd)
            except (OSError, TypeError, AttributeError):  # TypeError/AttributeError: interpreter shutdown
                pass

    def __repr__(self) -> str:
        return f"Process(pid={self.pid}, pidfd={self.pidfd}, status={self._status!r})"

    # -- signals ---------------------------------------------------------------------------------
    def send_signal(self, signal: int) -> None:
        """Send `signal`; ProcessLookupError once the process has exited (or been waited for)."""
        if self._status is not None:
            raise ProcessLookupError(f"process {self.pid} has exited")
        if self.pidfd is not None:
            import _signal

            _signal.pidfd_send_signal(self.pidfd, signal)
            return
        if not procfs.is_alive(self.pid, self.start_time):
            raise ProcessLookupError(f"process {self.pid} has exited")
        posix.kill(self.pid, signal)

    # -- waiting ---------------------------------------------------------------------------------
    @property
    def status(self) -> ExitStatus | None:
        """How the process ended, once poll() or wait() saw it end; None before."""
        return self._status

    def poll(self) -> ExitStatus | None:
        """The exit status if the process has ended (reaping it if it is our child), else None."""
        if self._status is None:
            self._settle(self._reap(block=False))
        return self._status

    def wait(self, timeout: float | None = None) -> ExitStatus:
        """Wait until the process ends (TimeoutError after `timeout` seconds); its ExitStatus."""
        if self._status is not None:
            return self._status
        if timeout is None:
            return self._settle(self._reap(block=True))
        import time

        deadline = time.monotonic() + timeout
        while (status := self.poll()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"process {self.pid} is still running after {timeout:g} s")
            self._sleep_until_exit(remaining)
        return status

    def reaped(self, status: ExitStatus) -> None:
        """Tell the handle how the process ended, when someone else reaped it (reap_until)."""
        self._settle(status)

    def _settle(self, status: ExitStatus | None) -> ExitStatus | None:
        # Of two threads waiting on one handle, one reaps the child and the other finds it gone:
        # the status the first learnt is kept.
        if status is not None and (self._status is None or not self._status.known):
            self._status = status
        return self._status

    def _reap(self, block: bool) -> ExitStatus | None:
        if not self._not_our_child:
            try:
                return self._wait_child(block)
            except ChildProcessError:
                # Not our child (re-parented elsewhere), or reaped by someone else: only the
                # end itself can be seen.
                self._not_our_child = True
        while not self._has_exited():
            if not block:
                return None
            self._sleep_until_exit(None)
        return ExitStatus()

    def _wait_child(self, block: bool) -> ExitStatus | None:
        options = 0 if block else posix.WNOHANG
        if self.pidfd is not None:
            result = posix.waitid(posix.P_PIDFD, self.pidfd, posix.WEXITED | options)
            return None if result is None else ExitStatus.from_siginfo(result.si_code, result.si_status)
        pid, status = posix.waitpid(self.pid, options)
        return ExitStatus.from_wait_status(status) if pid else None

    def _has_exited(self) -> bool:
        if self.pidfd is not None:
            import select

            return bool(select.select([self.pidfd], [], [], 0)[0])
        return not procfs.is_alive(self.pid, self.start_time)

    def _sleep_until_exit(self, timeout: float | None) -> None:
        if self.pidfd is not None:
            import select

            select.select([self.pidfd], [], [], timeout)
            return
        import time

        time.sleep(min(0.01, timeout) if timeout is not None else 0.01)  # no pidfd: poll /proc


# -- supervision: what `capsa run`, `exec` and `restore` do while their container runs -------------
def become_subreaper() -> None:
    """Make this process a child subreaper (PR_SET_CHILD_SUBREAPER): a container's init, and its
    orphans, are re-parented to it, so it can wait for them and learn their exit status."""
    from capsa import linux

    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)


def forward_signals(process: Process, keep_winch: bool = False) -> dict[int, Any]:
    """Pass on to `process` every signal this process receives (from the main thread only, as
    signal handlers are set); keep_winch leaves SIGWINCH alone (a terminal proxy's resize).
    Returns the previous handlers, for restore_signals()."""
    import _signal

    def forward(signum: int, frame: Any) -> None:
        try:
            process.send_signal(signum)
        except ProcessLookupError:
            pass

    # Never forwarded: what cannot be caught, and SIGCHLD, which tells of our own children.
    skipped = (_signal.SIGKILL, _signal.SIGSTOP, _signal.SIGCHLD, _signal.SIGWINCH if keep_winch else -1)
    previous = {}
    for signum in range(1, _signal.NSIG):
        if signum in skipped:
            continue
        try:
            previous[signum] = _signal.signal(signum, forward)
        except (OSError, ValueError):  # signals the interpreter may not handle (32, 33: glibc's own)
            pass
    return previous


def restore_signals(previous: dict[int, Any]) -> None:
    import _signal

    for signum, handler in previous.items():
        _signal.signal(signum, handler)


def reap_until(process: Process) -> ExitStatus:
    """Reap every child that exits (a subreaper inherits a container's orphans) until `process`
    does; its ExitStatus. For a program that owns all of its children, as `capsa run` does: a
    program with children of its own to wait for waits on the handle instead (Process.wait)."""
    while True:
        try:
            pid, status = posix.waitpid(-1, 0)
        except ChildProcessError:
            # Not our child after all, or already reaped: wait on the handle (its end, if not how).
            return process.wait()
        if pid == process.pid:
            exit_status = ExitStatus.from_wait_status(status)
            process.reaped(exit_status)
            return exit_status


def supervise(process: Process, proxy: Any = None) -> ExitStatus:
    """What `capsa run`, `exec` and `restore` do until their container's process exits: forward
    every signal to it, copy its terminal through `proxy` (capsa.terminal.TerminalProxy) until
    the container closes it, then reap children until `process` exits."""
    forward_signals(process, keep_winch=proxy is not None)
    if proxy is not None:
        proxy.copy_until_exit()
    return reap_until(process)


# -- OOM -----------------------------------------------------------------------------------------
def oom_kill_count(cgroup: Any) -> int:
    """How many processes the kernel's OOM killer has killed in the cgroup (v1 memory.oom_control,
    v2 memory.events: oom_kill); 0 without a memory controller."""
    if cgroup is None:
        return 0
    directory = cgroup.path_for("memory")
    if directory is None:
        return 0
    from capsa.cgroups.common import read_keyed

    if cgroup.cgroup2_dir() == directory:  # v2: the container's one directory
        return read_keyed(f"{directory}/memory.events").get("oom_kill", 0)
    return read_keyed(f"{directory}/memory.oom_control").get("oom_kill", 0)


def wait_for_oom(watch: Any, timeout: float) -> bool:
    """Sleep for `timeout` seconds, or less if `watch` (a cgroup's oom_watch(), or None) sees the
    container hit its memory limit: then True."""
    import time

    if watch is None:
        time.sleep(timeout)
        return False
    import select

    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([watch], [], [], remaining)
        if readable and watch.fired():
            return True
    return False
