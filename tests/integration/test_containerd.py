"""containerd's io.containerd.runc.v2 shim driving capsa (BinaryName / --runc-binary), through ctr.

The test starts its own containerd on unix sockets under a temp dir, with the CRI plugin off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from conftest import capsa_command

if not shutil.which("containerd") or not shutil.which("ctr") or not shutil.which("containerd-shim-runc-v2"):
    pytest.skip("containerd is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def ctr(tmp_path_factory, rootfs_template):
    base = tmp_path_factory.mktemp("containerd")
    socket = base / "containerd.sock"
    (base / "config.toml").write_text(
        "version = 2\n"
        f'root = "{base}/root"\nstate = "{base}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket}"\n[ttrpc]\n  address = "{socket}.ttrpc"\n'
    )
    daemon = subprocess.Popen(["containerd", "--config", str(base / "config.toml")],
                              stdout=subprocess.DEVNULL, stderr=open(base / "containerd.log", "w"))
    deadline = time.monotonic() + 20
    while not socket.exists():
        assert time.monotonic() < deadline and daemon.poll() is None, (base / "containerd.log").read_text()
        time.sleep(0.05)
    rootfs = str(base / "rootfs")
    subprocess.run(["cp", "-a", rootfs_template, rootfs], check=True)
    runtime = capsa_command()[0]

    def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run(["ctr", "-a", str(socket), *args], capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    run.socket = str(socket)
    run.container_args = ["--runc-binary", runtime, "--rootfs", rootfs]
    yield run
    daemon.terminate()
    daemon.wait(timeout=20)


def test_run_rm_and_exit_code(ctr):
    out = ctr("run", "--rm", *ctr.container_args, "r1", "sh", "-c", "echo hello from containerd; exit 0")
    assert out.stdout == "hello from containerd\n"
    failed = ctr("run", "--rm", *ctr.container_args, "r2", "sh", "-c", "exit 5", check=False)
    assert failed.returncode == 5


def test_detached_exec_ps_pause_kill_all_delete(ctr):
    ctr("run", "-d", *ctr.container_args, "d1", "sh", "-c", "sleep 100 & sleep 100")
    tasks = ctr("task", "ls").stdout
    assert "d1" in tasks and "RUNNING" in tasks
    assert ctr("task", "exec", "--exec-id", "e1", "d1", "sh", "-c", "echo exec-ok").stdout == "exec-ok\n"
    deadline = time.monotonic() + 5
    while len(ctr("task", "ps", "d1").stdout.splitlines()) < 3:  # header + sh + the background sleep
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ctr("task", "pause", "d1")
    assert "PAUSED" in ctr("task", "ls").stdout
    ctr("task", "resume", "d1")
    assert "RUNNING" in ctr("task", "ls").stdout
    ctr("task", "kill", "--all", "-s", "SIGKILL", "d1")
    deadline = time.monotonic() + 10
    while "STOPPED" not in ctr("task", "ls").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ctr("task", "delete", "d1")
    ctr("container", "delete", "d1")
    assert "d1" not in ctr("container", "ls").stdout


def test_tty(ctr):
    command = ["ctr", "-a", ctr.socket, "run", "--rm", "-t", *ctr.container_args, "t1", "sh", "-c", "tty"]
    # ctr wants a terminal of its own: script(1) gives it one.
    result = subprocess.run(["script", "-qec", " ".join(command), os.devnull], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert "/dev/pts/0" in result.stdout
