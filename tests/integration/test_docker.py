"""dockerd (Debian's docker.io) with capsa added as a runtime, started by the test with its own config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
from conftest import capsa_command

DOCKER = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else shutil.which("docker")
if not shutil.which("dockerd") or not DOCKER:
    pytest.skip("docker.io is not installed", allow_module_level=True)

IMAGE = "capsa-busybox:test"


@pytest.fixture(scope="module")
def docker(tmp_path_factory, rootfs_template):
    base = tmp_path_factory.mktemp("docker")
    socket = base / "docker.sock"
    config = {
        "data-root": str(base / "data"), "exec-root": str(base / "exec"), "pidfile": str(base / "docker.pid"),
        "hosts": [f"unix://{socket}"], "iptables": False, "ip6tables": False, "bridge": "none",
        "storage-driver": "vfs", "exec-opts": ["native.cgroupdriver=cgroupfs"],
        # This VM's hard RLIMIT_NOFILE is 20000: docker's default would not fit.
        "default-ulimits": {"nofile": {"Name": "nofile", "Hard": 20000, "Soft": 20000}},
        "runtimes": {"capsa": {"path": capsa_command()[0]}},
    }
    (base / "daemon.json").write_text(json.dumps(config))
    daemon = subprocess.Popen(["dockerd", "--config-file", str(base / "daemon.json")],
                              stdout=subprocess.DEVNULL, stderr=open(base / "dockerd.log", "w"))

    def run(*args: str, check: bool = True, input: bytes | None = None, timeout: float = 60):
        result = subprocess.run([DOCKER, "-H", f"unix://{socket}", *args], capture_output=True, timeout=timeout,
                                input=input, stdin=None if input is not None else subprocess.DEVNULL)
        result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    deadline = time.monotonic() + 60
    while run("version", check=False).returncode != 0:
        assert time.monotonic() < deadline and daemon.poll() is None, (base / "dockerd.log").read_text()[-2000:]
        time.sleep(0.2)
    archive = subprocess.run(["tar", "-C", rootfs_template, "-c", "."], capture_output=True, check=True).stdout
    run("import", "-", IMAGE, input=archive)
    yield run
    run("rm", "--force", *run("ps", "-aq").stdout.split(), check=False)
    daemon.terminate()
    daemon.wait(timeout=30)
    subprocess.run(["umount", "-R", str(base / "exec")], capture_output=True)


def test_run_rm_exit_code(docker):
    out = docker("run", "--rm", "--runtime", "capsa", "--network", "none", IMAGE, "sh", "-c", "echo hi; grep ^Seccomp: /proc/self/status")
    assert out.stdout.splitlines() == ["hi", "Seccomp:\t2"]
    assert docker("run", "--rm", "--runtime", "capsa", "--network", "none", IMAGE, "sh", "-c", "exit 4",
                  check=False).returncode == 4


def test_exec_and_stop(docker):
    docker("run", "-d", "--name", "d1", "--runtime", "capsa", "--network", "none", IMAGE, "sleep", "100")
    assert docker("exec", "d1", "sh", "-c", "echo exec-ok").stdout == "exec-ok\n"
    docker("stop", "-t", "1", "d1")
    assert docker("inspect", "--format", "{{.State.Status}}", "d1").stdout.strip() == "exited"
    docker("rm", "d1")
