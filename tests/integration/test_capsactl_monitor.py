"""capsactl's monitor and attach (issue 17), driven as ctr's `run`/`attach` will drive them:
real containers as root, through capsa.manager.monitor and capsa.manager.attach, called from a
process of their own (monitor_driver.py) so that the caller can be killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

import capsa
from capsa import jsonfast
from capsa.manager import logs, monitor
from capsa.manager import runtime as runtimes
from capsa.manager.paths import Paths

DRIVER = os.path.join(os.path.dirname(__file__), "monitor_driver.py")
ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(capsa.__file__)))


class Setup:
    def __init__(self, tmp_path, rootfs_template):
        self.tmp = tmp_path
        self.template = rootfs_template
        self.paths = Paths.default(str(tmp_path / "g"), str(tmp_path / "r"))
        self.paths.ensure()
        self.ids: list[str] = []

    def bundle(self, args: list[str], terminal: bool = False) -> tuple[str, str]:
        """A new container id and its bundle running `args`."""
        from capsa.specgen import default_spec

        cid = f"io-{uuid.uuid4().hex[:16]}"
        self.ids.append(cid)
        path = self.tmp / cid
        path.mkdir()
        subprocess.run(["cp", "-a", self.template, str(path / "rootfs")], check=True)
        spec = default_spec()
        spec["process"]["args"] = args
        spec["process"]["terminal"] = terminal
        spec["root"]["readonly"] = False  # as podman's containers
        spec["linux"]["cgroupsPath"] = f"/capsa-test-io.{cid}"
        (path / "config.json").write_text(jsonfast.dumps_indent(spec))
        return cid, str(path)

    def log(self, cid: str) -> str:
        """Where capsactl keeps a container's log (ctl.logs finds it there)."""
        userdata = os.path.join(self.paths.container(cid), "userdata")
        os.makedirs(userdata, exist_ok=True)
        return os.path.join(userdata, "ctr.log")

    def record(self, cid: str, name: str, **config) -> None:
        """A row in the store's containers table, as ctr's create writes it (what logs, attach
        and exec read of it)."""
        from capsa.manager.store import Store, dumps

        store = Store(self.paths)
        with store.transaction() as db:
            db.execute("INSERT INTO containers (id, name, image_id, status, config, state, created) "
                       "VALUES (?, ?, NULL, 'running', ?, '{}', '2026-12-07T00:00:00Z')",
                       (cid, name, dumps({"Name": name, **config})))
        store.close()

    def _capsactl_command(self, args) -> list[str]:
        launcher = os.path.join(os.path.dirname(sys.executable), "capsactl")
        command = [launcher] if os.access(launcher, os.X_OK) else [sys.executable, "-c",
                                                                   "import sys; from capsa.ctl import main; sys.exit(main())"]
        return [*command, "--root", self.paths.graph_root, "--runroot", self.paths.run_root, *args]

    def capsactl(self, *args: str, input: bytes | None = b"", timeout: float = 120):
        return subprocess.run(self._capsactl_command(args), input=input, capture_output=True, timeout=timeout, env=ENV)

    def popen_capsactl(self, *args: str):
        return subprocess.Popen(self._capsactl_command(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=ENV)

    def driver(self, action: str, cid: str, bundle: str | None = None, input: bytes | None = b"", **options):
        options = {"root": self.paths.graph_root, "runroot": self.paths.run_root, "id": cid, "bundle": bundle,
                   "log": self.log(cid), **options}
        return subprocess.run([sys.executable, DRIVER, action, json.dumps(options)], input=input,
                              capture_output=True, env=ENV, timeout=120)

    def popen(self, action: str, cid: str, bundle: str | None = None, **options):
        options = {"root": self.paths.graph_root, "runroot": self.paths.run_root, "id": cid, "bundle": bundle,
                   "log": self.log(cid), **options}
        return subprocess.Popen([sys.executable, DRIVER, action, json.dumps(options)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)

    def wait_monitor_gone(self, cid: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while monitor.is_running(self.paths, cid):
            assert time.monotonic() < deadline, f"the monitor of {cid} is still running"
            time.sleep(0.05)

    def cleanup(self) -> None:
        for runtime_path in (None, "runc"):
            runtime = runtimes.for_container(self.paths, runtime_path)
            for cid in self.ids:
                try:
                    runtime.delete(cid, force=True)
                except Exception:  # noqa: BLE001 - best effort: the test's own assertions matter
                    pass
        for cid in self.ids:
            self.wait_monitor_gone(cid)


@pytest.fixture
def setup(tmp_path, rootfs_template):
    s = Setup(tmp_path, rootfs_template)
    yield s
    s.cleanup()


def readline(process, timeout: float = 60) -> bytes:
    """A line of the process's stdout; a failure, not a hang, if none comes."""
    import select

    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no line from {process.args[:3]} (so far {line!r})"
        if select.select([process.stdout], [], [], remaining)[0]:
            byte = os.read(process.stdout.fileno(), 1)
            if not byte:
                break
            line += byte
    return line


def texts(path: str) -> list[tuple[str, bytes]]:
    return [(r.stream, r.text) for r in logs.read(path)]


@pytest.mark.parametrize("runtime", [None, "runc"])
def test_foreground_output_stderr_exit_code_log_and_exit_file(setup, runtime):
    cid, bundle = setup.bundle(["sh", "-c", "echo out; echo err >&2; printf part; exit 3"])
    result = setup.driver("run", cid, bundle, runtime=runtime)
    assert result.returncode == 3, result.stderr
    assert result.stdout == b"out\npart"
    assert b"err\n" in result.stderr
    records = logs.read(setup.log(cid))
    assert sorted((r.stream, r.partial, r.text) for r in records) == [
        ("stderr", False, b"err"), ("stdout", False, b"out"), ("stdout", True, b"part")]
    assert monitor.read_exit_file(setup.paths, cid) == 3
    setup.wait_monitor_gone(cid)
    assert not os.path.exists(setup.paths.monitor(cid))


def test_stdin_is_fed_by_the_client_and_closed_at_its_eof(setup):
    cid, bundle = setup.bundle(["sh", "-c", "cat; echo end"])
    result = setup.driver("run", cid, bundle, input=b"hello\nworld\n", stdin=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello\nworld\nend\n"


def test_without_stdin_the_container_reads_eof(setup):
    cid, bundle = setup.bundle(["sh", "-c", "cat; echo end"])
    result = setup.driver("run", cid, bundle, input=b"ignored\n")
    assert result.stdout == b"end\n"


@pytest.mark.parametrize("runtime", [None, "runc"])
def test_terminal_input_output_and_resize(setup, runtime):
    cid, bundle = setup.bundle(["sh"], terminal=True)
    result = setup.driver("run", cid, bundle, input=b"stty size; tty; exit 5\n", stdin=True, tty=True,
                          size=[33, 77], runtime=runtime)
    assert result.returncode == 5, result.stderr
    output = result.stdout.replace(b"\r\n", b"\n")
    assert b"33 77\n" in output
    assert b"/dev/pts/" in output
    assert b"33 77" in b"".join(text for _, text in texts(setup.log(cid)))


def test_create_error_names_the_problem_and_leaves_nothing(setup):
    cid, bundle = setup.bundle(["/no/such/program"])
    result = setup.driver("run", cid, bundle)
    assert result.returncode == 127, result.stderr
    assert b"/no/such/program" in result.stderr and b"no such file" in result.stderr
    assert not os.path.exists(setup.paths.monitor(cid))
    assert runtimes.for_container(setup.paths, None).state(cid) is None


def test_create_error_of_a_runtime_binary_has_what_it_printed(setup):
    cid, bundle = setup.bundle(["/no/such/program"])
    config = json.loads(open(os.path.join(bundle, "config.json")).read())
    config["process"]["cwd"] = "relative/cwd"  # refused by runc before anything runs
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f)
    result = setup.driver("run", cid, bundle, runtime="runc")
    assert result.returncode == 125, result.stderr
    assert b"runc create" in result.stderr and b"cwd" in result.stderr.lower()
    assert not os.path.exists(setup.paths.monitor(cid))


def test_monitor_survives_the_callers_kill_9(setup):
    cid, bundle = setup.bundle(["sh", "-c", "echo waiting; read line; echo got $line; exit 4"])
    caller = setup.popen("run", cid, bundle, stdin=True)
    assert readline(caller) == b"waiting\n"
    caller.kill()
    caller.wait()
    assert monitor.is_running(setup.paths, cid)
    # A new client attaches, feeds the waiting container and gets its exit code.
    result = setup.driver("attach", cid, input=b"again\n", stdin=True)
    assert result.returncode == 4, result.stderr
    assert result.stdout == b"got again\n"
    assert [text for _, text in texts(setup.log(cid))] == [b"waiting", b"got again"]
    assert monitor.read_exit_file(setup.paths, cid) == 4


def test_detach_keys_leave_the_container_running(setup):
    cid, bundle = setup.bundle(["sh", "-c", "read line; echo got $line"])
    result = setup.driver("run", cid, bundle, input=b"\x10\x11", stdin=True)
    assert result.returncode == 0 and b"detached" in result.stderr
    assert monitor.is_running(setup.paths, cid)
    assert monitor.read_exit_file(setup.paths, cid) is None
    result = setup.driver("attach", cid, input=b"later\n", stdin=True)
    assert result.stdout == b"got later\n" and result.returncode == 0


def test_signals_reach_the_init_through_the_monitor(setup):
    cid, bundle = setup.bundle(["sh", "-c", "trap 'echo term; exit 7' TERM; echo ready; while :; do sleep 0.1; done"])
    caller = setup.popen("run", cid, bundle)
    assert readline(caller) == b"ready\n"
    caller.send_signal(signal.SIGTERM)  # podman's --sig-proxy: passed on to the container
    out, err = caller.communicate(timeout=60)
    assert caller.returncode == 7, err
    assert out == b"term\n"


def test_no_host_fd_reaches_the_container_or_stays_in_the_monitor(setup, tmp_path):
    secret = tmp_path / "callers-file"
    secret.write_text("x")
    fd = os.open(secret, os.O_RDONLY)  # inheritable: the caller has it, its children get it
    try:
        cid, bundle = setup.bundle(["sh", "-c", "ls /proc/1/fd; read line"])
        options = {"root": setup.paths.graph_root, "runroot": setup.paths.run_root, "id": cid, "bundle": bundle,
                   "log": setup.log(cid), "stdin": True}
        caller = subprocess.Popen([sys.executable, DRIVER, "run", json.dumps(options)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, pass_fds=(fd,))
        listing = []
        while (line := readline(caller)) and line.strip().isdigit():
            listing.append(int(line))
            if listing[-1] == 2:
                break
        assert listing == [0, 1, 2]
        with open(os.path.join(setup.paths.monitor(cid), "pid")) as f:
            monitor_pid = int(f.read().split()[0])
        targets = [os.readlink(f"/proc/{monitor_pid}/fd/{n}") for n in os.listdir(f"/proc/{monitor_pid}/fd")]
        assert str(secret) not in targets
        assert os.getcwd() not in [os.readlink(f"/proc/{monitor_pid}/cwd")] or os.getcwd() == "/"
        caller.communicate(b"bye\n", timeout=60)
    finally:
        os.close(fd)


def test_kept_fds_are_held_by_the_monitor_until_the_exit_and_never_seen_by_the_container(setup):
    """keep_fds (the published ports' sockets, network.reserve_ports): the monitor holds them
    while the container runs, closes them when it exits; the container has only 0-2."""
    import socket

    cid, bundle = setup.bundle(["sh", "-c", "ls /proc/1/fd; read line"])
    caller = setup.popen("run", cid, bundle, stdin=True, hold_port=True)
    port = int(readline(caller).split()[1])
    assert [readline(caller) for _ in range(3)] == [b"0\n", b"1\n", b"2\n"]
    probe = socket.create_connection(("127.0.0.1", port), timeout=30)  # held: the listener's backlog takes it
    probe.close()
    caller.communicate(b"done\n", timeout=60)
    assert caller.returncode == 0
    setup.wait_monitor_gone(cid)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=30)


def test_logs_follow_across_rotations_sees_each_line_once(setup):
    """issue 18: a container writing numbered lines fast through several rotations; a follower
    started with it sees each exactly once (max-file large enough that no file is deleted
    before the follower gets to it, however slowly the machine runs it)."""
    total = 30000
    cid, bundle = setup.bundle(["sh", "-c", f"seq 1 {total}"])
    result = setup.driver("launch", cid, bundle, max_size=65536, max_files=100)
    assert result.returncode == 0, result.stderr
    follower = logs.follow(setup.log(cid), lambda: not monitor.is_running(setup.paths, cid), poll_interval=0.01)
    numbers = [int(r.text) for r in logs.join_partial(follower)]
    assert numbers == list(range(1, total + 1))
    rotated = [name for name in os.listdir(os.path.dirname(setup.log(cid))) if name.startswith("ctr.log.")]
    assert len(rotated) >= 3
