"""capsa.process: exit statuses decoded from wait statuses and siginfo, and the Process handle on
plain child processes (no container, no root needed)."""

from __future__ import annotations

import os
import select
import signal
import time

import pytest

from capsa.process import ExitStatus, Process


# -- ExitStatus --------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exit_status_of_an_exit(code):
    status = ExitStatus.from_wait_status(code << 8)
    assert (status.code, status.signal, status.exit_code, status.known) == (code, None, code, True)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_exit_status_of_a_signal_is_the_shells_128_plus_n(signum):
    status = ExitStatus.from_wait_status(signum)
    assert (status.code, status.signal, status.exit_code, status.core_dumped) == (None, signum, 128 + signum, False)
    assert ExitStatus.from_wait_status(signum | 0x80).core_dumped  # WCOREDUMP


def test_a_stopped_status_is_no_exit():
    with pytest.raises(ValueError):
        ExitStatus.from_wait_status(0x137F)  # WIFSTOPPED, SIGSTOP


def test_exit_status_from_siginfo():
    assert ExitStatus.from_siginfo(os.CLD_EXITED, 3) == ExitStatus(code=3)
    assert ExitStatus.from_siginfo(os.CLD_KILLED, 9) == ExitStatus(signal=9)
    assert ExitStatus.from_siginfo(os.CLD_DUMPED, 11) == ExitStatus(signal=11, core_dumped=True)
    with pytest.raises(ValueError):
        ExitStatus.from_siginfo(os.CLD_STOPPED, 19)


def test_exit_status_record_round_trip():
    for status in (ExitStatus(code=0), ExitStatus(code=42), ExitStatus(signal=9)):
        assert ExitStatus.from_record(status.record()) == status
    assert ExitStatus(signal=9).record() == {"exitCode": 137, "exitSignal": 9}
    assert ExitStatus(code=3).record() == {"exitCode": 3}


def test_unknown_exit_status():
    unknown = ExitStatus()
    assert not unknown.known and unknown.exit_code is None and unknown.record() == {}
    assert ExitStatus.from_record({"finishedAt": "2025-01-01T00:00:00Z"}) == unknown
    assert repr(unknown) == "ExitStatus(unknown)"


# -- Process: real children ----------------------------------------------------------------------
def _child(code: int | None = None, sleep: float = 0.0) -> int:
    pid = os.fork()
    if pid == 0:
        time.sleep(sleep)
        os._exit(code or 0)
    return pid


def _no_pidfd(pid: int) -> Process:
    """The handle a kernel without pidfd_open gives: pid and start time."""
    with open(f"/proc/{pid}/stat") as f:
        start_time = int(f.read().rsplit(")", 1)[1].split()[19])
    return Process(pid, None, start_time)


@pytest.mark.parametrize("opener", [Process.open, _no_pidfd], ids=["pidfd", "pid"])
def test_wait_gives_the_exit_code(opener):
    with opener(_child(7)) as process:
        assert process.wait(timeout=10) == ExitStatus(code=7)
        assert process.wait() == ExitStatus(code=7)  # kept: the child is reaped once
        assert process.poll() == ExitStatus(code=7)


@pytest.mark.parametrize("opener", [Process.open, _no_pidfd], ids=["pidfd", "pid"])
def test_signal_poll_and_timeout(opener):
    with opener(_child(sleep=30)) as process:
        assert process.poll() is None
        with pytest.raises(TimeoutError):
            process.wait(timeout=0.05)
        process.send_signal(signal.SIGKILL)
        status = process.wait(timeout=10)
        assert (status.signal, status.exit_code) == (signal.SIGKILL, 137)
        with pytest.raises(ProcessLookupError):
            process.send_signal(signal.SIGTERM)


def test_pidfd_is_readable_once_the_process_exits():
    with Process.open(_child(sleep=30)) as process:
        assert select.select([process], [], [], 0)[0] == []
        process.send_signal(signal.SIGTERM)
        assert select.select([process], [], [], 10)[0] == [process]
        assert process.poll() == ExitStatus(signal=signal.SIGTERM)


def test_a_process_that_is_not_our_child_ends_with_an_unknown_status():
    """Only the parent learns the exit status: a grandchild (re-parented away when its parent
    exits) is seen to end, not how."""
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        grandchild = os.fork()
        if grandchild == 0:
            os.close(read_end)
            time.sleep(0.5)
            os._exit(5)
        os.write(write_end, str(grandchild).encode())
        os._exit(0)
    os.close(write_end)
    grandchild = int(os.read(read_end, 32))
    os.close(read_end)
    os.waitpid(middle, 0)
    with Process.open(grandchild) as process:
        status = process.wait(timeout=10)
    assert not status.known


def test_open_refuses_a_pid_that_is_not_the_recorded_process():
    pid = _child()
    os.waitpid(pid, 0)
    with pytest.raises(ProcessLookupError):
        Process.open(pid)
    with pytest.raises(ProcessLookupError):
        Process.open(os.getpid(), start_time=1)  # our pid, but not our start time
