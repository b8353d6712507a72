"""capsa.api.waiter, the machine code a pooled slot waits in: run directly (a memfd of its ELF),
fed requests as the pool sends them. x86-64 only, as the waiter."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest
from machine_code import assembled, needs_gnu_as

from capsa.api import waiter

pytestmark = pytest.mark.skipif(not waiter.supported(), reason="the waiter is x86-64 machine code")


@pytest.fixture(scope="module")
def image():
    fd = waiter.sealed_fd()
    yield fd
    os.close(fd)


def start(image: int, argv=("capsa-slot",)):
    """The waiter with fd 0 our socket's other end and fd 3 a status pipe, as a slot execs it."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    status_r, status_w = os.pipe()

    def as_a_slot():
        os.dup2(theirs.fileno(), 0)
        os.dup2(status_w, 3)
        os.closerange(4, 1024)

    # The parent's fd of the image: the child closes every fd above 3 before the exec
    process = subprocess.Popen(list(argv), executable=f"/proc/{os.getpid()}/fd/{image}", preexec_fn=as_a_slot,
                               close_fds=False)
    theirs.close()
    os.close(status_w)
    return process, ours, status_r


def run(image: int, argv: list[str], env: list[str], cwd: str, stdin: bytes = b"") -> tuple[int, bytes, bytes, bytes]:
    process, ours, status_r = start(image)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.write(in_w, stdin)
    os.close(in_w)
    ours.sendmsg([waiter.request(argv, env, cwd)],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, b"".join(fd.to_bytes(4, "little") for fd in (in_r, out_w, err_w)))])
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    ours.close()
    out = b"".join(iter(lambda: os.read(out_r, 65536), b""))
    err = b"".join(iter(lambda: os.read(err_r, 65536), b""))
    code = process.wait(timeout=30)
    status = os.read(status_r, 100)
    for fd in (out_r, err_r, status_r):
        os.close(fd)
    return code, status, out, err


def test_a_request_runs_with_its_stdio_cwd_argv_and_env_only(image, tmp_path):
    sh = shutil.which("sh")
    code, status, out, err = run(image, ["sh", "-c", 'cat; pwd; echo "$A|$B|$#|$1"; ls /proc/self/fd; echo e >&2; exit 3',
                                         "zero", "", "two words"],
                                 ["A=a b", "B=", f"PATH=/nonexistent:{os.path.dirname(sh)}"], str(tmp_path), b"in\n")
    assert (code, status, err) == (3, b"T", b"e\n")
    lines = out.decode().splitlines()
    assert lines[:3] == ["in", str(tmp_path), "a b||2|"]
    assert sorted(lines[3:]) == ["0", "1", "2", "3"]  # 3: ls's own directory; no socket, no status pipe


def test_failures_say_which_step_and_errno(image, tmp_path):
    code, status, _, _ = run(image, ["no-such-program"], ["PATH=/bin:/usr/bin"], "/")
    assert code == 127 and status[:2] == b"TE"
    assert waiter.error_message(status[2:], ["no-such-program"], "/") == (
        'exec: "no-such-program": executable file not found in $PATH')
    code, status, _, _ = run(image, ["/bin/true"], [], str(tmp_path / "missing"))
    assert waiter.error_message(status[2:], ["/bin/true"], "/x") == "process.cwd '/x': No such file or directory"
    not_executable = tmp_path / "data"
    not_executable.write_text("x")
    code, status, _, _ = run(image, [str(not_executable)], [], "/")
    assert code == 127 and waiter.error_message(status[2:], ["f"], "/") == 'exec: "f": permission denied'


def test_eof_ends_it_and_it_refuses_to_be_an_interpreter(image):
    process, ours, status_r = start(image)
    ours.close()
    assert process.wait(timeout=30) == 0 and os.read(status_r, 10) == b""
    os.close(status_r)
    # "#!/proc/self/exe" in a script the waiter execs makes the kernel run the waiter again
    # with the script as an argument: it must not run anything then.
    process, ours, status_r = start(image, ("/proc/self/exe", "/work/script"))
    assert process.wait(timeout=30) == 126
    ours.close()
    os.close(status_r)


def test_requests_it_cannot_hold_are_refused_before_sending():
    with pytest.raises(ValueError, match="at most"):
        waiter.request(["x"] * (waiter.MAX_STRINGS + 1), [], "/")
    with pytest.raises(ValueError, match="bytes: at most"):
        waiter.request(["x", "y" * waiter.MESSAGE_MAX], [], "/")
    assert waiter.candidates("sh", ["PATH=/a::/b"]) == ["/a/sh", "./sh", "/b/sh"]
    assert waiter.candidates("./x", ["PATH=/a"]) == ["./x"]


@needs_gnu_as
def test_the_machine_code_is_waiter_s_assembled(tmp_path):
    assert assembled(waiter, "waiter.s", "src/capsa/api", tmp_path) == waiter._CODE
