"""capsa.spawn: the machine code that clones a planned init's child sharing the caller's memory
(CLONE_VM) and execs it. Run for real (no namespaces: the child execs /bin/sh, which reads a
script on the stdin it was given); x86-64 only, as the code."""

from __future__ import annotations

import os
import socket

import pytest
from machine_code import assembled, needs_gnu_as

from capsa import spawn, tinyelf

pytestmark = [pytest.mark.skipif(not tinyelf.supported(), reason="the spawner is x86-64 machine code"),
              pytest.mark.skipif(os.geteuid() != 0, reason="the child becomes uid 0 (setresuid) as a planned init's does")]


def launch(script: bytes, executable: str = "/bin/sh", go: bytes = b"m", unshare: int = 0):
    """Spawn a child whose fds 0-2 are a pipe holding `script` and two pipes, fd 3 our socket's
    other end, that makes the namespaces `unshare` names; tell it `go`; (its wait status,
    stdout, stderr, what it wrote on the socket)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    program = os.open(executable, os.O_RDONLY | os.O_CLOEXEC)
    os.write(stdin_w, script)
    os.close(stdin_w)
    sources = [stdin_r, out_w, err_w, theirs.fileno()]
    pid = spawn.spawner().spawn(0, None, theirs.fileno(), sources, program, ours.fileno(), unshare=unshare)
    for fd in (stdin_r, out_w, err_w, program):
        os.close(fd)
    theirs.close()
    if go:
        try:
            ours.sendall(go)
        except BrokenPipeError:
            pass  # it failed before it read it: its report is queued

    ours.shutdown(socket.SHUT_WR)
    report = b""
    while True:
        try:
            chunk = ours.recv(64)
        except ConnectionResetError:  # it exited with our "m" unread: what it wrote came first
            break
        if not chunk:
            break
        report += chunk
    ours.close()
    _, status = os.waitpid(pid, 0)
    with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
        return status, out.read(), err.read(), report


def test_the_child_gets_its_fds_in_place_and_execs():
    status, out, err, report = launch(b"echo hello; ls /proc/self/fd >&2; id -u\n")
    assert os.waitstatus_to_exitcode(status) == 0, err
    assert out.decode().split() == ["hello", "0"]
    assert report == b""  # nothing failed: EOF only
    assert {"0", "1", "2", "3"} <= set(err.decode().split())


def test_a_failed_exec_is_reported_on_the_channel(tmp_path):
    (tmp_path / "data").write_bytes(b"not a program")
    os.chmod(tmp_path / "data", 0o644)
    status, _, _, report = launch(b"", executable=str(tmp_path / "data"))
    assert os.waitstatus_to_exitcode(status) == 1
    assert report == (0xFFFFFFFF).to_bytes(4, "little") + (13).to_bytes(4, "little")  # EACCES


def test_the_child_makes_the_namespaces_it_is_asked_to_unshare():
    from capsa import linux

    script = b"readlink /proc/self/ns/net /proc/self/ns/uts /proc/self/ns/ipc /proc/self/ns/mnt\n"
    status, out, err, report = launch(script, unshare=linux.CLONE_NEWNET | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC
                                      | linux.CLONE_NEWNS)
    assert os.waitstatus_to_exitcode(status) == 0 and report == b"", err
    theirs = out.decode().split()
    ours = [os.readlink(f"/proc/self/ns/{kind}") for kind in ("net", "uts", "ipc", "mnt")]
    assert len(theirs) == 4 and all(t != o for t, o in zip(theirs, ours, strict=True)), (theirs, ours)
    status, out, _, _ = launch(script)
    assert out.decode().split() == ours  # without: ours


def test_a_failed_unshare_is_reported_as_such_before_go():
    # CLONE_PTRACE is no flag of unshare's (the kernel says EINVAL): the failure is reported
    # with its own marker, and the child never reads "m" nor execs.
    status, out, _, report = launch(b"echo ran\n", unshare=0x2000)
    assert os.waitstatus_to_exitcode(status) == 1
    assert out == b""
    assert report == (0xFFFFFFFE).to_bytes(4, "little") + (22).to_bytes(4, "little")  # EINVAL


def test_without_go_the_child_exits_without_exec():
    status, out, _, report = launch(b"echo ran\n", go=b"")
    assert os.waitstatus_to_exitcode(status) == 1
    assert out == b"" and report == b""


def test_a_caller_that_dies_before_go_does_not_leave_the_child_waiting(tmp_path):
    # Our end closed (not shut down: as a caller killed before "m" would leave it): the child
    # closed its own copy of it first, so it sees EOF and exits; holding it, it would wait for ever.
    import time

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    program = os.open("/bin/true", os.O_RDONLY | os.O_CLOEXEC)
    pid = spawn.spawner().spawn(0, None, theirs.fileno(), [0, 1, 2, theirs.fileno()], program, ours.fileno())
    os.close(program)
    theirs.close()
    ours.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("the child still waits for its go, its caller gone")
    assert os.waitstatus_to_exitcode(status) == 1


def test_the_caller_s_memory_and_signal_mask_are_untouched():
    import signal

    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    marker = bytearray(b"untouched")
    status, out, _, _ = launch(b"echo ok\n")
    assert os.waitstatus_to_exitcode(status) == 0 and out.startswith(b"ok")
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    assert marker == b"untouched"


@needs_gnu_as
def test_the_machine_code_is_spawn_s_assembled(tmp_path):
    assert assembled(spawn, "spawn.s", "src/capsa", tmp_path) == spawn._CODE
