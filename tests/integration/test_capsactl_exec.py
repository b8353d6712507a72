"""capsactl exec, logs, events and attach through the CLI, and capsa.manager.execs: real
containers as root (the container records are rows written as ctr's create writes them)."""

from __future__ import annotations

import json
import os
import time

import pytest
from test_capsactl_monitor import Setup

from capsa.manager import events, monitor


@pytest.fixture
def setup(tmp_path, rootfs_template):
    s = Setup(tmp_path, rootfs_template)
    yield s
    s.cleanup()


def running(setup, args: list[str], name: str = "box", runtime: str | None = None, **config) -> str:
    """A started container waiting in the background, recorded under `name`."""
    cid, bundle = setup.bundle(args, terminal=config.get("Tty", False))
    result = setup.driver("launch", cid, bundle, runtime=runtime, stdin=config.get("Interactive", False),
                          tty=config.get("Tty", False))
    assert result.returncode == 0, result.stderr
    setup.record(cid, name, OCIRuntime=runtime, **config)
    return cid


@pytest.mark.parametrize("runtime", [None, "runc"])
def test_exec_exit_code_env_workdir_user(setup, runtime):
    running(setup, ["sleep", "1000"], runtime=runtime)
    result = setup.capsactl("exec", "-e", "GREETING=hi", "-w", "/tmp", "-u", "nobody", "box",
                            "sh", "-c", 'echo "$GREETING $(pwd) $(id -u):$(id -g)"; exit 9')
    assert result.returncode == 9, result.stderr
    assert result.stdout == b"hi /tmp 65534:65534\n"


def test_exec_not_found_and_not_running(setup):
    running(setup, ["sleep", "1000"])
    result = setup.capsactl("exec", "box", "/no/such/program")
    assert result.returncode == 127
    assert b"/no/such/program" in result.stderr
    result = setup.capsactl("exec", "box", "/etc/passwd")
    assert result.returncode == 126, result.stderr
    result = setup.capsactl("exec", "nosuch", "true")
    assert result.returncode == 125 and b"nosuch" in result.stderr
    result = setup.capsactl("exec", "-u", "ghost", "box", "true")
    assert result.returncode == 125 and b"ghost" in result.stderr


def test_exec_interactive_and_without_stdin(setup):
    running(setup, ["sleep", "1000"])
    result = setup.capsactl("exec", "-i", "box", "sh", "-c", "tr a-z A-Z", input=b"shout\n")
    assert result.stdout == b"SHOUT\n" and result.returncode == 0
    result = setup.capsactl("exec", "box", "sh", "-c", "cat; echo done", input=b"not read\n")
    assert result.stdout == b"done\n"


def test_exec_tty(setup):
    running(setup, ["sleep", "1000"])
    result = setup.capsactl("exec", "-t", "box", "sh", "-c", "tty; exit 3")
    assert result.returncode == 3, result.stderr
    assert b"/dev/pts/" in result.stdout


def test_exec_detach(setup, tmp_path):
    cid = running(setup, ["sleep", "1000"])
    result = setup.capsactl("exec", "-d", "box", "sh", "-c", "echo detached > /tmp/marker")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 60
    while setup.capsactl("exec", "box", "cat", "/tmp/marker").stdout != b"detached\n":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert monitor.is_running(setup.paths, cid)


def test_logs_tail_timestamps_since_and_several_containers(setup):
    first = running(setup, ["sh", "-c", "echo one; echo two >&2; echo three; printf four"], name="first")
    second = running(setup, ["sh", "-c", "echo other"], name="second")
    setup.wait_monitor_gone(first)
    setup.wait_monitor_gone(second)
    result = setup.capsactl("logs", "first")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"one\nthree\nfour" and result.stderr == b"two\n"
    # stdout and stderr are two pipes: which of "two" and "three, four" the log has first varies
    tail = setup.capsactl("logs", "--tail", "2", "first")
    pieces = [p for p in (tail.stdout + b"\n" + tail.stderr).split(b"\n") if p]
    assert len(pieces) == 2 and b"four" in pieces
    stamped = setup.capsactl("logs", "-t", "first").stdout.split(b"\n")[0]
    assert stamped.endswith(b" one") and b"T" in stamped.split(b" ")[0]
    assert setup.capsactl("logs", "--since", "10m", "first").stdout == b"one\nthree\nfour"
    assert setup.capsactl("logs", "--until", "10m", "--since", "1m", "first").stdout == b"one\nthree\nfour"
    assert setup.capsactl("logs", "--since", "2000-01-01T00:00:00Z", "--until", "2000-01-02", "first").stdout == b""
    several = setup.capsactl("logs", "first", "second").stdout
    assert f"{first[:12]} one\n".encode() in several and f"{second[:12]} other\n".encode() in several
    named = setup.capsactl("logs", "-n", "second", "first").stdout
    assert b"second other\n" in named
    assert setup.capsactl("logs", "--since", "yesterday", "first").returncode == 125


def test_logs_follow_ends_when_the_container_exits(setup):
    running(setup, ["sh", "-c", "read line; echo got $line"], name="waiter", Interactive=True)
    follower = setup.popen_capsactl("logs", "-f", "waiter")
    assert setup.capsactl("attach", "waiter", input=b"it\n").returncode == 0
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert out == b"got it\n"


def test_attach_tty_and_exit_code(setup):
    running(setup, ["sh"], name="shell", Tty=True, Interactive=True)
    result = setup.capsactl("attach", "shell", input=b"echo $((6*7)); exit 6\n")
    assert result.returncode == 6, result.stderr
    assert b"42" in result.stdout
    result = setup.capsactl("attach", "shell")
    assert result.returncode == 125 and b"not running" in result.stderr


def test_events_read_filter_format_and_stream(setup):
    for status, name in (("create", "web"), ("start", "web"), ("create", "db")):
        events.emit(setup.paths, status, id=name * 8, name=name, image="busybox")
    events.emit(setup.paths, "died", id="web" * 8, name="web", image="busybox",
                attributes={"containerExitCode": "3"})
    result = setup.capsactl("events", "--stream=false")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 4 and " container create webwebweb" in lines[0] and "(image=busybox, name=web)" in lines[0]
    assert lines[3].endswith("(image=busybox, name=web, containerExitCode=3)")
    result = setup.capsactl("events", "--stream=false", "--filter", "container=web", "--filter", "event=died",
                            "--format", "json")
    decoded = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["Status"], e["Name"], e["ContainerExitCode"]) for e in decoded] == [("died", "web", 3)]
    result = setup.capsactl("events", "--stream=false", "--format", "{{.Status}} {{.Name}}", "--since", "1h")
    assert result.stdout == b"create web\nstart web\ncreate db\ndied web\n"
    assert setup.capsactl("events", "--stream=false", "--until", "2000-01-01").stdout == b""
    assert setup.capsactl("events", "--filter", "colour=red").returncode == 125
    # streaming: what is there, then new events, until --until passes
    stream = setup.popen_capsactl("events", "--since", "1h", "--until", "4s", "--format", "{{.Name}}")
    events.emit(setup.paths, "start", name="late")
    out, _ = stream.communicate(timeout=60)
    assert out.decode().splitlines() == ["web", "web", "db", "web", "late"]


def test_events_survive_restarts(setup):
    events.emit(setup.paths, "create", name="persisted")
    assert os.path.dirname(setup.paths.events_log).startswith(setup.paths.graph_root)
    assert b"persisted" in setup.capsactl("events", "--stream=false").stdout
