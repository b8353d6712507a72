"""Fixtures for integration tests: real containers, as root, from a busybox-static rootfs."""

from __future__ import annotations

import copy
import itertools
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from capsa import jsonfast

if os.geteuid() != 0:
    pytest.skip("integration tests create real containers and need root", allow_module_level=True)


def capsa_command() -> list[str]:
    """The installed launcher next to this interpreter (as managers call it), else python -m capsa."""
    launcher = os.path.join(os.path.dirname(sys.executable), "capsa")
    if os.access(launcher, os.X_OK):
        return [launcher]
    return [sys.executable, "-m", "capsa"]


def capsa_command_for(user: str, place: str) -> tuple[list[str], dict[str, str]]:
    """How the unprivileged `user` runs this checkout's capsa, and the environment that needs: the
    launcher if it can, else (a checkout under /root, mode 0700, is out of its reach) a copy of
    the package in `place`, a directory it can read, run by the interpreter with PYTHONPATH. The
    test skips, saying why, if even the interpreter is out of the user's reach."""
    as_user = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    command = capsa_command()
    if subprocess.run([*as_user, *command, "--version"], capture_output=True, timeout=60).returncode == 0:
        return command, {}
    python = os.path.realpath(sys.executable)
    if subprocess.run([*as_user, python, "-S", "-c", "pass"], capture_output=True, timeout=60).returncode != 0:
        pytest.skip(f"user {user} can run neither this checkout's capsa ({command[0]}) nor its interpreter ({python})")
    import capsa

    lib = os.path.join(place, "lib")
    shutil.copytree(os.path.dirname(capsa.__file__), os.path.join(lib, "capsa"), ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["chmod", "-R", "a+rX", lib], check=True)
    return [python, "-S", "-m", "capsa"], {"PYTHONPATH": lib}


@pytest.fixture(scope="session")
def rootfs_template(tmp_path_factory):
    from capsa.bundle import make_rootfs

    path = str(tmp_path_factory.mktemp("template") / "rootfs")
    make_rootfs(path)
    return path


_bundle_numbers = itertools.count()


class Bundle:
    """A bundle directory with its own copy of the rootfs and a config.json to adjust per test."""

    def __init__(self, path: str, rootfs_template: str, state_root: str):
        from capsa.specgen import default_spec

        self.path = path
        self.root = state_root
        self.command: list[str] | None = None  # how to run capsa; None: capsa_command()
        self.rootfs = os.path.join(path, "rootfs")
        os.makedirs(path, exist_ok=True)
        subprocess.run(["cp", "-a", rootfs_template, self.rootfs], check=True)
        self.config = default_spec()
        self.config["process"]["terminal"] = False
        self.config["process"]["args"] = ["true"]
        # A cgroup of its own, so that concurrent test runs on one host never share one.
        self.cgroup = f"/capsa-test.{os.getpid()}.{next(_bundle_numbers)}"
        self.config["linux"]["cgroupsPath"] = self.cgroup
        self.write()

    @property
    def process(self) -> dict:
        return self.config["process"]

    def write(self) -> None:
        with open(os.path.join(self.path, "config.json"), "w") as f:
            f.write(jsonfast.dumps_indent(self.config))

    def set_args(self, *args: str) -> None:
        self.config["process"]["args"] = list(args)
        self.write()

    def capsa(self, *args: str, check: bool = True, write: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """Run `capsa --root <root> args...` (with the config as the test left it), capturing output."""
        if write:
            self.write()
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        result = subprocess.run((self.command or capsa_command()) + ["--root", self.root, *args], **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"capsa {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def use_user_namespace(self, host_id: int = 100000, size: int = 65536) -> None:
        """A new user namespace mapping root to host_id; the rootfs is chowned to match."""
        linux = self.config["linux"]
        linux["namespaces"].append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": host_id, "size": size}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": host_id, "size": size}]
        subprocess.run(["chown", "-R", f"{host_id}:{host_id}", self.rootfs], check=True)
        # The container's root (host uid host_id) must be able to reach its bundle.
        path = self.path
        while path != "/":
            os.chmod(path, os.stat(path).st_mode | 0o055)
            path = os.path.dirname(path)

    def detached(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """A capsa call that leaves a container process holding its stdio (create, run -d).

        The container keeps the caller's stdout and stderr: they go to files, not to pipes we
        would wait on until the container exits.
        """
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            result = self.capsa(*args, check=False, capture_output=False, text=False, stdout=out, stderr=err)
            err.seek(0)
            result.stderr = err.read().decode(errors="replace")
        if check and result.returncode != 0:
            raise AssertionError(f"capsa {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def create(self, cid: str = "c1", *extra: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.detached("create", "--bundle", self.path, *extra, cid, check=check)

    def run(self, *args: str, check: bool = True, cid: str = "c1", **kwargs) -> subprocess.CompletedProcess:
        """`capsa run` this bundle with process.args = args; returns the container's output."""
        if args:
            self.set_args(*args)
        return self.capsa("run", "--bundle", self.path, cid, check=check, **kwargs)

    def sh(self, script: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return self.run("sh", "-c", script, check=check, **kwargs)

    def copy_config(self) -> dict:
        return copy.deepcopy(self.config)


@pytest.fixture
def bundle(tmp_path, rootfs_template):
    state_root = str(tmp_path / "state")
    b = Bundle(str(tmp_path / "bundle"), rootfs_template, state_root)
    yield b
    # Leave nothing behind even when a test fails half-way.
    if os.path.isdir(state_root):
        for cid in os.listdir(state_root):
            subprocess.run(capsa_command() + ["--root", state_root, "delete", "--force", cid], capture_output=True)
    shutil.rmtree(str(tmp_path / "bundle"), ignore_errors=True)
