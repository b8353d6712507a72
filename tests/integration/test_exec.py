"""capsa exec: a new process joins a running container's namespaces and cgroup."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from capsa import jsonfast


def running(bundle, cid: str = "c1", *args: str) -> int:
    bundle.set_args(*(args or ("sleep", "60")))
    bundle.create(cid)
    bundle.capsa("start", cid)
    return jsonfast.loads(bundle.capsa("state", cid).stdout)["pid"]


def test_exec_joins_namespaces_and_cgroup(bundle):
    init = running(bundle)
    out = bundle.capsa("exec", "c1", "sh", "-c", "echo $$; hostname; readlink /proc/self/ns/net; cat /proc/1/cmdline").stdout
    lines = out.splitlines()
    assert int(lines[0]) > 1  # a new process in the container's pid namespace
    assert lines[1] == bundle.config["hostname"]
    assert lines[2] == os.readlink(f"/proc/{init}/ns/net")
    assert lines[3].startswith("sleep")
    with open(f"/sys/fs/cgroup/pids{bundle.cgroup}/cgroup.procs") as f:
        assert str(init) in f.read().split()


def test_exec_exit_code_and_missing_command(bundle):
    running(bundle)
    assert bundle.capsa("exec", "c1", "sh", "-c", "exit 7", check=False).returncode == 7
    missing = bundle.capsa("exec", "c1", "nosuchcommand", check=False)
    assert missing.returncode == 1 and "executable file not found" in missing.stderr


def test_exec_flags(bundle):
    running(bundle)
    out = bundle.capsa(
        "exec", "--env", "FOO=bar", "--cwd", "/tmp", "--user", "1000:1001", "-g", "5",
        "c1", "sh", "-c", 'echo "$FOO"; pwd; id -u; id -g; id -G',
    ).stdout.splitlines()
    assert out[:4] == ["bar", "/tmp", "1000", "1001"]
    assert "5" in out[4].split()


def test_exec_process_file(bundle, tmp_path):
    running(bundle)
    process = dict(bundle.config["process"], args=["sh", "-c", "echo from-file; echo $X"], env=["X=y", "PATH=/bin"], terminal=False)
    path = tmp_path / "process.json"
    path.write_text(json.dumps(process))
    assert bundle.capsa("exec", "--process", str(path), "c1").stdout.split() == ["from-file", "y"]
    process["args"] = []
    path.write_text(json.dumps(process))
    bad = bundle.capsa("exec", "-p", str(path), "c1", check=False)
    assert bad.returncode == 1 and "process.args" in bad.stderr


def test_exec_detach_pid_file(bundle, tmp_path):
    running(bundle)
    pid_file = tmp_path / "exec.pid"
    bundle.detached("exec", "--detach", "--pid-file", str(pid_file), "c1", "sleep", "30")
    pid = int(pid_file.read_text())
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sleep"
    assert pid in jsonfast.loads(bundle.capsa("ps", "--format", "json", "c1").stdout)


def test_exec_only_stdio_survives(bundle):
    running(bundle)
    # "; true" keeps sh from exec-ing ls in its place (ls would list its own directory fd).
    out = bundle.capsa("exec", "c1", "sh", "-c", "ls /proc/$$/fd; true").stdout.split()
    assert sorted(out) == ["0", "1", "2"]


def test_exec_tty_with_console_socket(bundle, tmp_path):
    running(bundle)
    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    bundle.detached("exec", "-d", "-t", "--console-socket", path, "c1", "sh", "-c", "tty; sleep 1")
    connection, _ = server.accept()
    _, fds, _, _ = socket.recv_fds(connection, 1024, 1)
    output = b""
    deadline = time.monotonic() + 5
    while b"\n" not in output and time.monotonic() < deadline:
        output += os.read(fds[0], 1024)
    assert output.decode().startswith("/dev/pts/")


def _pty_output(master: int, until: bytes = b"END") -> str:
    output = b""
    deadline = time.monotonic() + 10
    while until not in output and time.monotonic() < deadline:
        try:
            chunk = os.read(master, 1024)
        except OSError:  # EIO: every slave fd is closed
            break
        if not chunk:
            break
        output += chunk
    return output.decode()


@pytest.mark.parametrize("user", ["1", "1:7", "0"])
def test_exec_tty_belongs_to_the_process_user(bundle, tmp_path, user):
    """As runc: the new pty's owner is the process's user, its group stays the devpts one (tty,
    gid 5 from the mount's gid=5); before, it stayed root's and a non-root user could not
    reopen its own terminal."""
    running(bundle)
    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    script = 'stat -c "%u %g %a" $(tty); (echo reopened > $(tty)) 2>/dev/null || echo denied; echo END; sleep 1'
    bundle.detached("exec", "-d", "-t", "--user", user, "--console-socket", path, "c1", "sh", "-c", script)
    connection, _ = server.accept()
    _, fds, _, _ = socket.recv_fds(connection, 1024, 1)
    lines = _pty_output(fds[0]).split()
    os.close(fds[0])
    uid = user.split(":")[0]
    assert lines[:4] == [uid, "5", "620", "reopened"]


def test_exec_refused_when_paused_or_stopped(bundle):
    running(bundle)
    bundle.capsa("pause", "c1")
    paused = bundle.capsa("exec", "c1", "true", check=False)
    assert paused.returncode == 1 and "paused" in paused.stderr
    bundle.capsa("resume", "c1")
    bundle.capsa("kill", "c1", "KILL")
    deadline = time.monotonic() + 5
    while jsonfast.loads(bundle.capsa("state", "c1").stdout)["status"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    stopped = bundle.capsa("exec", "c1", "true", check=False)
    assert stopped.returncode == 1 and "stopped" in stopped.stderr


def test_exec_into_user_namespace_container(bundle):
    bundle.use_user_namespace()
    running(bundle)
    out = bundle.capsa("exec", "c1", "sh", "-c", "id -u; cat /proc/self/uid_map").stdout.split()
    assert out[0] == "0" and out[1:4] == ["0", "100000", "65536"]
