"""capsa installed where a container's root may not read it: a venv in a 0700 directory, as a
clone under /root is. The init and an exec'd process become root of the container's user
namespace (a host uid that is not root) and then enter its mounts; every module they use must
be imported before that (init.load_modules). Before, every container with a uid mapping failed
with "internal error in container init: ImportError: cannot import name 'trampoline'" (and
'console' with a terminal)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import pytest

from capsa import jsonfast

MAPPED_ROOT = 100000  # Bundle.use_user_namespace's host id for the container's root


@pytest.fixture
def private_bundle(bundle, tmp_path):
    """A user-namespaced bundle run by a copy of capsa in a directory only the host's root can read."""
    import capsa

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shutil.copytree(os.path.dirname(capsa.__file__), private / "capsa")
    bundle.use_user_namespace(MAPPED_ROOT)  # opens the way to the bundle (tmp_path included), not into `private`
    info = os.stat(private)
    assert info.st_uid == 0 and stat.S_IMODE(info.st_mode) == 0o700  # out of reach of host uid MAPPED_ROOT
    launcher = f"import sys; sys.path.insert(0, {str(private)!r}); from capsa.cli import main; sys.exit(main())"
    # Not the venv's launcher: only the interpreter and its standard library stay readable to all.
    bundle.command = [os.path.realpath(sys.executable), "-I", "-S", "-c", launcher]
    return bundle


def test_user_namespace_container_runs_from_an_unreadable_install(private_bundle, tmp_path):
    """What the init may import late: the trampoline (always), the console (terminal), seccomp,
    subprocess (hooks the init runs), the rlimit and propagation tables."""
    bundle = private_bundle
    bundle.config["root"]["readonly"] = False
    bundle.config["hostname"] = "private"
    bundle.config["linux"]["rootfsPropagation"] = "private"
    bundle.process["terminal"] = True  # no --console-socket: capsa run holds the pty itself
    bundle.process["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 1000, "hard": 1000}]
    bundle.config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122}]}
    bundle.config["hooks"] = {
        "createContainer": [{"path": "/bin/true"}],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo started > /started"]}],
    }
    result = bundle.sh("id -u; tty; ulimit -n; hostname; mkdir /x 2>/dev/null; echo mkdir $?; cat /started",
                       check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "/dev/pts/0", "1000", "private", "mkdir", "1", "started"]


def test_exec_into_a_user_namespace_container_from_an_unreadable_install(private_bundle, tmp_path):
    bundle = private_bundle
    bundle.config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122}]}
    bundle.set_args("sleep", "60")
    bundle.create("c1")
    bundle.capsa("start", "c1")
    out = bundle.capsa("exec", "-t", "c1", "sh", "-c", "id -u; tty", stdin=subprocess.DEVNULL).stdout.split()
    assert out == ["0", "/dev/pts/0"]
    process = tmp_path / "process.json"
    process.write_text(jsonfast.dumps({
        "args": ["sh", "-c", "id -u; ulimit -n; mkdir /tmp/x 2>/dev/null; echo mkdir $?"], "cwd": "/",
        "env": ["PATH=/bin:/usr/bin"], "user": {"uid": 1000, "gid": 1000}, "terminal": False,
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 500, "hard": 500}],
    }))
    out = bundle.capsa("exec", "--process", str(process), "c1").stdout.split()
    assert out == ["1000", "500", "mkdir", "1"]
