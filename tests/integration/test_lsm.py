"""AppArmor profiles and SELinux labels: applied where the host has the LSM, a clear error where
it has not, and never written through a procfs that is not the host's own attr file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from capsa import jsonfast, lsm

NO_APPARMOR = "this host's kernel has no AppArmor enabled (/sys/module/apparmor/parameters/enabled)"
NO_SELINUX = "this host has no SELinux (no selinuxfs mounted)"


def _nothing_left(bundle) -> None:
    assert bundle.capsa("list", "-q").stdout == ""


@pytest.mark.skipif(lsm.apparmor_enabled(), reason="the host has AppArmor: the error cannot be shown")
def test_apparmor_profile_on_a_host_without_apparmor(bundle):
    bundle.process["apparmorProfile"] = "capsa-test"
    result = bundle.run("true", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "process.apparmorProfile: this host has no AppArmor" in result.stderr and "'capsa-test'" in result.stderr
    _nothing_left(bundle)


@pytest.mark.skipif(lsm.apparmor_enabled(), reason="the host has AppArmor: the error cannot be shown")
def test_exec_apparmor_flag_on_a_host_without_apparmor(bundle):
    bundle.set_args("sleep", "60")
    bundle.create("c1")
    bundle.capsa("start", "c1")
    result = bundle.capsa("exec", "--apparmor", "capsa-test", "c1", "true", check=False)
    assert result.returncode == 1 and "process.apparmorProfile: this host has no AppArmor" in result.stderr


@pytest.mark.skipif(lsm.selinux_enabled(), reason="the host has SELinux: the error cannot be shown")
@pytest.mark.parametrize("where,field", [("process", "process.selinuxLabel"), ("linux", "linux.mountLabel")])
def test_selinux_labels_on_a_host_without_selinux(bundle, where, field):
    label = "system_u:system_r:container_t:s0:c1,c2"
    if where == "process":
        bundle.process["selinuxLabel"] = label
    else:
        bundle.config["linux"]["mountLabel"] = label
    result = bundle.run("true", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{field}: this host has no SELinux" in result.stderr
    _nothing_left(bundle)


def test_features_report_what_is_detected(bundle):
    features = jsonfast.loads(bundle.capsa("features").stdout)["linux"]
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            apparmor = f.read().strip() == "Y" and os.path.isdir("/sys/kernel/security/apparmor")
    except OSError:
        apparmor = False
    with open("/proc/self/mountinfo") as f:
        selinux = " - selinuxfs " in f.read()
    assert features["apparmor"] == {"enabled": apparmor}
    assert features["selinux"] == {"enabled": selinux}


PROFILE = """profile {name} flags=(attach_disconnected,mediate_deleted) {{
  file,
  capability,
  network,
  signal,
  ptrace,
  unix,
  mount,
  umount,
  pivot_root,
}}
"""


@pytest.fixture
def apparmor_profile(tmp_path):
    if not lsm.apparmor_enabled():
        pytest.skip(NO_APPARMOR)
    if not shutil.which("apparmor_parser"):
        pytest.skip("apparmor_parser is not installed (Debian package apparmor)")
    name = f"capsa-test-{os.getpid()}"
    path = tmp_path / "profile"
    path.write_text(PROFILE.format(name=name))
    subprocess.run(["apparmor_parser", "-r", "-W", str(path)], check=True)
    yield name
    subprocess.run(["apparmor_parser", "-R", str(path)], check=False)


def test_apparmor_profile_is_applied(bundle, apparmor_profile):
    bundle.process["apparmorProfile"] = apparmor_profile
    bundle.set_args("sleep", "60")
    bundle.create("c1")
    bundle.capsa("start", "c1")
    pid = jsonfast.loads(bundle.capsa("state", "c1").stdout)["pid"]
    with open(f"/proc/{pid}/attr/current") as f:
        assert f.read().startswith(apparmor_profile)
    out = bundle.capsa("exec", "--apparmor", apparmor_profile, "c1", "cat", "/proc/self/attr/current").stdout
    assert out.startswith(apparmor_profile)


def test_selinux_label_is_applied(bundle):
    if not lsm.selinux_enabled():
        pytest.skip(NO_SELINUX)
    with open("/proc/self/attr/current") as f:
        label = f.read().strip("\0\n")
    bundle.process["selinuxLabel"] = label  # our own label: a transition the policy allows
    assert bundle.run("cat", "/proc/self/attr/current").stdout.strip("\0\n") == label


def test_labels_are_never_written_to_a_fake_procfs(tmp_path):
    """A directory that looks like procfs (thread-self/attr/exec) but is not: refused."""
    os.makedirs(tmp_path / "thread-self" / "attr" / "apparmor")
    (tmp_path / "thread-self" / "attr" / "exec").write_text("")
    with pytest.raises(lsm.ContainerStartError, match="is not a procfs"):
        lsm.open_host_procfs(str(tmp_path))
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(lsm.ContainerStartError, match="not on a procfs"):
            lsm.write_attr(fd, ("exec",), "exec capsa-test", "process.apparmorProfile")
    finally:
        os.close(fd)
    assert (tmp_path / "thread-self" / "attr" / "exec").read_text() == ""


BIND_OVER_ATTR = """
import os, sys
from capsa import linux, lsm
# Another procfs file (our own comm, harmless to write) bind-mounted over our attr/exec: a real
# procfs, the wrong file (the CVE-2025-52881 technique). The write must not reach it.
linux.mount("/proc/self/comm", "/proc/thread-self/attr/exec", None, linux.MS_BIND)
before = open("/proc/self/comm").read()
try:
    lsm.write_attr(lsm.open_host_procfs(), ("exec",), "exec capsa-test", "process.apparmorProfile")
    print("WRITTEN")
except lsm.ContainerStartError as err:
    print("refused:", err)
print("comm unchanged" if open("/proc/self/comm").read() == before else "COMM CHANGED")
"""


def test_labels_are_never_written_to_a_file_mounted_over_attr():
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", BIND_OVER_ATTR],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("refused: process.apparmorProfile:") and "cross-device" in lines[0]
    assert lines[1] == "comm unchanged"


AFTER_CHROOT = """
import os, sys
from capsa import lsm
proc = lsm.open_host_procfs()  # as the init does, before the container's root is entered
os.chroot(sys.argv[1])
os.chdir("/")
try:
    lsm.write_attr(proc, ("apparmor/exec", "exec"), "exec capsa-test", "process.apparmorProfile")
    print("written")
except lsm.ContainerStartError as err:
    print(err)
"""


@pytest.mark.skipif(lsm.apparmor_enabled() or lsm.selinux_enabled(), reason="the host has an LSM that would take the label")
def test_label_write_reaches_the_kernel_from_a_new_pid_namespace_and_root(tmp_path):
    """The attr file is found through the host's procfs from pid 1 of a new pid namespace inside
    another root: without an LSM to take it the kernel answers EINVAL, which only the real attr
    file does (a missing file would be ENOENT, a wrong one something else)."""
    result = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--propagation", "private", sys.executable, "-c",
                             AFTER_CHROOT, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "process.apparmorProfile: cannot apply 'exec capsa-test': Invalid argument"
