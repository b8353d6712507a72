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


# A container profile as docker's and podman's are (file access, capabilities...), that also
# denies one file: what the container gets from AppArmor, not from DAC (it runs as root).
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
{rules}
}}
"""
SECRET = "/capsa-secret"


@pytest.fixture
def apparmor_profile(tmp_path):
    """load(suffix, rules="", body=None) -> name: a profile loaded with apparmor_parser (removed after)."""
    if not lsm.apparmor_enabled():
        pytest.skip(NO_APPARMOR)
    if not shutil.which("apparmor_parser"):
        pytest.skip("apparmor_parser is not installed (Debian package apparmor)")
    loaded = []

    def load(suffix: str, rules: str = "", body: str | None = None) -> str:
        name = f"capsa-test-{os.getpid()}-{suffix}"
        path = tmp_path / f"{name}.profile"
        if body is None:
            text = PROFILE.format(name=name, rules=rules)
        else:
            text = f"profile {name} flags=(attach_disconnected,mediate_deleted) {{\n{body}\n}}\n"
        path.write_text(text)
        subprocess.run(["apparmor_parser", "-r", "-W", str(path)], check=True, capture_output=True)
        loaded.append(path)
        return name

    yield load
    for path in loaded:
        subprocess.run(["apparmor_parser", "-R", str(path)], check=False, capture_output=True)


READ_AND_WRITE = f"cat /proc/self/attr/current; cat {SECRET}; echo changed >> {SECRET} && echo WRITTEN"


def _with_secret(bundle) -> None:
    bundle.config["root"]["readonly"] = False  # so that only AppArmor stands in the way of a write
    with open(bundle.rootfs + SECRET, "w") as f:
        f.write("secret\n")


def test_apparmor_profile_confines_the_container(bundle, apparmor_profile):
    """The container's process runs in the profile, and its deny rule holds for root inside."""
    profile = apparmor_profile("deny", f"  deny {SECRET} rw,")
    _with_secret(bundle)
    unconfined = bundle.sh(READ_AND_WRITE).stdout  # the same container without the profile
    assert unconfined.splitlines()[:2] == ["unconfined", "secret"] and "WRITTEN" in unconfined
    with open(bundle.rootfs + SECRET, "w") as f:
        f.write("secret\n")
    bundle.process["apparmorProfile"] = profile
    result = bundle.sh(READ_AND_WRITE, check=False)
    assert result.stdout.splitlines()[0] == f"{profile} (enforce)", result.stdout + result.stderr
    assert f"can't open '{SECRET}': Permission denied" in result.stderr  # EACCES on read
    assert f"can't create {SECRET}: Permission denied" in result.stderr  # and on write
    assert "secret" not in result.stdout and "WRITTEN" not in result.stdout
    with open(bundle.rootfs + SECRET) as f:
        assert f.read() == "secret\n"
    _nothing_left(bundle)


def test_apparmor_profile_is_applied(bundle, apparmor_profile):
    """The init's profile as the host sees it; exec inherits it, or takes --apparmor's (as runc)."""
    confining = apparmor_profile("deny", f"  deny {SECRET} rw,")
    other = apparmor_profile("other")
    _with_secret(bundle)
    bundle.process["apparmorProfile"] = confining
    bundle.set_args("sleep", "60")
    bundle.create("c1")
    bundle.capsa("start", "c1")
    pid = jsonfast.loads(bundle.capsa("state", "c1").stdout)["pid"]
    with open(f"/proc/{pid}/attr/current") as f:
        assert f.read().strip() == f"{confining} (enforce)"
    inherited = bundle.capsa("exec", "c1", "sh", "-c", f"cat /proc/self/attr/current; cat {SECRET}", check=False)
    assert inherited.stdout.strip() == f"{confining} (enforce)" and "Permission denied" in inherited.stderr
    flag = bundle.capsa("exec", "--apparmor", other, "c1", "sh", "-c", f"cat /proc/self/attr/current; cat {SECRET}")
    assert flag.stdout.splitlines() == [f"{other} (enforce)", "secret"]
    bundle.capsa("kill", "c1", "KILL")  # the profile lets unconfined capsa signal it (`signal,`)
    bundle.capsa("delete", "--force", "c1")
    _nothing_left(bundle)


def test_apparmor_profile_must_allow_the_entrypoint_exec(bundle, apparmor_profile):
    """The profile takes effect at the first exec, which is capsa's sealed trampoline
    (capsa.trampoline); the trampoline, already confined, then execs the program. So the
    profile must allow that exec (`file,` or `/** ix,` as container profiles have), where
    under runc, whose first exec is the program, the exec is checked unconfined."""
    no_exec = apparmor_profile("noexec", body="  /** r,")
    bundle.process["apparmorProfile"] = no_exec
    assert bundle.run("true", check=False).returncode == 127  # the trampoline's execve: EACCES
    exec_only = apparmor_profile("exec", body="  /** ix,")
    bundle.process["apparmorProfile"] = exec_only
    assert bundle.run("true").returncode == 0
    _nothing_left(bundle)


def test_apparmor_profile_without_signal_rules(bundle, apparmor_profile):
    """AppArmor checks a signal on the receiving side too: a profile without
    `signal (receive) peer=unconfined` refuses capsa's (root's) kill, and says why; delete --force
    still removes the container through cgroup v2's cgroup.kill, which no LSM checks."""
    profile = apparmor_profile("nosignal", body="  file,")
    bundle.process["apparmorProfile"] = profile
    bundle.set_args("sleep", "60")
    bundle.create("c1")
    bundle.capsa("start", "c1")
    result = bundle.capsa("kill", "c1", "KILL", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"container c1: the kernel refused signal 9: its AppArmor profile {profile!r} must let it receive" in result.stderr
    if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        apparmor_profile("nosignal", body="  file,\n  signal,")  # replaced: running tasks take it, delete works
        bundle.capsa("delete", "--force", "c1")
        pytest.skip("cgroup.kill needs cgroup v2: delete --force of such a container is refused on this host")
    bundle.capsa("delete", "--force", "c1")
    _nothing_left(bundle)


def test_apparmor_profile_not_loaded(bundle, apparmor_profile):
    name = f"capsa-test-{os.getpid()}-never-loaded"
    bundle.process["apparmorProfile"] = name
    result = bundle.run("true", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"process.apparmorProfile: AppArmor profile {name!r} is not loaded" in result.stderr
    _nothing_left(bundle)
    bundle.process.pop("apparmorProfile")
    bundle.set_args("sleep", "60")
    bundle.create("c1")
    bundle.capsa("start", "c1")
    result = bundle.capsa("exec", "--apparmor", name, "c1", "true", check=False)
    assert result.returncode == 1 and f"AppArmor profile {name!r} is not loaded" in result.stderr


def test_apparmor_profile_in_a_user_namespace(bundle, apparmor_profile):
    """The label is written by the init inside its new user namespace (root there, not on the host)."""
    profile = apparmor_profile("userns", f"  deny {SECRET} rw,")
    _with_secret(bundle)
    bundle.use_user_namespace()
    bundle.process["apparmorProfile"] = profile
    result = bundle.sh(f"cat /proc/self/uid_map; {READ_AND_WRITE}", check=False)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["0", "100000", "65536"] and lines[1] == f"{profile} (enforce)", result.stdout + result.stderr
    assert f"can't open '{SECRET}': Permission denied" in result.stderr and "WRITTEN" not in result.stdout
    _nothing_left(bundle)


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
    lsm.write_attr(proc, ("apparmor/exec", "exec"), "exec " + sys.argv[2], "process.apparmorProfile")
    print("written:", open("/proc/thread-self/attr/apparmor/exec").read().strip() if len(sys.argv) > 3 else "")
except lsm.ContainerStartError as err:
    print(err)
"""


@pytest.mark.skipif(lsm.apparmor_enabled() or lsm.selinux_enabled(), reason="the host has an LSM that would take the label")
def test_label_write_reaches_the_kernel_from_a_new_pid_namespace_and_root(tmp_path):
    """The attr file is found through the host's procfs from pid 1 of a new pid namespace inside
    another root: without an LSM to take it the kernel answers EINVAL, which only the real attr
    file does (a missing file would be ENOENT, a wrong one something else)."""
    result = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--propagation", "private", sys.executable, "-c",
                             AFTER_CHROOT, str(tmp_path), "capsa-test"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "process.apparmorProfile: cannot apply 'exec capsa-test': Invalid argument"


def test_label_write_reaches_apparmor_from_a_new_pid_namespace_and_root(tmp_path, apparmor_profile):
    """The same path with AppArmor there: the write is taken, and the task's own attr/apparmor/exec
    (read back after the chroot, through the host's procfs still mounted) names the profile."""
    profile = apparmor_profile("chroot")
    os.makedirs(tmp_path / "proc")
    result = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--propagation", "private", "sh", "-c",
                             f'mount --bind /proc {tmp_path}/proc && exec "$@"', "sh", sys.executable, "-c",
                             AFTER_CHROOT, str(tmp_path), profile, "read back"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"written: {profile} (enforce)", result.stdout
