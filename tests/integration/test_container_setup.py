"""What config.json promises, checked from inside a real container."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
from conftest import capsa_command

from capsa import jsonfast


def test_pid_one_and_hostname(bundle):
    bundle.config["hostname"] = "inside"
    bundle.config["domainname"] = "example.org"
    out = bundle.sh("echo $$; hostname; cat /proc/sys/kernel/domainname").stdout.split()
    assert out == ["1", "inside", "example.org"]


def test_args_env_and_cwd(bundle):
    bundle.process["env"] = ["PATH=/bin:/usr/bin", "GREETING=hi there"]
    bundle.process["cwd"] = "/work/dir"
    out = bundle.sh('echo "$GREETING"; pwd; echo $HOME').stdout.splitlines()
    assert out == ["hi there", "/work/dir", "/root"]


def test_missing_executable_fails_create_and_cleans_up(bundle):
    bundle.set_args("/no/such/binary")
    result = bundle.capsa("create", "--bundle", bundle.path, "c1", check=False)
    assert result.returncode == 1
    assert "no such file or directory" in result.stderr
    assert os.listdir(bundle.root) == []
    bundle.set_args("nosuchcommand")
    result = bundle.capsa("create", "--bundle", bundle.path, "c1", check=False)
    assert "executable file not found in $PATH" in result.stderr
    assert os.listdir(bundle.root) == []


def test_user_and_groups(bundle):
    bundle.process["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [5, 6], "umask": 0o077}
    out = bundle.sh("id -u; id -g; id -G; umask").stdout.split()
    assert out[0] == "1000" and out[1] == "1001"
    assert set(out[2:-1]) == {"1001", "5", "6"}
    assert out[-1] == "0077"


def status_field(text: str, field: str) -> str:
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return line.split()[1]
    raise AssertionError(f"{field} not in status")


def test_capabilities(bundle):
    caps = ["CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW"]
    bundle.process["capabilities"] = {
        "bounding": caps, "effective": caps, "permitted": caps, "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"],
    }
    status = bundle.run("cat", "/proc/self/status").stdout
    expected = (1 << 5) | (1 << 0) | (1 << 13)
    assert int(status_field(status, "CapBnd"), 16) == expected
    assert int(status_field(status, "CapEff"), 16) == expected
    assert int(status_field(status, "CapPrm"), 16) == expected
    assert int(status_field(status, "CapInh"), 16) == 1 << 5
    assert int(status_field(status, "CapAmb"), 16) == 1 << 5


def test_unknown_capability_is_a_warning_and_the_rest_apply(bundle):
    # runtime-spec 1.1+ (and runc 1.1): log it, do not fail.
    caps = ["CAP_KILL", "CAP_NOT_A_CAPABILITY"]
    bundle.process["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
    result = bundle.run("cat", "/proc/self/status")
    assert "ignoring unknown or unavailable capabilities: [CAP_NOT_A_CAPABILITY]" in result.stderr
    assert int(status_field(result.stdout, "CapBnd"), 16) == 1 << 5
    assert int(status_field(result.stdout, "CapEff"), 16) == 1 << 5


def test_capability_the_caller_lacks_is_a_warning_not_a_failure(bundle):
    # runtime-spec 1.1+: "Runtimes SHOULD NOT fail if the container configuration requests
    # capabilities that cannot be granted" (a restricted caller). setpriv drops CAP_SYS_TIME from
    # the bounding set before capsa starts, so capsa itself does not hold it.
    caps = ["CAP_KILL", "CAP_SYS_TIME"]
    bundle.process["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps}
    bundle.set_args("cat", "/proc/self/status")
    result = subprocess.run(["setpriv", "--bounding-set", "-sys_time", *capsa_command(), "--root", bundle.root, "run",
                             "--bundle", bundle.path, "c1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ignoring unknown or unavailable capabilities: [CAP_SYS_TIME]" in result.stderr
    for field in ("CapBnd", "CapEff", "CapPrm", "CapInh"):
        assert int(status_field(result.stdout, field), 16) == 1 << 5, field


def test_ambient_caps_reach_non_root_user(bundle):
    caps = ["CAP_NET_BIND_SERVICE"]
    bundle.process["user"] = {"uid": 1000, "gid": 1000}
    bundle.process["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
    status = bundle.run("cat", "/proc/self/status").stdout
    assert int(status_field(status, "CapEff"), 16) == 1 << 10


def test_no_new_privileges(bundle):
    bundle.process["noNewPrivileges"] = True
    assert status_field(bundle.run("cat", "/proc/self/status").stdout, "NoNewPrivs") == "1"
    bundle.process["noNewPrivileges"] = False
    assert status_field(bundle.run("cat", "/proc/self/status").stdout, "NoNewPrivs") == "0"


def test_rlimits(bundle):
    bundle.process["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
    ]
    out = bundle.sh("ulimit -n; ulimit -H -n; ulimit -c").stdout.split()
    assert out == ["512", "1024", "0"]


def test_rlimit_above_hard_limit_is_a_clear_error(bundle):
    bundle.process["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 10**7, "hard": 10**7}]
    result = bundle.run("true", check=False)
    if result.returncode == 0:
        pytest.skip("this host lets root raise RLIMIT_NOFILE that far")
    assert "process.rlimits[0]" in result.stderr and "RLIMIT_NOFILE" in result.stderr
    assert os.listdir(bundle.root) == []


def test_oom_score_adj(bundle):
    bundle.process["oomScoreAdj"] = 500
    assert bundle.run("cat", "/proc/self/oom_score_adj").stdout.strip() == "500"


def test_negative_oom_score_adj_needs_cap_sys_resource(bundle):
    # What containerd's CRI asks for a pod sandbox (-998). Below the caller's own value the kernel wants
    # CAP_SYS_RESOURCE, which some hosts (this VM) withhold even from root.
    bundle.process["oomScoreAdj"] = -998
    with open("/proc/self/status") as f:
        effective = int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)
    with open("/proc/self/oom_score_adj") as f:
        own = int(f.read())
    result = bundle.run("cat", "/proc/self/oom_score_adj", check=False)
    if effective & (1 << 24) or own <= -998:  # CAP_SYS_RESOURCE
        assert result.stdout.strip() == "-998"
    else:
        assert result.returncode != 0 and "CAP_SYS_RESOURCE, which the caller lacks" in result.stderr


def test_sysctl(bundle):
    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"}
    out = bundle.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni").stdout.split()
    assert out == ["1", "1234"]


def test_sysctl_hostname_and_domainname_as_runc_and_crun(bundle):
    """kernel.domainname needs a uts namespace of the container's own, new or joined by path, and
    is written there; without one it would change the host's and is refused. kernel.hostname is
    refused whatever the namespaces: runc and crun both say it conflicts with the `hostname` field."""
    with open("/proc/sys/kernel/domainname") as f:
        host_domainname = f.read()
    bundle.config["linux"]["sysctl"] = {"kernel.domainname": "from-sysctl"}
    assert bundle.sh("cat /proc/sys/kernel/domainname").stdout.strip() == "from-sysctl"
    holder = subprocess.Popen(["unshare", "--uts", "sleep", "30"])
    try:
        wait_for(lambda: os.readlink(f"/proc/{holder.pid}/ns/uts") != os.readlink("/proc/self/ns/uts"))
        bundle.config["linux"]["namespaces"] = [
            {"type": "uts", "path": f"/proc/{holder.pid}/ns/uts"} if ns["type"] == "uts" else ns
            for ns in bundle.config["linux"]["namespaces"]
        ]
        del bundle.config["hostname"]
        assert bundle.sh("cat /proc/sys/kernel/domainname").stdout.strip() == "from-sysctl"
        with open("/proc/sys/kernel/domainname") as f:
            assert f.read() == host_domainname
        out = subprocess.run(["nsenter", "-u", "-t", str(holder.pid), "cat", "/proc/sys/kernel/domainname"],
                             capture_output=True, text=True, check=True).stdout
        assert out.strip() == "from-sysctl"
    finally:
        holder.kill()
        holder.wait()
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "uts"]
    shared = bundle.sh("true", check=False)
    assert shared.returncode == 1 and "linux.sysctl.kernel.domainname" in shared.stderr and "uts namespace" in shared.stderr
    bundle.config["linux"]["namespaces"].append({"type": "uts"})
    bundle.config["linux"]["sysctl"] = {"kernel.hostname": "from-sysctl"}
    refused = bundle.sh("true", check=False)
    assert refused.returncode == 1 and "linux.sysctl.kernel.hostname" in refused.stderr and "hostname" in refused.stderr
    assert "conflicts" in refused.stderr


def test_loopback_is_up_in_new_network_namespace(bundle):
    out = bundle.run("cat", "/sys/class/net/lo/operstate").stdout.strip()
    flags = int(bundle.run("cat", "/sys/class/net/lo/flags").stdout.strip(), 16)
    assert flags & 1, f"lo is down (operstate {out})"


def test_namespaces_are_new(bundle):
    if not any(ns["type"] == "cgroup" for ns in bundle.config["linux"]["namespaces"]):
        bundle.config["linux"]["namespaces"].append({"type": "cgroup"})  # runc's spec has one only on v2
    inside = bundle.sh("for n in ipc mnt net pid uts cgroup; do readlink /proc/1/ns/$n; done").stdout.split()
    host = [os.readlink(f"/proc/self/ns/{n}") for n in ("ipc", "mnt", "net", "pid", "uts", "cgroup")]
    for mine, theirs in zip(inside, host, strict=True):
        assert mine != theirs


def test_join_namespace_by_path(bundle):
    holder = subprocess.Popen(["unshare", "--net", "--uts", "sleep", "30"])
    try:
        wait_for(lambda: os.readlink(f"/proc/{holder.pid}/ns/net") != os.readlink("/proc/self/ns/net"))
        joined = {"network": f"/proc/{holder.pid}/ns/net", "uts": f"/proc/{holder.pid}/ns/uts"}
        bundle.config["linux"]["namespaces"] = [
            {"type": ns["type"], "path": joined[ns["type"]]} if ns["type"] in joined else ns
            for ns in bundle.config["linux"]["namespaces"]
        ]
        del bundle.config["hostname"]  # a joined uts namespace keeps its own name
        out = bundle.sh("readlink /proc/self/ns/net; readlink /proc/self/ns/uts").stdout.split()
        assert out == [os.readlink(joined["network"]), os.readlink(joined["uts"])]
    finally:
        holder.kill()
        holder.wait()


def wait_for(predicate, timeout: float = 5) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_user_namespace_with_mappings(bundle):
    bundle.use_user_namespace()
    out = bundle.sh("id -u; cat /proc/self/uid_map").stdout.split()
    assert out[0] == "0"
    assert out[1:4] == ["0", "100000", "65536"]


def test_bind_source_the_mapped_root_cannot_reach(bundle, tmp_path):
    """As runc and crun: in a user namespace, a bind source under a directory only the host's
    root may enter (0700) is still mounted (the runtime opens it as a detached mount for the
    init, which as mapped root cannot); the options apply, and the bind does not propagate
    mounts back to the host. Before: EACCES."""
    bundle.use_user_namespace()
    private = tmp_path / "private"
    (private / "dir" / "sub").mkdir(parents=True)
    (private / "dir" / "inner").write_text("from a private dir\n")
    (private / "file").write_text("a private file\n")
    private.chmod(0o700)
    bundle.config["mounts"] += [
        {"destination": "/mnt/dir", "type": "bind", "source": str(private / "dir"), "options": ["rbind", "ro", "nosuid"]},
        {"destination": "/mnt/file", "type": "bind", "source": str(private / "file"), "options": ["bind"]},
    ]
    out = bundle.sh("cat /mnt/dir/inner /mnt/file; touch /mnt/dir/x 2>/dev/null && echo writable || echo read-only;"
                    "grep ' /mnt/dir ' /proc/self/mountinfo").stdout.splitlines()
    assert out[:3] == ["from a private dir", "a private file", "read-only"]
    fields = out[3].split(" - ")[0].split()
    assert {"ro", "nosuid"} <= set(fields[5].split(",")) and not any(f.startswith("shared:") for f in fields[6:])
    assert not os.path.exists(private / "dir" / "x")
    # Without a user namespace nothing changes: root reaches the source itself.
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "user"]
    del bundle.config["linux"]["uidMappings"], bundle.config["linux"]["gidMappings"]
    assert bundle.sh("cat /mnt/file").stdout == "a private file\n"


def test_time_namespace_offsets(bundle):
    bundle.config["linux"]["namespaces"].append({"type": "time"})
    bundle.config["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0}}
    uptime = float(bundle.run("cat", "/proc/uptime").stdout.split()[0])
    assert uptime > 86400 * 364


def test_mount_flags_and_tmpfs(bundle):
    bundle.config["mounts"].append(
        {"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "noexec", "nodev", "mode=700", "size=1m"]}
    )
    line = [m for m in bundle.run("cat", "/proc/self/mounts").stdout.splitlines() if " /data " in m][0]
    options = line.split()[3].split(",")
    assert {"nosuid", "noexec", "nodev", "mode=700"} <= set(options)


def test_tmpfs_keeps_the_mode_of_the_directory_it_covers(bundle):
    """As runc and crun: a tmpfs over an existing directory takes that directory's mode (before,
    tmpfs's own 1777); a mode= option still wins; a directory made for it gets tmpfs's 1777."""
    for name, mode in (("kept", 0o711), ("sticky", 0o1750), ("overridden", 0o711)):
        os.makedirs(os.path.join(bundle.rootfs, name))
        os.chmod(os.path.join(bundle.rootfs, name), mode)
    bundle.config["mounts"] += [
        {"destination": "/kept", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
        {"destination": "/sticky", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/overridden", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
        {"destination": "/made", "type": "tmpfs", "source": "tmpfs"},
    ]
    out = bundle.sh("stat -c '%a' /kept /sticky /overridden /made; awk '$2 == \"/kept\" {print $3}' /proc/self/mounts").stdout.split()
    assert out == ["711", "1750", "755", "1777", "tmpfs"]


def test_bind_mounts_readonly_and_file(bundle, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from host")
    single = tmp_path / "single.txt"
    single.write_text("one file")
    bundle.config["mounts"] += [
        {"destination": "/mnt/ro", "type": "bind", "source": str(shared), "options": ["rbind", "ro"]},
        {"destination": "/mnt/rw", "type": "bind", "source": str(shared), "options": ["bind"]},
        {"destination": "/etc/single.txt", "type": "bind", "source": str(single), "options": ["bind", "ro"]},
    ]
    out = bundle.sh(
        "cat /mnt/ro/hello; echo; touch /mnt/ro/x 2>/dev/null && echo ro-writable || echo ro-refused;"
        "echo written > /mnt/rw/new; cat /etc/single.txt"
    ).stdout.splitlines()
    assert out == ["from host", "ro-refused", "one file"]
    assert (shared / "new").read_text() == "written\n"


def test_mount_destination_symlink_cannot_escape(bundle, tmp_path):
    # The image points /evil at the host's /tmp dir: the mount must land inside the rootfs.
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), os.path.join(bundle.rootfs, "evil"))
    bundle.config["mounts"].append({"destination": "/evil", "type": "tmpfs", "source": "tmpfs", "options": []})
    bundle.sh("touch /evil/created-by-container")
    assert os.listdir(outside) == []
    assert os.path.exists(os.path.join(bundle.rootfs, str(outside).lstrip("/")))


def test_readonly_root(bundle):
    bundle.config["root"]["readonly"] = True
    out = bundle.sh("touch /x 2>/dev/null && echo writable || echo readonly").stdout.strip()
    assert out == "readonly"


def test_masked_and_readonly_paths(bundle):
    bundle.config["linux"]["maskedPaths"] = ["/proc/timer_list", "/proc/acpi", "/nope"]
    bundle.config["linux"]["readonlyPaths"] = ["/proc/sys"]
    out = bundle.sh(
        "wc -c < /proc/timer_list; ls /proc/acpi | wc -l;"
        "echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-writable || echo sys-readonly"
    ).stdout.split()
    assert out == ["0", "0", "sys-readonly"]


def test_default_devices_and_links(bundle):
    out = bundle.sh(
        "for d in null zero full random urandom tty; do stat -c '%n %t:%T' /dev/$d; done;"
        "for l in ptmx fd stdin; do readlink /dev/$l; done; ls /dev/pts/ptmx"
    ).stdout.splitlines()
    assert out[:6] == ["/dev/null 1:3", "/dev/zero 1:5", "/dev/full 1:7", "/dev/random 1:8", "/dev/urandom 1:9", "/dev/tty 5:0"]
    assert out[6:9] == ["pts/ptmx", "/proc/self/fd", "/proc/self/fd/0"]


def test_linux_devices(bundle):
    bundle.config["linux"]["devices"] = [
        {"path": "/dev/fuse-like", "type": "c", "major": 10, "minor": 229, "fileMode": 0o640, "uid": 0, "gid": 5}
    ]
    assert bundle.run("stat", "-c", "%t:%T %a %g", "/dev/fuse-like").stdout.split() == ["a:e5", "640", "5"]


def test_linux_devices_outside_dev(bundle):
    """As runc: a device path outside /dev is created where the config says, inside the rootfs
    (missing directories made), and is usable there; the host gets no node."""
    bundle.config["linux"]["devices"] = [
        {"path": "/opt/devs/null-like", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666},
        {"path": "/run/fifo-like", "type": "p", "fileMode": 0o600},
    ]
    out = bundle.sh("stat -c '%t:%T %a' /opt/devs/null-like; echo data > /opt/devs/null-like && echo written;"
                    "stat -c '%F %a' /run/fifo-like").stdout.splitlines()
    assert out == ["1:3 666", "written", "fifo 600"]
    assert not os.path.exists("/opt/devs/null-like")


def test_only_stdio_reaches_the_container(bundle):
    # A leaked fd (CVE-2024-21626 class): capsa's own fds must not survive exec.
    leaked = os.open("/etc/hostname", os.O_RDONLY)
    os.set_inheritable(leaked, True)
    try:
        out = bundle.run("ls", "/proc/self/fd", pass_fds=(leaked,)).stdout.split()
    finally:
        os.close(leaked)
    assert sorted(out) == ["0", "1", "2", "3"] or sorted(out) == ["0", "1", "2"]
    # "3" may appear only as ls's own directory fd; it must not be the leaked one.
    cwd = bundle.run("readlink", "/proc/self/cwd").stdout.strip()
    assert cwd == "/"


def test_preserve_fds_and_listen_fds(bundle, tmp_path):
    (tmp_path / "listen").write_text("socket-activation fd")
    (tmp_path / "extra").write_text("preserved fd")
    bundle.set_args("sh", "-c", 'cat /proc/self/fd/3; echo; cat /proc/self/fd/4; echo; echo "$LISTEN_FDS $LISTEN_PID"; [ -e /proc/$$/fd/5 ] && echo leaked || echo closed')
    from conftest import capsa_command

    # fd 3 comes from socket activation (LISTEN_FDS=1), fd 4 from --preserve-fds 1; fd 5 must not pass.
    command = " ".join(capsa_command()) + f" --root {bundle.root} run --preserve-fds 1 --bundle {bundle.path} c1"
    script = f"exec 3<{tmp_path}/listen 4<{tmp_path}/extra 5</etc/hostname; LISTEN_FDS=1 LISTEN_PID=$$ exec {command}"
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == ["socket-activation fd", "preserved fd", "1 1", "closed"]


def test_hooks_order_and_stdin(bundle, tmp_path):
    log = tmp_path / "hooks.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\necho \"$1 $(cat)\" >> {log}\n")
    hook.chmod(0o755)
    phases = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    bundle.config["root"]["readonly"] = False  # the startContainer hook writes inside the container
    bundle.config["hooks"] = {p: [{"path": str(hook), "args": ["hook.sh", p]}] for p in phases}
    # startContainer runs inside the container: give it the same script at the same path.
    os.makedirs(os.path.join(bundle.rootfs, str(tmp_path).lstrip("/")), exist_ok=True)
    inner_log = os.path.join(bundle.rootfs, str(log).lstrip("/"))
    with open(os.path.join(bundle.rootfs, str(hook).lstrip("/")), "w") as f:
        f.write(f"#!/bin/sh\necho \"$1 $(cat)\" >> {log}\n")
    os.chmod(os.path.join(bundle.rootfs, str(hook).lstrip("/")), 0o755)
    bundle.run("true")
    lines = log.read_text().splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]
    states = {line.split(" ", 1)[0]: jsonfast.loads(line.split(" ", 1)[1]) for line in lines}
    # runc and the runtime-tools suite give create-time hooks "created".
    assert states["prestart"]["status"] == "created" and states["prestart"]["id"] == "c1"
    assert states["createContainer"]["status"] == "created"
    assert states["poststart"]["status"] == "running"
    assert states["poststop"]["status"] == "stopped"
    assert states["prestart"]["pid"] > 0 and states["prestart"]["bundle"] == bundle.path
    inner = open(inner_log).read().split(" ", 1)
    assert inner[0] == "startContainer" and jsonfast.loads(inner[1])["status"] == "created"


def test_hook_without_env_gets_the_runtime_environment(bundle, tmp_path):
    """As runc: a hook the runtime runs (prestart, createRuntime, poststart, poststop) without
    `env` inherits the runtime's environment; `env: []` means an empty one; a hook the container's
    init runs (createContainer) never sees the host's (runc's init clears its environment)."""
    log = tmp_path / "env.log"
    def hook(name, **extra):
        return dict({"path": "/bin/sh", "args": ["sh", "-c", f'echo "{name} ${{CAPSA_TEST_MARK:-unset}}" >> {log}']}, **extra)
    runtime_phases = ["prestart", "createRuntime", "poststart", "poststop"]
    bundle.config["hooks"] = {phase: [hook(phase), hook(f"{phase}-empty", env=[]), hook(f"{phase}-given", env=["CAPSA_TEST_MARK=given"])]
                              for phase in runtime_phases}
    bundle.config["hooks"]["createContainer"] = [hook("createContainer")]
    bundle.run("true", env=dict(os.environ, CAPSA_TEST_MARK="from-the-caller"))
    seen = dict(line.split(" ", 1) for line in log.read_text().splitlines())
    for phase in runtime_phases:
        assert seen[phase] == "from-the-caller", phase
        assert seen[f"{phase}-empty"] == "unset", phase
        assert seen[f"{phase}-given"] == "given", phase
    assert seen["createContainer"] == "unset"


def test_failing_create_hook_fails_and_cleans_up(bundle):
    bundle.config["hooks"] = {"createRuntime": [{"path": "/bin/false"}]}
    result = bundle.run("true", check=False)
    assert result.returncode == 1 and "createRuntime hook" in result.stderr
    assert os.listdir(bundle.root) == []


def test_poststart_and_poststop_failures_are_warnings(bundle, tmp_path):
    mark = tmp_path / "ran"
    after = {"path": "/bin/sh", "args": ["sh", "-c", f"echo $0 >> {mark}"]}
    bundle.config["hooks"] = {
        "poststart": [{"path": "/bin/false"}, dict(after, args=after["args"] + ["poststart"])],
        "poststop": [{"path": "/bin/false"}, dict(after, args=after["args"] + ["poststop"])],
    }
    result = bundle.run("true")
    assert "poststart hook #0" in result.stderr and "poststop hook #0" in result.stderr
    assert mark.read_text().split() == ["poststart", "poststop"]


def test_hook_timeout(bundle):
    bundle.config["hooks"] = {"prestart": [{"path": "/bin/sleep", "args": ["sleep", "10"], "timeout": 1}]}
    result = bundle.run("true", check=False)
    assert result.returncode == 1 and "timed out" in result.stderr


def test_console_socket_receives_pty(bundle, tmp_path):
    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    bundle.process["terminal"] = True
    bundle.process["consoleSize"] = {"height": 33, "width": 101}
    bundle.set_args("sh", "-c", "tty; stty size; sleep 1")
    bundle.create("c1", "--console-socket", path)
    connection, _ = server.accept()
    _, fds, _, _ = socket.recv_fds(connection, 1024, 1)
    master = fds[0]
    bundle.capsa("start", "c1")
    output = b""
    while True:
        try:
            chunk = os.read(master, 1024)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    text = output.decode()
    assert "/dev/pts/0" in text and "33 101" in text


def test_console_belongs_to_the_process_user(bundle, tmp_path):
    """As runc: the container's pty (and so /dev/console, bound over it) is owned by the
    process's user, in the devpts group (tty); the exec case is in test_exec.py."""
    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    bundle.process["terminal"] = True
    bundle.process["user"] = {"uid": 1, "gid": 1}
    bundle.set_args("sh", "-c", 'stat -c "%u %g" $(tty) /dev/console; echo END; sleep 1')
    bundle.create("c1", "--console-socket", path)
    connection, _ = server.accept()
    _, fds, _, _ = socket.recv_fds(connection, 1024, 1)
    bundle.capsa("start", "c1")
    output = b""
    while b"END" not in output:
        try:
            chunk = os.read(fds[0], 1024)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(fds[0])
    assert output.decode().split()[:4] == ["1", "5", "1", "5"]


def test_invalid_config_is_clear_and_leaves_nothing(bundle):
    with open(os.path.join(bundle.path, "config.json"), "w") as f:
        f.write('{"ociVersion": "1.0.0", "process": ')
    result = bundle.capsa("create", "--bundle", bundle.path, "c1", check=False, write=False)
    assert result.returncode == 1 and "config" in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(bundle.root) or os.listdir(bundle.root) == []
    bundle.config["process"]["args"] = []
    bundle.write()
    result = bundle.capsa("create", "--bundle", bundle.path, "c1", check=False, write=False)
    assert result.returncode == 1 and "process.args" in result.stderr
    result = bundle.capsa("create", "--bundle", "/no/such/bundle", "c1", check=False)
    assert result.returncode == 1 and "/no/such/bundle" in result.stderr


def test_json_log_format(bundle, tmp_path):
    log = tmp_path / "log.json"
    result = bundle.capsa("--log", str(log), "--log-format", "json", "state", "nope", check=False)
    assert result.returncode == 1
    entry = jsonfast.loads(log.read_text())
    assert entry["level"] == "error" and "does not exist" in entry["msg"] and entry["time"]


@pytest.mark.parametrize(
    "where,key,value",
    [
        ("process", "execCPUAffinity", {"initial": "0"}),
        ("linux", "netDevices", {"eth0": {}}),
        ("linux", "intelRdt", {"closID": "x"}),
        ("linux", "personality", {"domain": "LINUX32"}),
    ],
)
def test_unsupported_fields_are_refused_not_ignored(bundle, where, key, value):
    target = bundle.process if where == "process" else bundle.config["linux"]
    target[key] = value
    result = bundle.run("true", check=False)
    assert result.returncode == 1 and f"{where}.{key}" in result.stderr and "not supported" in result.stderr
    assert bundle.capsa("list", "-q").stdout == ""
