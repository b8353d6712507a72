"""Attacks on the runtime from inside the container, and that they fail."""

from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys

import pytest

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


# -- leaked host fds and host cwd (CVE-2024-21626 class) -------------------------------------------
# No pipeline: the shell would hold the pipe's fds while listing its own.
LIST_FDS_AND_CWD = "ls -1 /proc/$$/fd; echo END; readlink /proc/$$/cwd; ls ..; true"


def _fds_and_cwd(stdout: str) -> tuple[list[str], str]:
    fds, _, rest = stdout.partition("END\n")
    return sorted(fds.split(), key=int), rest.splitlines()[0]


def _host_dir(tmp_path):
    host = tmp_path / "host-secret"
    host.mkdir()
    (host / "HOST-ONLY").write_text("host data")
    return host


def _capsa_with_leaks(bundle, host, *args: str):
    """capsa run/exec with an extra directory fd and a file fd open (inheritable), from a host cwd."""
    from conftest import capsa_command

    dir_fd = os.open(host, os.O_RDONLY | os.O_DIRECTORY)
    file_fd = os.open(host / "HOST-ONLY", os.O_RDONLY)
    try:
        return subprocess.run(capsa_command() + ["--root", bundle.root, *args], pass_fds=(dir_fd, file_fd), cwd=host,
                              capture_output=True, text=True, timeout=60), (dir_fd, file_fd)
    finally:
        os.close(dir_fd)
        os.close(file_fd)


def test_leaked_host_fds_and_cwd_do_not_reach_the_container(bundle, tmp_path):
    host = _host_dir(tmp_path)
    bundle.set_args("sh", "-c", LIST_FDS_AND_CWD)
    result, _ = _capsa_with_leaks(bundle, host, "run", "--bundle", bundle.path, "c1")
    assert result.returncode == 0, result.stderr
    fds, cwd = _fds_and_cwd(result.stdout)
    assert fds == ["0", "1", "2"] and cwd == "/"
    assert "HOST-ONLY" not in result.stdout and "host-secret" not in result.stdout


def test_leaked_host_fds_and_cwd_do_not_reach_an_exec(bundle, tmp_path):
    host = _host_dir(tmp_path)
    bundle.set_args("sleep", "60")
    bundle.create("c1")
    bundle.capsa("start", "c1")
    result, _ = _capsa_with_leaks(bundle, host, "exec", "c1", "sh", "-c", LIST_FDS_AND_CWD)
    assert result.returncode == 0, result.stderr
    fds, cwd = _fds_and_cwd(result.stdout)
    assert fds == ["0", "1", "2"] and cwd == "/"
    assert "HOST-ONLY" not in result.stdout


def _cwd_attack_process(fd: int) -> dict:
    return {"args": ["sh", "-c", "readlink /proc/self/cwd; ls; cat ../HOST-ONLY; true"], "cwd": f"/proc/self/fd/{fd}",
            "env": ["PATH=/bin:/usr/bin"], "user": {"uid": 0, "gid": 0}, "terminal": False}


def _assert_cwd_attack_failed(result) -> None:
    assert "host data" not in result.stdout and "HOST-ONLY" not in result.stdout
    if result.returncode == 0:
        assert result.stdout.splitlines()[0].startswith("/")  # a directory inside the container
    else:
        assert "process.cwd" in result.stderr and "Traceback" not in result.stderr


def test_cwd_through_a_preserved_host_directory_fd_is_refused(bundle, tmp_path):
    """process.cwd = /proc/self/fd/N where fd N is a host directory still open in the runtime's
    process (here a preserved fd; in runc's CVE an internal one): the process must not start there."""
    from conftest import capsa_command

    host = _host_dir(tmp_path)
    for fd in range(3, 12):  # the preserved fd 3 and wherever capsa's own fds land
        bundle.config["process"] = dict(bundle.process, **_cwd_attack_process(fd))
        bundle.write()
        script = f"exec 3<{host}; exec {' '.join(capsa_command())} --root {bundle.root} run --preserve-fds 1 --bundle {bundle.path} c{fd}"
        result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
        _assert_cwd_attack_failed(result)
        if fd == 3:
            assert result.returncode == 1 and "magic link" in result.stderr
    assert bundle.capsa("list", "-q").stdout == ""


def test_exec_cwd_through_proc_self_fd_is_refused(bundle, tmp_path):
    import json

    host = _host_dir(tmp_path)
    bundle.set_args("sleep", "60")
    bundle.create("c1")
    bundle.capsa("start", "c1")
    from conftest import capsa_command

    for fd in range(3, 12):
        process = tmp_path / "process.json"
        process.write_text(json.dumps(_cwd_attack_process(fd)))
        script = (f"exec 3<{host}; exec {' '.join(capsa_command())} --root {bundle.root} exec --preserve-fds 1 "
                  f"--process {process} c1")
        result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
        _assert_cwd_attack_failed(result)
        if fd == 3:
            assert result.returncode == 1 and "magic link" in result.stderr


# -- fds the container is to inherit that the caller does not have open -----------------------------
# The kernel gives a new fd the lowest free number: with a hole in 3 .. 3+N-1, an fd of capsa's own
# would fill it and be handed to the container. capsa refuses, as runc does for --preserve-fds.
def _leftovers(bundle) -> list[str]:
    """What a failed create or run may not leave: state, cgroup directories, live processes of capsa's."""
    left = [f"state {name}" for name in (os.listdir(bundle.root) if os.path.isdir(bundle.root) else [])]
    left += glob.glob(f"/sys/fs/cgroup{bundle.cgroup}") + glob.glob(f"/sys/fs/cgroup/*{bundle.cgroup}")
    return left + [f"process {pid}" for pid in _live_processes_of(bundle.root)]


def _live_processes_of(state_root: str) -> list[int]:
    """Processes (not zombies) whose command line names the state root: capsa's, or an init not yet exec'd."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/stat") as f:
                status = f.read().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state_root.encode() in cmdline and status != "Z" and int(pid) != os.getpid():
            found.append(int(pid))
    return found


def _kill_leftovers(bundle) -> None:
    """Should the test fail, a waiting init must not keep the state locked (the fixture's delete
    would wait for ever) or a mount busy: killed, and waited for."""
    import time

    deadline = time.monotonic() + 10
    while (pids := _live_processes_of(bundle.root)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def test_preserved_fds_that_are_not_open_are_refused(bundle):
    """Before: with --preserve-fds 100 the start socket was moved above fd 102, closed, and closed
    again (EBADF) once the init was ready; the state and cgroup were removed, but the init stayed in
    accept() holding the caller's stdio (the caller hung) and no `delete` could find it."""
    from conftest import capsa_command

    bundle.set_args("sleep", "60")
    try:
        result = bundle.capsa("run", "--preserve-fds", "100", "--bundle", bundle.path, "c1", check=False, timeout=30)
        assert result.returncode == 1 and "--preserve-fds 100: fd 3 is not open" in result.stderr, result.stderr
        assert _leftovers(bundle) == []
        command = " ".join(capsa_command()) + f" --root {bundle.root} create --preserve-fds 2 --bundle {bundle.path} c1"
        result = subprocess.run(["sh", "-c", f"exec 3</etc/hostname; exec {command}"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 1 and "--preserve-fds 2: fd 4 is not open" in result.stderr, result.stderr
        assert _leftovers(bundle) == []
        bundle.create("c1")
        bundle.capsa("start", "c1")
        result = bundle.capsa("exec", "--preserve-fds", "1", "c1", "true", check=False, timeout=30)
        assert result.returncode == 1 and "--preserve-fds 1: fd 3 is not open" in result.stderr, result.stderr
    finally:
        _kill_leftovers(bundle)


def _capsa_as_listener(bundle, *args, listen_pid="$$"):
    """capsa with LISTEN_FDS=1 and LISTEN_PID set by a shell that then execs capsa ($$: capsa's
    own pid, as systemd and conmon give it), fd 3 closed."""
    from conftest import capsa_command

    command = " ".join([*capsa_command(), "--root", bundle.root, *args])
    script = f"exec 3<&-; LISTEN_FDS=1 LISTEN_PID={listen_pid} exec {command}"
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)


def test_listen_fds_that_are_not_open_are_refused(bundle):
    """Before: LISTEN_FDS=1 with fd 3 closed made capsa's lock on the state directory fd 3, and the
    init inherited it: run, start and delete -f blocked for ever in flock, and the container held a
    host directory among its inherited fds (the CVE-2024-21626 pattern)."""
    bundle.set_args("sleep", "60")
    bundle.write()
    try:
        for command in (["run", "-d"], ["run"], ["create"]):
            result = _capsa_as_listener(bundle, *command, "--bundle", bundle.path, "c1")
            assert result.returncode == 1 and "LISTEN_FDS=1: fd 3 is not open" in result.stderr, result.stderr
            assert _leftovers(bundle) == []
        bundle.create("c1")
        bundle.capsa("start", "c1")
        result = _capsa_as_listener(bundle, "exec", "c1", "true")
        assert result.returncode == 1 and "LISTEN_FDS=1: fd 3 is not open" in result.stderr, result.stderr
        bundle.capsa("delete", "--force", "c1", timeout=30)
    finally:
        _kill_leftovers(bundle)


def test_listen_fds_of_another_process_are_ignored(bundle):
    """LISTEN_FDS is for the process LISTEN_PID names (sd_listen_fds(3); runc through go-systemd):
    before, capsa took fds meant for its parent, here refusing the run for a closed fd 3."""
    bundle.set_args("sh", "-c", 'echo "[$LISTEN_FDS]"')
    bundle.write()
    result = _capsa_as_listener(bundle, "run", "--bundle", bundle.path, "c1", listen_pid="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [["create"], ["run", "-d"]])
def test_create_failing_at_any_step_leaves_nothing(bundle, tmp_path, command):
    """A state root that runs out of inodes fails create (and run) at each of its writes in turn,
    the last one after the init is ready: nothing may remain, least of all that init (before, it
    was left waiting in accept() for ever)."""
    bundle.set_args("sleep", "60")
    small = tmp_path / "small"
    small.mkdir()
    normal_root, bundle.root = bundle.root, str(small)
    failures = 0
    try:
        for inodes in range(2, 20):
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"nr_inodes={inodes},size=1m", "capsa-test", str(small)], check=True)
            try:
                result = bundle.detached(*command, "--bundle", bundle.path, "c1", check=False)
                if result.returncode == 0:
                    break
                assert result.returncode == 1 and "No space left on device" in result.stderr, result.stderr
                assert _leftovers(bundle) == []
                failures += 1
            finally:
                _kill_leftovers(bundle)
                if os.path.isdir(small / "c1"):
                    bundle.capsa("delete", "--force", "c1", check=False, timeout=30)
                subprocess.run(["umount", str(small)], check=True)
        else:
            pytest.fail(f"{command[0]} never succeeded")
    finally:
        bundle.root = normal_root
    assert failures >= 4  # config.json, state.json, start.sock, state.json again: each a step of its own


# -- masked and read-only paths whose target in the image is a symlink out of the rootfs ------------
@pytest.mark.parametrize("where", ["/etc", "/sys"])
def test_masked_and_readonly_symlinks_stay_inside_the_rootfs(bundle, tmp_path, where):
    """CVE-2025-31133 class on the targets: the image replaces a masked file and a read-only
    directory by absolute symlinks to host paths (in /etc, or in /sys when the config mounts no
    sysfs over the image's). The host directory is also bind-mounted into the container (rw) so
    that we can see from inside that neither the mask nor the read-only remount landed on it;
    the symlinks resolve inside the rootfs instead."""
    host = _host_dir(tmp_path)
    (host / "rw-dir").mkdir()
    bundle.config["root"]["readonly"] = False
    if where == "/sys":
        bundle.config["mounts"] = [m for m in bundle.config["mounts"] if not m["destination"].startswith("/sys")]
        os.makedirs(os.path.join(bundle.rootfs, "sys"), exist_ok=True)
    bundle.config["mounts"].append({"destination": "/host", "type": "bind", "source": str(host), "options": ["rbind", "rw"]})
    # Inside the rootfs, the same absolute paths exist too: that is where the symlinks must land.
    inner = os.path.join(bundle.rootfs, str(host).lstrip("/"))
    os.makedirs(os.path.join(inner, "rw-dir"))
    with open(os.path.join(inner, "HOST-ONLY"), "w") as f:
        f.write("rootfs copy")
    os.symlink(str(host / "HOST-ONLY"), os.path.join(bundle.rootfs, where.lstrip("/"), "masked-link"))
    os.symlink(str(host / "rw-dir"), os.path.join(bundle.rootfs, where.lstrip("/"), "ro-link"))
    bundle.config["linux"]["maskedPaths"].append(f"{where}/masked-link")
    bundle.config["linux"]["readonlyPaths"].append(f"{where}/ro-link")
    out = bundle.sh(
        f"cat /host/HOST-ONLY; echo; cat {where}/masked-link; echo '|'; touch /host/rw-dir/x && echo host-dir-writable; "
        f"touch {where}/ro-link/x 2>/dev/null || echo rootfs-dir-readonly"
    ).stdout.splitlines()
    assert out == ["host data", "|", "host-dir-writable", "rootfs-dir-readonly"]
    assert (host / "HOST-ONLY").read_text() == "host data"


# -- read-only /proc/sys, /sys and cgroupfs ------------------------------------------------------------
ESCAPE_ATTEMPTS = r"""
try() { if "$@" 2>/dev/null; then echo "SUCCEEDED: $*"; fi; }
cg=$(ls -d /sys/fs/cgroup/* | head -1)
try mount -o remount,rw /sys
try mount -o remount,rw /proc/sys
try mount -o remount,rw /sys/fs/cgroup
try mount -o remount,rw "$cg"
try mount -o remount,rw,bind /proc/sys
try umount /proc/sys
try umount -l /sys/fs/cgroup
try sh -c 'cat /proc/sys/kernel/printk_ratelimit > /proc/sys/kernel/printk_ratelimit'
try sh -c 'cat /sys/kernel/mm/ksm/run > /sys/kernel/mm/ksm/run'
try sh -c "echo \$\$ > $cg/cgroup.procs"
try mkdir "$cg/capsa-escape"
try mount -t sysfs sysfs /mnt
try mount -t proc proc /mnt
try mount -t cgroup -o pids cgroup /mnt
echo done
"""


def _escape_attempts(bundle) -> list[str]:
    os.makedirs(os.path.join(bundle.rootfs, "mnt"), exist_ok=True)
    return bundle.sh(ESCAPE_ATTEMPTS).stdout.splitlines()


def test_read_only_proc_sys_sys_and_cgroupfs_stay_read_only(bundle):
    assert _escape_attempts(bundle) == ["done"]


def test_read_only_proc_sys_sys_and_cgroupfs_with_cap_sys_admin_in_a_user_namespace(bundle):
    """Root of a user namespace with CAP_SYS_ADMIN: it owns its mounts, but none of the host's
    sysctls, sysfs files or cgroups becomes writable."""
    bundle.use_user_namespace()
    caps = ["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_CHOWN", "CAP_FOWNER"]
    bundle.process["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
    out = _escape_attempts(bundle)
    writes = [line for line in out if "SUCCEEDED: sh -c" in line or "SUCCEEDED: mkdir" in line]
    assert writes == [] and out[-1] == "done"


# -- sysctl keys as paths ---------------------------------------------------------------------------------
def test_sysctl_key_cannot_walk_out_of_its_namespace(bundle):
    """A namespaced prefix followed by '..' would reach a host-wide sysctl (here one whose current
    value is written back, so the host is unchanged even if the defense failed)."""
    with open("/proc/sys/kernel/printk_ratelimit") as f:
        current = f.read().strip()
    bundle.config["linux"]["sysctl"] = {"net.ipv4/../../kernel/printk_ratelimit": current}
    result = bundle.run("true", check=False)
    assert result.returncode == 1 and "linux.sysctl.net.ipv4/../../kernel/printk_ratelimit" in result.stderr
    assert "not a sysctl name" in result.stderr
    assert bundle.capsa("list", "-q").stdout == ""


def test_sysctl_through_a_symlinked_proc_stays_in_the_container(bundle, tmp_path):
    """The image's /proc is an absolute symlink to a host path that looks like procfs: the proc
    mount, the masks and the sysctl write all resolve it inside the rootfs, never on the host."""
    fake = tmp_path / "fake-host-proc"
    (fake / "sys" / "net" / "ipv4").mkdir(parents=True)
    (fake / "sys" / "net" / "ipv4" / "ip_forward").write_text("0\n")
    (fake / "kcore").write_text("host file")
    proc = os.path.join(bundle.rootfs, "proc")
    os.rmdir(proc)
    os.symlink(str(fake), proc)
    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    out = bundle.sh("cat /proc/sys/net/ipv4/ip_forward; stat -f -c %T /proc/; readlink /proc").stdout.split()
    assert out == ["1", "proc", str(fake)]
    assert (fake / "sys" / "net" / "ipv4" / "ip_forward").read_text() == "0\n"
    assert (fake / "kcore").read_text() == "host file"
    assert os.path.isdir(os.path.join(bundle.rootfs, str(fake).lstrip("/")))  # where the proc mount went


SWAP_PROC = """#!/bin/sh
# Plays the other side of a race: after capsa mounted the container's /proc, move that mount
# away and put a symlink maze in its place whose sysctl file leads to another file.
pid=$(sed 's/.*"pid": *\\([0-9]*\\).*/\\1/')
exec nsenter -t "$pid" -m sh -e -c '
  r={rootfs}
  mkdir -p $r/elsewhere $r/evil/sys/net/core
  mount --move $r/proc $r/elsewhere
  ln -s /marker $r/evil/sys/net/core/somaxconn
  rmdir $r/proc
  ln -s /{target} $r/proc'
"""


@pytest.mark.parametrize("target", ["evil", "elsewhere"])
def test_proc_swapped_after_its_mount_cannot_redirect_sysctl(bundle, tmp_path, target):
    """CVE-2025-52881 class, made deterministic: a createRuntime hook swaps the container's /proc
    for a symlink after capsa mounted it (as a racing container sharing the rootfs would).
    To a directory of symlinks ("evil"): refused, the sysctl value never reaches the file the
    maze points to. To the real procfs, moved ("elsewhere"): the write and the masks go to that
    procfs, found through one checked fd."""
    marker = os.path.join(bundle.rootfs, "marker")
    with open(marker, "w") as f:
        f.write("untouched")
    hook = tmp_path / "swap.sh"
    hook.write_text(SWAP_PROC.format(rootfs=bundle.rootfs, target=target))
    hook.chmod(0o755)
    bundle.config["hooks"] = {"createRuntime": [{"path": str(hook)}]}
    bundle.config["linux"]["sysctl"] = {"net.core.somaxconn": "1234"}
    result = bundle.sh("cat /proc/sys/net/core/somaxconn; stat -L -c %t:%T /proc/keys", check=False)
    with open(marker) as f:
        assert f.read() == "untouched"
    if target == "evil":
        assert result.returncode == 1 and "not a procfs" in result.stderr and "Traceback" not in result.stderr
        assert bundle.capsa("list", "-q").stdout == ""
    else:
        # ... and the masks landed on that procfs too (/proc/keys is the null device).
        assert result.returncode == 0 and result.stdout.split() == ["1234", "1:3"], result.stderr
