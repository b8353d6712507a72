"""Hostile rootfs content: what the image holds must not reach the host or crash capsa."""

from __future__ import annotations

import json
import os

import pytest

HOST_PASSWD = "root:x:0:0:root:/HOST-HOME:/bin/sh\nu:x:1000:1000::/HOST-USER-HOME:/bin/sh\n"


def _running(bundle) -> None:
    bundle.set_args("sleep", "600")
    bundle.create("c1")
    bundle.capsa("start", "c1")


@pytest.mark.parametrize("link", ["absolute", "relative", "magic"])
def test_symlinked_etc_passwd_is_read_inside_the_rootfs(bundle, tmp_path, link):
    """HOME comes from the image's /etc/passwd; a symlink there to a host file (absolute, or
    climbing with ..), or through /proc/self/fd, is resolved inside the rootfs or not at all."""
    host = tmp_path / "passwd"
    host.write_text(HOST_PASSWD)
    target = {"absolute": str(host), "relative": "../" * 12 + str(host).lstrip("/"),
              "magic": "/proc/self/fd/0/../../../" + str(host).lstrip("/")}[link]
    passwd = os.path.join(bundle.rootfs, "etc", "passwd")
    if os.path.lexists(passwd):
        os.unlink(passwd)
    os.symlink(target, passwd)
    bundle.process["env"] = [e for e in bundle.process["env"] if not e.startswith("HOME=")]
    for uid in (0, 1000):
        bundle.process["user"] = {"uid": uid, "gid": uid}
        assert bundle.sh("echo $HOME").stdout.strip() == "/"
    _running(bundle)
    assert bundle.capsa("exec", "--user", "1000", "c1", "sh", "-c", "echo $HOME").stdout.strip() == "/"
    assert host.read_text() == HOST_PASSWD


def test_user_name_without_uid_is_a_clear_error(bundle, tmp_path):
    """process.user.username is Windows-only: capsa never resolves it (it would run as root)."""
    bundle.process["user"] = {"username": "nobody"}
    result = bundle.run("id", "-u", check=False)
    assert result.returncode == 1 and "process.user.username" in result.stderr and "numeric uid" in result.stderr
    _running_after_delete(bundle)
    process = tmp_path / "p.json"
    process.write_text(json.dumps({"args": ["id", "-u"], "cwd": "/", "user": {"username": "nobody"}}))
    result = bundle.capsa("exec", "--process", str(process), "c1", check=False)
    assert result.returncode == 1 and "process.user.username" in result.stderr


def _running_after_delete(bundle) -> None:
    bundle.process["user"] = {"uid": 0, "gid": 0}
    _running(bundle)


def test_missing_bin_sh(bundle):
    os.unlink(os.path.join(bundle.rootfs, "bin", "sh"))
    result = bundle.sh("true", check=False)
    assert result.returncode == 1 and 'sh\\": executable file not found in $PATH' in result.stderr
    assert bundle.capsa("list", "-q").stdout == ""
    _running(bundle)  # sleep is still there
    result = bundle.capsa("exec", "c1", "sh", "-c", "true", check=False)
    assert result.returncode == 1 and 'sh\\": executable file not found in $PATH' in result.stderr
    result = bundle.capsa("exec", "c1", "/bin/sh", check=False)
    assert result.returncode == 1 and 'stat /bin/sh: no such file or directory' in result.stderr


def test_unreadable_cwd(bundle):
    """A cwd the user cannot read: entered (as root, before the user switch, as runc does); the
    process then gets EACCES on reading it, like on any host."""
    secret = os.path.join(bundle.rootfs, "secret")
    os.mkdir(secret, 0o700)
    bundle.process["user"] = {"uid": 1000, "gid": 1000}
    bundle.process["cwd"] = "/secret"
    out = bundle.sh("pwd; ls . >/dev/null 2>&1 || echo cannot-read").stdout.split()
    assert out == ["/secret", "cannot-read"]
    _running(bundle)
    out = bundle.capsa("exec", "--user", "1000", "--cwd", "/secret", "c1", "sh", "-c",
                       "pwd; ls . >/dev/null 2>&1 || echo cannot-read").stdout.split()
    assert out == ["/secret", "cannot-read"]


def test_cwd_that_is_a_file(bundle):
    bundle.process["cwd"] = "/bin/busybox"
    result = bundle.run("true", check=False)
    assert result.returncode == 1 and "process.cwd '/bin/busybox'" in result.stderr and "Not a directory" in result.stderr
    bundle.process["cwd"] = "/"
    _running(bundle)
    result = bundle.capsa("exec", "--cwd", "/bin/busybox", "c1", "true", check=False)
    assert result.returncode == 1 and "process.cwd '/bin/busybox'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("link", ["absolute", "relative", "climbing"])
def test_mount_destination_dangling_symlink_is_created_inside_the_rootfs(bundle, tmp_path, link):
    """As runc 1.1 and crun: a mount destination that is a dangling symlink in the image is
    followed inside the rootfs and its target made there (a file for a file bind, directories
    otherwise), never on the host; before, a file bind failed with ELOOP."""
    host_file = tmp_path / "host-file"
    host_file.write_text("bound file\n")
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    (host_dir / "inner").write_text("bound dir\n")
    escape = f"capsa-dangling-{os.getpid()}"
    targets = {"absolute": (f"/{escape}/file", f"/{escape}/dir", f"/{escape}/tmp"),
               "relative": (f"../{escape}/file", f"../{escape}/dir", f"../{escape}/tmp"),
               "climbing": ("../" * 12 + f"{escape}/file", "../" * 12 + f"{escape}/dir", "../" * 12 + f"{escape}/tmp")}[link]
    for name, target in zip(("file-link", "dir-link", "tmp-link"), targets, strict=True):
        os.symlink(target, os.path.join(bundle.rootfs, "etc", name))
    bundle.config["mounts"] += [
        {"destination": "/etc/file-link", "type": "bind", "source": str(host_file), "options": ["bind"]},
        {"destination": "/etc/dir-link", "type": "bind", "source": str(host_dir), "options": ["rbind"]},
        {"destination": "/etc/tmp-link", "type": "tmpfs", "source": "tmpfs", "options": ["mode=700"]},
    ]
    out = bundle.sh(f"cat /etc/file-link /etc/dir-link/inner; stat -c '%a' /etc/tmp-link/; ls /{escape}").stdout.split("\n")
    assert out[:3] == ["bound file", "bound dir", "700"]
    assert sorted(out[3:6]) == ["dir", "file", "tmp"]
    assert not os.path.exists(f"/{escape}")
    assert os.path.isfile(os.path.join(bundle.rootfs, escape, "file"))
