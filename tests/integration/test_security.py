"""Attacks on the runtime from inside the container, and that they fail."""

from __future__ import annotations

import hashlib
import os
import sys

EVIL = "#!/proc/self/exe\nimport os, sys\nprint('HOST INTERPRETER RAN')\n"


def _python_digest() -> str:
    with open(os.path.realpath(sys.executable), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _plant(bundle) -> None:
    path = os.path.join(bundle.rootfs, "evil")
    with open(path, "w") as f:
        f.write(EVIL)
    os.chmod(path, 0o755)


def test_proc_self_exe_script_cannot_reach_the_runtime_binary(bundle):
    """CVE-2019-5736 class: `#!/proc/self/exe` must not run the runtime's (host) binary."""
    before = _python_digest()
    _plant(bundle)
    result = bundle.run("/evil", check=False)
    assert "HOST INTERPRETER RAN" not in result.stdout
    assert result.returncode == 126  # the sealed trampoline refuses to act as an interpreter
    assert _python_digest() == before


def test_proc_self_exe_script_through_exec(bundle):
    _plant(bundle)
    bundle.set_args("sleep", "60")
    bundle.create("c1")
    bundle.capsa("start", "c1")
    result = bundle.capsa("exec", "c1", "/evil", check=False)
    assert "HOST INTERPRETER RAN" not in result.stdout and result.returncode == 126


def test_running_program_exe_is_not_the_runtime(bundle):
    out = bundle.sh("readlink /proc/$$/exe; true").stdout.strip()
    assert out == "/bin/busybox"


def test_dev_symlinked_out_of_the_rootfs(bundle, tmp_path):
    """CVE-2025-52565 class: /dev in the image points at a host directory; nothing may land there."""
    host_dir = tmp_path / "host-dev"
    host_dir.mkdir()
    dev = os.path.join(bundle.rootfs, "dev")
    os.rmdir(dev)
    os.symlink(str(host_dir), dev)
    bundle.sh("ls /dev/null >/dev/null; echo ok")
    assert os.listdir(host_dir) == []


def test_dev_console_symlink_does_not_escape(bundle, tmp_path, rootfs_template):
    """/dev/console in the image (no /dev tmpfs) is a symlink to a host file: capsa neither follows it
    out of the rootfs nor creates the console through it (O_NOFOLLOW); the pty stays the stdio."""
    import socket

    victim = tmp_path / "victim"
    victim.write_text("host data")
    bundle.config["mounts"] = [m for m in bundle.config["mounts"] if not m["destination"].startswith("/dev")]
    bundle.config["mounts"].append({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                                    "options": ["newinstance", "ptmxmode=0666"]})
    os.symlink(str(victim), os.path.join(bundle.rootfs, "dev", "console"))
    os.symlink("pts/ptmx", os.path.join(bundle.rootfs, "dev", "ptmx"))
    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    bundle.process["terminal"] = True
    bundle.set_args("true")
    bundle.create("c1", "--console-socket", path)
    server.accept()
    assert not os.path.exists(os.path.join(bundle.rootfs, str(victim).lstrip("/")))
    assert os.path.islink(os.path.join(bundle.rootfs, "dev", "console"))
    assert victim.read_text() == "host data"


def test_fake_procfs_is_refused(bundle):
    """CVE-2025-52881 class: something other than procfs at /proc (here a tmpfs mounted over it)
    would let sysctl, masked paths and /proc/self writes land elsewhere: create refuses."""
    bundle.config["mounts"].append({"destination": "/proc", "type": "tmpfs", "source": "tmpfs", "options": []})
    result = bundle.run("true", check=False)
    assert result.returncode == 1 and "not a procfs" in result.stderr
    assert bundle.capsa("list", "-q").stdout == ""
