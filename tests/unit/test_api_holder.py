"""capsa.api.holder, what a pooled sandbox's init execs once set up: run directly (a memfd of its
ELF), it must block in pause(2) and hold nothing else. x86-64 only, as the holder."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from capsa.api import holder

pytestmark = pytest.mark.skipif(not holder.supported(), reason="the holder is x86-64 machine code")
PAUSE = 34  # x86-64


def test_the_holder_waits_in_pause_until_killed():
    fd = holder.sealed_fd()
    try:
        process = subprocess.Popen(["capsa-hold"], executable=f"/proc/{os.getpid()}/fd/{fd}", pass_fds=(fd,))
    finally:
        os.close(fd)
    try:
        deadline = time.monotonic() + 30
        while syscall_of(process.pid) != PAUSE:  # blocked in pause(2), not spinning nor gone
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGCONT)  # a signal it does not die of: it pauses again
        while syscall_of(process.pid) != PAUSE:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        process.kill()
    assert process.wait(timeout=30) == -signal.SIGKILL


def test_the_holders_image_is_sealed():
    import fcntl

    fd = holder.sealed_fd()
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
        with pytest.raises(PermissionError):
            os.write(fd, b"x")
    finally:
        os.close(fd)


def syscall_of(pid: int) -> int | None:
    with open(f"/proc/{pid}/syscall") as f:
        first = f.read().split()[0]
    return int(first) if first.lstrip("-").isdigit() else None
