"""capsactl's containers end to end, as root, through the worktree's capsactl: records, the
monitor's exit hook, the flags seen from inside the container, parallel calls, crashes and the
boot refresh (issue 17, containers part)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest


def capsactl_command() -> list[str]:
    launcher = os.path.join(os.path.dirname(sys.executable), "capsactl")
    if os.access(launcher, os.X_OK):
        return [launcher]
    return [sys.executable, "-c", "import sys; from capsa.ctl import main; sys.exit(main())"]


class Ctl:
    """capsactl with a private --root/--runroot under the test's tmp_path."""

    def __init__(self, base: str):
        self.base = base
        self.root = os.path.join(base, "graph")
        self.runroot = os.path.join(base, "run")
        self.command = [*capsactl_command(), "--root", self.root, "--runroot", self.runroot]

    def __call__(self, *args: str, check: bool = True, env: dict | None = None, timeout: float = 120,
                 input: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.command, *args], capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **(env or {})}, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"capsactl {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen([*self.command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **kwargs)

    def inspect(self, name: str) -> dict:
        return json.loads(self("inspect", name).stdout)[0]

    def ps(self) -> list[dict]:
        return json.loads(self("ps", "-a", "--format", "json").stdout)

    def events(self) -> list[dict]:
        path = os.path.join(self.root, "events", "events.log")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f]


def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


def monitors_of(ctl: Ctl) -> list[int]:
    """Processes still running with this store's run root in their environment or arguments:
    the container's monitors are forks of capsactl, recognised by their monitors/ pid files."""
    found = []
    directory = os.path.join(ctl.runroot, "monitors")
    if not os.path.isdir(directory):
        return found
    for container_id in os.listdir(directory):
        try:
            with open(os.path.join(directory, container_id, "pid")) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            continue
        if os.path.exists(f"/proc/{pid}"):
            found.append(pid)
    return found


@pytest.fixture(scope="session")
def busybox_rootfs(rootfs_template):
    return rootfs_template


def container_cgroups() -> set[str]:
    """The cgroups of capsactl's containers (linux.cgroupsPath /capsactl/<id>), every hierarchy."""
    import glob

    # directories only: on a cgroup2 host capsactl/ also holds its interface files (cgroup.procs, ...)
    found = set(glob.glob("/sys/fs/cgroup/*/capsactl/*")) | set(glob.glob("/sys/fs/cgroup/capsactl/*"))
    return {path for path in found if os.path.isdir(path)}


@pytest.fixture
def ctl(tmp_path, busybox_rootfs):
    """A store under tmp_path with the busybox image, and the checks that nothing is left
    (mounts, monitors, cgroups). The cgroups are narrowed to this store's containers (the ids
    its event log names): other test runs on the machine make and remove cgroups of their own
    meanwhile, which a before/after comparison of the whole hierarchy took for leftovers (and
    removed)."""
    ctl = Ctl(str(tmp_path))
    ctl("import", "-q", "-c", 'CMD ["sh"]', busybox_rootfs, "busybox")
    yield ctl
    check_nothing_left(ctl, tmp_path)


def check_nothing_left(ctl: Ctl, tmp_path) -> None:
    ctl("rm", "-a", "-f", "-t", "0", check=False)
    leftovers = mounts_under(str(tmp_path))
    monitors = monitors_of(ctl)
    for pid in monitors:
        os.kill(pid, signal.SIGKILL)
    for mount in reversed(leftovers):
        subprocess.run(["umount", "-l", mount], check=False)
    mine = {event["ID"] for event in ctl.events() if event.get("Type") == "container"}
    cgroups = [path for path in container_cgroups() if os.path.basename(path) in mine]
    for path in cgroups:
        try:
            os.rmdir(path)
        except OSError:
            pass
    assert not leftovers, f"mounts left behind: {leftovers}"
    assert not monitors, f"monitors left running: {monitors}"
    assert not cgroups, f"cgroups left behind: {sorted(cgroups)}"


def wait_until(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- step 1: lifecycle ----------------------------------------------------------------------------------

def test_run_foreground_gives_output_and_exit_code(ctl):
    result = ctl("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert result.returncode == 3
    assert result.stdout == "out\n"
    assert "err" in result.stderr
    assert ctl.ps() == []


def test_run_detached_then_stop_records_the_exit(ctl):
    container_id = ctl("run", "-d", "--name", "web", "busybox", "sleep", "1000").stdout.strip()
    assert len(container_id) == 64
    [entry] = json.loads(ctl("ps", "--format", "json").stdout)
    assert entry["Names"] == ["web"] and entry["State"] == "running"
    state = ctl.inspect("web")["State"]
    assert state["Running"] and state["Status"] == "running"
    with open(f"/proc/{state['Pid']}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sleep"
    merged = ctl.inspect("web")["GraphDriver"]["Data"]["MergedDir"]
    assert merged in mounts_under(ctl.base)
    # sleep as pid 1 ignores SIGTERM: stop sends SIGKILL after the timeout, as podman's stop.
    assert ctl("stop", "-t", "1", "web").stdout == "web\n"
    state = ctl.inspect("web")["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 137 and state["Pid"] == 0
    assert not state["FinishedAt"].startswith("0001") and not state["OOMKilled"]
    assert merged not in mounts_under(ctl.base)  # the exit hook unmounted the rootfs
    assert not os.path.exists(os.path.join(ctl.runroot, "runtime", container_id))  # and deleted the container
    died = [e for e in ctl.events() if e["Status"] == "died" and e["ID"] == container_id]
    assert died and died[-1]["Attributes"]["containerExitCode"] == "137"
    assert "Exited (137)" in ctl("ps", "-a").stdout


def test_stop_sends_the_stop_signal_first(ctl):
    ctl("run", "-d", "--name", "trapper", "--stop-signal", "USR1", "busybox", "sh", "-c",
        "trap 'exit 7' USR1; while true; do sleep 0.1; done")
    ctl("stop", "-t", "60", "trapper")
    assert ctl.inspect("trapper")["State"]["ExitCode"] == 7


def test_kill_and_wait(ctl):
    ctl("run", "-d", "--name", "k", "busybox", "sh", "-c", "trap 'exit 5' TERM; while true; do sleep 0.1; done")
    waiter = ctl.popen("wait", "k")
    ctl("kill", "-s", "TERM", "k")
    out, _ = waiter.communicate(timeout=60)
    assert out.strip() == "5"
    assert waiter.returncode == 0
    assert ctl.inspect("k")["State"]["Status"] == "exited"


def test_create_start_wait_rm(ctl):
    container_id = ctl("create", "--name", "c", "busybox", "sh", "-c", "exit 4").stdout.strip()
    assert ctl.inspect("c")["State"]["Status"] == "created"
    assert ctl("start", "c").stdout == "c\n"
    assert ctl("wait", "c").stdout.strip() == "4"
    assert ctl("rm", "c").stdout == "c\n"  # as named, as podman prints it
    assert ctl.ps() == []
    assert not os.path.exists(os.path.join(ctl.root, "containers", container_id))


def test_detached_rm_container_removes_itself(ctl):
    ctl("run", "-d", "--rm", "--name", "gone", "busybox", "true")
    wait_until(lambda: ctl.ps() == [], "the --rm container to remove itself")
    assert [e["Status"] for e in ctl.events() if e["Name"] == "gone"][-1] == "remove"


def test_rm_of_a_running_container_needs_force(ctl):
    ctl("run", "-d", "--name", "busy", "busybox", "sleep", "1000")
    result = ctl("rm", "busy", check=False)
    assert result.returncode == 125
    assert "busy" in result.stderr and "running" in result.stderr and "--force" in result.stderr
    assert ctl.inspect("busy")["State"]["Status"] == "running"
    ctl("rm", "-f", "-t", "0", "busy")
    assert ctl.ps() == []


def test_command_not_found_is_127(ctl):
    result = ctl("run", "--name", "nf", "busybox", "nosuchcommand", check=False)
    assert result.returncode == 127
    assert "nosuchcommand" in result.stderr
    state = ctl.inspect("nf")["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 127


def test_unknown_and_ambiguous_containers_are_clear_errors(ctl):
    result = ctl("inspect", "--type", "container", "nosuch", check=False)
    assert result.returncode == 125 and "no container with name or ID 'nosuch'" in result.stderr
    for verb in ("start", "stop", "rm", "kill", "wait"):
        result = ctl(verb, "nosuch", check=False)
        assert result.returncode == 125 and "nosuch" in result.stderr, verb
    ids = [ctl("create", "busybox", "true").stdout.strip() for _ in range(40)]
    # Among 40 ids some share their first hex digit: that prefix is ambiguous.
    first = {}
    for container_id in ids:
        first.setdefault(container_id[0], []).append(container_id)
    prefix = next(p for p, members in first.items() if len(members) > 1)
    result = ctl("inspect", prefix, check=False)
    assert result.returncode == 125 and "more than one container matches" in result.stderr
    unique = ids[0][:12]
    assert ctl.inspect(unique)["Id"] == ids[0]


# --- step 2: the spec, seen from inside --------------------------------------------------------------------

def run_output(ctl, *args: str) -> str:
    result = ctl("run", "--rm", *args, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def status_field(text: str, field: str) -> str:
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {field} in {text!r}")


def test_image_config_gives_the_default_process(ctl, busybox_rootfs):
    ctl("import", "-q", "-c", 'ENTRYPOINT ["/bin/sh", "-c"]', "-c", 'CMD ["echo $GREETING from $(pwd)"]',
        "-c", "ENV GREETING=hello", "-c", "WORKDIR /etc", "-c", "USER 1000", busybox_rootfs, "configured")
    assert run_output(ctl, "configured") == "hello from /etc\n"
    assert run_output(ctl, "configured", "id -u") == "1000\n"
    assert run_output(ctl, "-e", "GREETING=hi", "-w", "/tmp", "configured") == "hi from /tmp\n"
    assert run_output(ctl, "--entrypoint", "echo", "configured", "plain") == "plain\n"
    assert run_output(ctl, "--entrypoint", '["printf", "%s-%s"]', "configured", "a", "b") == "a-b"


def test_env_user_workdir_hostname(ctl, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=1\nBOTH=file\n")
    out = run_output(ctl, "--env-file", str(env_file), "-e", "BOTH=flag", "-e", "HOME_X", "-u", "1000:1000",
                     "-w", "/tmp", "--hostname", "box1", "busybox", "sh", "-c",
                     'echo $FROM_FILE $BOTH; id -u; id -g; pwd; hostname; cat /etc/hostname', )
    assert out.split("\n")[:6] == ["1 flag", "1000", "1000", "/tmp", "box1", "box1"]
    # a user name is looked up in the image's /etc/passwd
    assert run_output(ctl, "-u", "nobody", "busybox", "id", "-un") == "nobody\n"
    result = ctl("run", "--rm", "-u", "nosuchuser", "busybox", "true", check=False)
    assert result.returncode == 125 and "nosuchuser" in result.stderr


def test_read_only_tmpfs_and_bind_volumes(ctl, tmp_path):
    host = tmp_path / "share"
    host.mkdir()
    (host / "file").write_text("from the host\n")
    out = run_output(ctl, "--read-only", "--tmpfs", "/scratch:size=1m", "-v", f"{host}:/data:ro",
                     "-v", f"{host}:/rw", "busybox", "sh", "-c",
                     "touch /x 2>/dev/null && echo root-writable || echo root-ro; "
                     "touch /tmp/x && echo tmp-writable; "
                     "grep ' /scratch ' /proc/mounts | cut -d' ' -f3; "
                     "cat /data/file; touch /data/y 2>/dev/null && echo data-writable || echo data-ro; "
                     "echo written > /rw/new")
    assert out.splitlines() == ["root-ro", "tmp-writable", "tmpfs", "from the host", "data-ro"]
    assert (host / "new").read_text() == "written\n"
    result = ctl("run", "--rm", "-v", f"{tmp_path}/missing:/m", "busybox", "true", check=False)
    assert result.returncode == 125 and "does not exist" in result.stderr
    assert ctl.ps() == []


def test_named_volumes_persist_and_are_refcounted(ctl, busybox_rootfs):
    ctl("run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/f")
    assert run_output(ctl, "-v", "data:/data:ro", "busybox", "cat", "/data/f") == "kept\n"
    volume = json.loads(ctl("volume", "inspect", "data").stdout)[0]
    assert volume["Name"] == "data" and volume["Driver"] == "local"
    with open(os.path.join(volume["Mountpoint"], "f")) as f:
        assert f.read() == "kept\n"
    ctl("create", "--name", "user", "-v", "data:/data", "busybox", "true")
    result = ctl("volume", "rm", "data", check=False)
    assert result.returncode == 125 and "user" in result.stderr
    assert ctl("volume", "prune", "-f").stdout == ""
    ctl("rm", "user")
    assert ctl("volume", "ls", "-q").stdout == "data\n"
    assert ctl("volume", "prune", "-f").stdout == "data\n"
    assert ctl("volume", "ls", "-q").stdout == ""
    # a new volume gets what the image has at its mount point (podman's copy-up), owners kept
    out = run_output(ctl, "-v", "etcvol:/etc", "busybox", "sh", "-c", "cat /etc/passwd | head -1")
    assert out == "root:x:0:0:root:/root:/bin/sh\n" or out.startswith("root:")
    copied = json.loads(ctl("volume", "inspect", "etcvol").stdout)[0]
    assert os.path.exists(os.path.join(copied["Mountpoint"], "passwd")) and not copied["NeedsCopyUp"]
    # ...once: what the first container leaves is what the next one sees
    ctl("run", "--rm", "-v", "etcvol:/etc", "busybox", "rm", "/etc/group")
    assert run_output(ctl, "-v", "etcvol:/etc", "busybox", "sh", "-c", "ls /etc/group 2>/dev/null || echo gone") \
        == "gone\n"
    # owners and modes of what is copied up are the image's
    image_root = os.path.join(ctl.base, "owned-rootfs")
    subprocess.run(["cp", "-a", busybox_rootfs, image_root], check=True)
    os.makedirs(os.path.join(image_root, "srv", "app", "sub"))
    with open(os.path.join(image_root, "srv", "app", "sub", "f"), "w") as f:
        f.write("seed\n")
    for path in ("srv/app", "srv/app/sub", "srv/app/sub/f"):
        os.chown(os.path.join(image_root, path), 1000, 1001)
    os.chmod(os.path.join(image_root, "srv", "app"), 0o750)
    ctl("import", "-q", image_root, "owned")
    out = run_output(ctl, "-v", "appvol:/srv/app", "owned", "sh", "-c",
                     "stat -c '%u:%g %a' /srv/app /srv/app/sub /srv/app/sub/f; cat /srv/app/sub/f")
    assert out == "1000:1001 750\n1000:1001 755\n1000:1001 644\nseed\n"
    # an anonymous volume goes with rm -v
    ctl("volume", "prune", "-f")
    ctl("create", "--name", "anon", "-v", "/scratch", "busybox", "true")
    assert len(ctl("volume", "ls", "-q").stdout.split()) == 1
    ctl("rm", "-v", "anon")
    assert ctl("volume", "ls", "-q").stdout == ""


def test_resources_are_the_cgroups_limits(ctl):
    out = run_output(ctl, "--memory", "64m", "--pids-limit", "50", "--cpus", "0.5", "busybox", "sh", "-c",
                     "for f in memory/memory.limit_in_bytes pids/pids.max cpu/cpu.cfs_quota_us "
                     "memory.max pids.max cpu.max; do [ -f /sys/fs/cgroup/$f ] && cat /sys/fs/cgroup/$f; done; true")
    values = out.split()
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        assert values[:2] == ["67108864", "50"] and values[2].startswith("50000")
    else:
        assert values == ["67108864", "50", "50000"]
    result = ctl("run", "--rm", "--memory", "lots", "busybox", "true", check=False)
    assert result.returncode == 125 and "--memory" in result.stderr


def test_capabilities_and_security_options(ctl):
    default = run_output(ctl, "busybox", "cat", "/proc/self/status")
    assert int(status_field(default, "CapEff"), 16) == 0x800405FB  # podman's default set
    assert status_field(default, "Seccomp") == "2"  # the default profile
    assert status_field(default, "NoNewPrivs") == "0"
    tight = run_output(ctl, "--cap-drop", "ALL", "--cap-add", "NET_RAW", "--security-opt", "no-new-privileges",
                       "--security-opt", "seccomp=unconfined", "busybox", "cat", "/proc/self/status")
    assert int(status_field(tight, "CapBnd"), 16) == 1 << 13  # CAP_NET_RAW alone
    assert status_field(tight, "Seccomp") == "0" and status_field(tight, "NoNewPrivs") == "1"
    assert int(status_field(run_output(ctl, "-u", "1000", "busybox", "cat", "/proc/self/status"), "CapEff"), 16) == 0
    result = ctl("run", "--rm", "--cap-add", "CAP_NOPE", "busybox", "true", check=False)
    assert result.returncode == 125 and "CAP_NOPE" in result.stderr
    result = ctl("run", "--rm", "--security-opt", "bogus", "busybox", "true", check=False)
    assert result.returncode == 125 and "bogus" in result.stderr
    # seccomp=PROFILE: an OCI profile file that refuses mkdir
    profile = os.path.join(ctl.base, "seccomp.json")
    with open(profile, "w") as f:
        json.dump({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}, f)
    out = run_output(ctl, "--security-opt", f"seccomp={profile}", "busybox", "sh", "-c",
                     "mkdir /tmp/d 2>/dev/null && echo made || echo refused")
    assert out == "refused\n"


def test_init_network_labels_stop_timeout(ctl):
    out = run_output(ctl, "--init", "busybox", "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo")
    assert out.startswith("/run/capsa-init -- sh -c")
    assert run_output(ctl, "busybox", "ls", "/sys/class/net") == "lo\n"
    host_interfaces = sorted(os.listdir("/sys/class/net"))
    assert run_output(ctl, "--network", "host", "busybox", "ls", "/sys/class/net").split() == host_interfaces
    ctl("create", "--name", "l", "--label", "a=b", "--label", "c", "--stop-timeout", "3", "busybox", "true")
    data = ctl.inspect("l")
    assert data["Config"]["Labels"] == {"a": "b", "c": ""}
    assert data["Config"]["StopTimeout"] == 3
    assert ctl("ps", "-a", "--filter", "label=a=b", "--format", "{{.Names}}").stdout == "l\n"
    result = ctl("run", "--rm", "--network", "slirp4netns", "busybox", "true", check=False)
    assert result.returncode == 125 and "slirp4netns" in result.stderr


# --- step 3: parallel calls ----------------------------------------------------------------------------------

def test_parallel_runs_of_distinct_names_all_succeed(ctl):
    procs = [ctl.popen("run", "-d", "--name", f"p{i}", "busybox", "sleep", "1000") for i in range(20)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    entries = ctl.ps()
    assert sorted(e["Names"][0] for e in entries) == sorted(f"p{i}" for i in range(20))
    assert all(e["State"] == "running" for e in entries)
    ctl("rm", "-a", "-f", "-t", "0")
    assert ctl.ps() == [] and not monitors_of(ctl)


def test_parallel_creates_of_one_name_one_wins(ctl):
    procs = [ctl.popen("create", "--name", "same", "busybox", "true") for _ in range(10)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    winners = [r for r in results if r[0] == 0]
    assert len(winners) == 1, results
    for code, _, err in results:
        if code != 0:
            assert code == 125 and "name 'same' is already in use" in err, err
    [entry] = ctl.ps()
    assert entry["Id"] == winners[0][1].strip()
    assert os.listdir(os.path.join(ctl.root, "containers")) in ([], [entry["Id"]])


# --- step 4: boot refresh -----------------------------------------------------------------------------------

def test_a_new_boot_id_turns_running_containers_into_exited_ones(monkeypatch, ctl, tmp_path):
    # monkeypatch first: its environment is undone after ctl's teardown has removed everything
    boot_file = tmp_path / "boot_id"
    boot_file.write_text("boot-one\n")
    monkeypatch.setenv("CAPSA_BOOT_ID_FILE", str(boot_file))  # store.boot_id's test hook
    ctl("ps")  # the store records boot-one
    ctl("run", "-d", "--name", "survivor", "busybox", "sleep", "1000")
    ctl("create", "--name", "fresh", "busybox", "true")
    data = ctl.inspect("survivor")
    pid, monitor = data["State"]["Pid"], data["State"]["ConmonPid"]
    merged = data["GraphDriver"]["Data"]["MergedDir"]
    exit_file = os.path.join(ctl.runroot, "exits", "stale")
    with open(exit_file, "w") as f:
        f.write("0")
    # "Reboot": the processes would be gone; here they are killed by hand, the monitor first, so
    # that nothing but the refresh fixes the records.
    os.kill(monitor, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    boot_file.write_text("boot-two\n")
    entries = {e["Names"][0]: e for e in ctl.ps()}
    assert entries["survivor"]["State"] == "exited"
    assert entries["fresh"]["State"] == "created"
    data = ctl.inspect("survivor")
    assert data["State"]["ExitCode"] == -1 and "rebooted" in data["State"]["Error"]
    assert not os.path.exists(exit_file)  # stale run-time files are gone
    assert not os.path.exists(os.path.join(ctl.runroot, "monitors"))
    assert not os.path.exists(os.path.join(ctl.runroot, "runtime", data["Id"]))
    assert merged not in mounts_under(ctl.base)
    # and the container starts again
    ctl("start", "survivor")
    assert ctl.inspect("survivor")["State"]["Status"] == "running"


# --- step 5: the other commands ------------------------------------------------------------------------------

def test_restart_rename_pause_unpause(ctl):
    ctl("run", "-d", "--name", "r", "busybox", "sleep", "1000")
    first_pid = ctl.inspect("r")["State"]["Pid"]
    ctl("restart", "-t", "0", "r")
    state = ctl.inspect("r")["State"]
    assert state["Status"] == "running" and state["Pid"] != first_pid
    ctl("rename", "r", "renamed")
    assert ctl.inspect("renamed")["Name"] == "renamed"
    ctl("create", "--name", "other", "busybox", "true")
    result = ctl("rename", "renamed", "other", check=False)
    assert result.returncode == 125 and "already in use" in result.stderr
    ctl("pause", "renamed")
    assert ctl.inspect("renamed")["State"]["Status"] == "paused"
    freezer = f"/sys/fs/cgroup/freezer/capsactl/{ctl.inspect('renamed')['Id']}/freezer.state"
    if os.path.exists(freezer):
        with open(freezer) as f:
            assert f.read().strip() == "FROZEN"
    result = ctl("pause", "renamed", check=False)
    assert result.returncode == 125 and "paused" in result.stderr
    ctl("unpause", "renamed")
    assert ctl.inspect("renamed")["State"]["Status"] == "running"
    statuses = [e["Status"] for e in ctl.events() if e["Name"] == "renamed"]
    assert "pause" in statuses and "unpause" in statuses and "rename" in statuses


def test_top_and_stats(ctl):
    ctl("run", "-d", "--name", "t", "busybox", "sh", "-c", "sleep 1000 & sleep 1001")
    wait_until(lambda: "sleep 1000" in ctl("top", "t").stdout, "both sleeps to run")
    lines = ctl("top", "t").stdout.splitlines()
    assert lines[0].split() == ["USER", "PID", "PPID", "%CPU", "ELAPSED", "TTY", "TIME", "COMMAND"]
    commands = [line.split(None, 7)[-1] for line in lines[1:]]
    assert "sleep 1000" in commands and "sleep 1001" in commands
    assert all(line.split()[0] == "root" for line in lines[1:])
    assert sorted(int(line.split()[1]) for line in lines[1:])[0] == 1  # pids as the container sees them
    assert ctl("top", "t", "pid,args").stdout.splitlines()[0].split() == ["PID", "COMMAND"]
    stats = json.loads(ctl("stats", "--no-stream", "--format", "json").stdout)
    [entry] = stats
    assert entry["Name"] == "t" and entry["PIDs"] >= 2 and entry["MemUsageBytes"] > 0
    table = ctl("stats", "--no-stream", "t").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "NAME", "CPU"] and table[1].split()[1] == "t"
    # streaming: a table per interval, until the containers named have stopped
    stream = ctl.popen("stats", "--interval", "1", "t")
    assert stream.stdout.readline().split()[:2] == ["ID", "NAME"]
    assert stream.stdout.readline().split()[1] == "t"
    ctl("stop", "-t", "0", "t")
    assert stream.wait(timeout=60) == 0
    result = ctl("top", "t", check=False)
    assert result.returncode == 125 and "exited" in result.stderr


def test_cp_export_mount(ctl, tmp_path, busybox_rootfs):
    ctl("create", "--name", "files", "busybox", "sh", "-c", "echo made-inside > /made")
    ctl("start", "files")
    ctl("wait", "files")
    # out of a stopped container: its rootfs is mounted for the copy
    ctl("cp", "files:/made", str(tmp_path / "made"))
    assert (tmp_path / "made").read_text() == "made-inside\n"
    ctl("cp", "files:/etc", str(tmp_path / "etc-copy"))
    assert (tmp_path / "etc-copy" / "passwd").exists()
    # in, then seen by the container's next run
    (tmp_path / "in.txt").write_text("from the host\n")
    ctl("cp", str(tmp_path / "in.txt"), "files:/tmp/")
    # a symlink in the container cannot lead a copy out of its rootfs
    outside = tmp_path / "outside"
    outside.mkdir()
    ctl("run", "--name", "linker", "busybox", "ln", "-s", str(outside), "/escape")
    ctl("cp", str(tmp_path / "in.txt"), "linker:/escape/", check=False)  # refused, or inside the rootfs
    ctl("cp", str(tmp_path / "in.txt"), "linker:/escape/in.txt", check=False)
    assert not (outside / "in.txt").exists()
    ctl("run", "--name", "linker2", "busybox", "ln", "-s", "/", "/up")
    # /up/../../.. resolves inside the rootfs (RESOLVE_IN_ROOT): the image's passwd, not the host's
    ctl("cp", "linker2:/up/../../../../etc/passwd", str(tmp_path / "passwd-copy"))
    assert (tmp_path / "passwd-copy").read_text() == open(os.path.join(busybox_rootfs, "etc", "passwd")).read()
    # a tree in: into an existing directory, and as a new name
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "leaf").write_text("leaf\n")
    os.symlink("sub/leaf", tree / "link")
    ctl("cp", str(tree), "files:/tmp")
    ctl("cp", f"{tree}/.", "files:/tmp/renamed")
    archive = tmp_path / "files.tar"
    ctl("export", "-o", str(archive), "files")
    import tarfile

    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert "made" in names and "tmp/in.txt" in names and "bin/busybox" in names
        assert tar.extractfile("made").read() == b"made-inside\n"
        assert tar.extractfile("tmp/tree/sub/leaf").read() == b"leaf\n"
        assert tar.getmember("tmp/tree/link").linkname == "sub/leaf"
        assert tar.extractfile("tmp/renamed/sub/leaf").read() == b"leaf\n"
    merged = ctl("mount", "files").stdout.strip()
    assert merged in mounts_under(ctl.base)
    with open(os.path.join(merged, "made")) as f:
        assert f.read() == "made-inside\n"
    assert ctl.inspect("files")["GraphDriver"]["Data"]["MergedDir"] == merged
    ctl("unmount", "files")
    assert merged not in mounts_under(ctl.base)
    assert ctl("cp", "files:/nope", str(tmp_path), check=False).returncode == 125


def test_container_prune_and_system_commands(ctl):
    ctl("run", "-d", "--name", "keep", "busybox", "sleep", "1000")
    ctl("run", "--name", "done", "busybox", "true")
    ctl("create", "--name", "never", "-v", "vol:/v", "busybox", "true")
    df = {row["Type"]: row for row in json.loads(ctl("system", "df", "--format", "json").stdout)}
    assert df["Containers"]["Total"] == 3 and df["Containers"]["Active"] == 1
    assert df["Images"]["Total"] == 1 and df["Images"]["Active"] == 1
    assert df["Local Volumes"]["Total"] == 1
    info = json.loads(ctl("info", "--format", "json").stdout)
    assert info["store"]["containerStore"] == {"number": 3, "running": 1, "paused": 0, "stopped": 2}
    assert info["store"]["graphRoot"] == ctl.root
    assert ctl("info", "--format", "{{.Store.GraphRoot}}").stdout.strip() == ctl.root
    assert json.loads(ctl("version", "--format", "json").stdout)["Client"]["Version"]
    pruned = ctl("container", "prune", "-f").stdout.split()
    assert len(pruned) == 2
    assert [e["Names"][0] for e in ctl.ps()] == ["keep"]
    out = ctl("system", "prune", "-f", "--volumes").stdout
    assert "Deleted Volumes\nvol\n" in out
    assert [e["Names"][0] for e in ctl.ps()] == ["keep"]


def test_ps_formats_and_filters(ctl):
    ctl("run", "-d", "--name", "up", "--label", "tier=web", "busybox", "sleep", "1000")
    ctl("run", "--name", "down", "busybox", "sh", "-c", "exit 2", check=False)
    assert ctl("ps", "--format", "{{.Names}}").stdout == "up\n"
    assert sorted(ctl("ps", "-a", "--format", "{{.Names}} {{.State}}").stdout.splitlines()) == \
        ["down exited", "up running"]
    assert ctl("ps", "-a", "--filter", "status=exited", "-q").stdout.strip() == ctl.inspect("down")["Id"][:12]
    assert ctl("ps", "-a", "--filter", "exited=2", "--format", "{{.Names}}").stdout == "down\n"
    assert ctl("ps", "--filter", "label=tier=web", "--format", "{{.Names}}").stdout == "up\n"
    table = ctl("ps", "-a", "--format", "table {{.ID}}\t{{.Names}}").stdout.splitlines()
    assert table[0].split() == ["CONTAINER", "ID", "NAMES"] and len(table) == 3
    assert ctl("inspect", "--format", "{{.State.ExitCode}}", "down").stdout == "2\n"
    assert ctl("container", "exists", "up").returncode == 0
    assert ctl("container", "exists", "nope", check=False).returncode == 1


# --- step 6: kill -9 of capsactl in the middle of run ----------------------------------------------------------

@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5])
def test_kill_9_during_run_leaves_a_consistent_store(ctl, delay):
    proc = ctl.popen("run", "--name", "victim", "busybox", "sleep", "1000")
    time.sleep(delay)
    proc.kill()
    proc.wait()
    # Whatever moment it died at, the next calls agree on a state and can clean it all up.
    entries = ctl.ps()
    assert len(entries) <= 1
    if entries:
        assert entries[0]["State"] in ("created", "running", "exited")
        ctl.inspect("victim")
        ctl("rm", "-f", "-t", "0", "victim")
    assert ctl.ps() == []
    assert not mounts_under(ctl.base)
    runtime_root = os.path.join(ctl.runroot, "runtime")
    assert not [d for d in os.listdir(runtime_root) if not d.startswith("@")] if os.path.isdir(runtime_root) else True
    wait_until(lambda: not monitors_of(ctl), "the monitor to end")
    # and the name can be used again
    ctl("run", "--rm", "--name", "victim", "busybox", "true")


# --- --runtime: runc through its command line ---------------------------------------------------------------

@pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed")
def test_runc_as_the_runtime(ctl):
    runc = ["--runtime", shutil.which("runc")]
    # A process that exits at once: its exit hook must wait for runc's start to finish (runc's
    # start removes its exec.fifo last, and failed when the hook had deleted the container first).
    for _ in range(10):
        ctl(*runc, "run", "--rm", "busybox", "true")
    assert ctl(*runc, "run", "--rm", "busybox", "sh", "-c", "echo via runc; exit 3", check=False).returncode == 3
    container_id = ctl(*runc, "run", "-d", "--name", "r", "busybox", "sleep", "1000").stdout.strip()
    state_dir = os.path.join(ctl.runroot, "runtime", "runc", container_id)
    assert os.path.isdir(state_dir)
    assert ctl.inspect("r")["OCIRuntime"] == shutil.which("runc")
    ctl("stop", "-t", "0", "r")  # the container keeps its runtime: no --runtime needed
    assert ctl.inspect("r")["State"]["ExitCode"] == 137
    assert not os.path.exists(state_dir)
    result = ctl(*runc, "run", "--rm", "busybox", "nosuchcommand", check=False)
    assert result.returncode == 127 and "nosuchcommand" in result.stderr


# --- more of the lifecycle -------------------------------------------------------------------------------------

def test_a_corrupt_record_is_a_message_and_rm_force_removes_it(ctl):
    import sqlite3

    container_id = ctl("create", "--name", "broken", "busybox", "true").stdout.strip()
    ctl("create", "--name", "fine", "busybox", "true")
    db = sqlite3.connect(os.path.join(ctl.root, "db.sqlite"))
    db.execute("UPDATE containers SET config = '{not json' WHERE id = ?", (container_id,))
    db.commit()
    db.close()
    result = ctl("inspect", "broken", check=False)
    assert result.returncode == 125 and "corrupt" in result.stderr and "Traceback" not in result.stderr
    listing = ctl("ps", "-a", "--format", "{{.Names}}")
    assert listing.stdout == "fine\n" and "broken" in listing.stderr and "corrupt" in listing.stderr
    result = ctl("rm", "broken", check=False)
    assert result.returncode == 125 and "corrupt" in result.stderr
    assert ctl("rm", "-f", container_id[:12]).stdout.strip() == container_id[:12]
    assert ctl("ps", "-a", "--format", "{{.Names}}").stdout == "fine\n"


def test_oom_kill_is_recorded(ctl):
    result = ctl("run", "--name", "hog", "--memory", "16m", "busybox", "sh", "-c",
                 "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived", check=False)
    state = ctl.inspect("hog")["State"]
    assert result.returncode == state["ExitCode"] != 0
    assert state["OOMKilled"], state


def test_start_attach_and_the_events_of_a_life(ctl):
    container_id = ctl("create", "--name", "life", "busybox", "sh", "-c", "echo hello; exit 6").stdout.strip()
    result = ctl("start", "-a", "life", check=False)
    assert result.returncode == 6 and result.stdout == "hello\n"
    ctl("rm", "life")
    statuses = [e["Status"] for e in ctl.events() if e["ID"] == container_id]
    assert statuses == ["create", "init", "start", "died", "remove"]


def test_foreground_run_forwards_sigterm(ctl):
    proc = ctl.popen("run", "--rm", "--name", "fg", "busybox", "sh", "-c",
                     "trap 'echo got-term; exit 9' TERM; while true; do sleep 0.1; done")
    wait_until(lambda: any(e["Names"] == ["fg"] and e["State"] == "running" for e in ctl.ps()), "fg to run")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 9 and "got-term" in out
    assert ctl.ps() == []


# --- bridge networks (capsa.manager.network, wired in by run/start and the exit hook) -------------------------

@pytest.fixture
def host_netns():
    """A network namespace that plays the host of the bridges (as test_capsactl_network's): capsactl,
    netavark and the containers' bridge live there; deleting it removes everything."""
    for tool in ("nsenter", "ip", "iptables"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is needed for the bridge tests")
    if not os.path.exists("/usr/lib/podman/netavark"):
        pytest.skip("netavark (podman's network backend) is not installed")
    name = f"capsa-ctr-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    path = f"/run/netns/{name}"
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        probe = subprocess.run(["nsenter", f"--net={path}", "iptables", "-t", "nat", "-L", "-n"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"iptables cannot make NAT rules here: {probe.stderr.strip()}")
        yield path
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_bridge_network_and_published_port(ctl, host_netns):
    ctl.command = ["nsenter", f"--net={host_netns}", *ctl.command]
    ctl("run", "-d", "--name", "web", "--network", "bridge", "-p", "18080:80", "busybox", "sh", "-c",
        "mkdir -p /www && echo served > /www/index.html && httpd -f -p 80 -h /www")
    data = ctl.inspect("web")
    address = data["NetworkSettings"]["IPAddress"]
    assert address.startswith("10.88.") and data["NetworkSettings"]["Gateway"] == "10.88.0.1"
    assert data["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "", "HostPort": "18080"}]}
    assert "0.0.0.0:18080->80/tcp" in ctl("ps").stdout
    netns_file = data["NetworkSettings"]["SandboxKey"]
    assert os.path.exists(netns_file)
    out = ctl("run", "--rm", "--network", "bridge", "busybox", "sh", "-c",
              f"cat /etc/hosts; ip -4 addr show eth0 | grep -c inet; "
              f"wget -q -O - http://{address}/index.html").stdout
    assert "host.containers.internal" in out and out.endswith("1\nserved\n")
    # the published port on the "host"
    fetched = subprocess.run(["nsenter", f"--net={host_netns}", sys.executable, "-c",
                              "import urllib.request; print(urllib.request.urlopen("
                              "'http://127.0.0.1:18080/index.html', timeout=5).read().decode(), end='')"],
                             capture_output=True, text=True, timeout=60)
    assert fetched.stdout == "served\n", fetched.stderr
    result = ctl("run", "--rm", "--network", "none", "-p", "1:1", "busybox", "true", check=False)
    assert result.returncode == 125 and "bridge" in result.stderr
    result = ctl("run", "--rm", "--network", "nosuchnet", "busybox", "true", check=False)
    assert result.returncode == 125 and "nosuchnet" in result.stderr
    ctl("stop", "-t", "0", "web")  # the exit hook tears the network down
    assert not os.path.exists(netns_file)
    links = subprocess.run(["ip", "-n", os.path.basename(host_netns), "-o", "link"], capture_output=True,
                           text=True).stdout
    assert "veth" not in links
    ctl("start", "web")  # set up again, same port
    assert ctl.inspect("web")["NetworkSettings"]["IPAddress"].startswith("10.88.")
    ctl("rm", "-f", "-t", "0", "web")
    assert "veth" not in subprocess.run(["ip", "-n", os.path.basename(host_netns), "-o", "link"],
                                        capture_output=True, text=True).stdout


def test_inspect_and_ps_keys_are_podmans(ctl, busybox_rootfs, tmp_path):
    """The same keys as podman 4.3's `container inspect` (top level, State, Config) and `ps --format
    json`, for a container created by each from the same rootfs."""
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    import tempfile

    runroot = tempfile.mkdtemp(prefix="ctr-p-")  # podman wants a run root of at most 50 characters
    podman = ["podman", "--root", str(tmp_path / "p-root"), "--runroot", runroot,
              "--storage-driver", "vfs", "--tmpdir", str(tmp_path / "p-tmp"), "--cgroup-manager", "cgroupfs",
              "--events-backend", "file"]
    archive = tmp_path / "rootfs.tar"
    subprocess.run(["tar", "-C", busybox_rootfs, "-cf", str(archive), "."], check=True)

    def call(*args: str) -> str:
        result = subprocess.run([*podman, *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    try:
        call("import", str(archive), "localhost/busybox")
        call("create", "--name", "c", "--network", "none", "localhost/busybox", "true")
        theirs = json.loads(call("inspect", "c"))[0]
        theirs_ps = json.loads(call("ps", "-a", "--format", "json"))[0]
    finally:
        subprocess.run([*podman, "rm", "-a", "-f"], capture_output=True)
        subprocess.run(["umount", "-R", str(tmp_path / "p-root")], capture_output=True)
        shutil.rmtree(runroot, ignore_errors=True)
    ctl("create", "--name", "c", "busybox", "true")
    ours = ctl.inspect("c")
    assert set(theirs) <= set(ours), set(theirs) - set(ours)
    assert set(theirs["State"]) <= set(ours["State"]), set(theirs["State"]) - set(ours["State"])
    assert set(theirs["Config"]) <= set(ours["Config"]), set(theirs["Config"]) - set(ours["Config"])
    assert set(ctl.ps()[0]) == set(theirs_ps)
    for key in ("Path", "Args", "Name"):
        assert ours[key] == theirs[key], key
    assert ours["State"]["Status"] == theirs["State"]["Status"] == "created"


@pytest.mark.parametrize("verb", ["rm", "stop"])
@pytest.mark.parametrize("delay", [0.02, 0.1, 0.3])
def test_kill_9_during_rm_or_stop_leaves_a_consistent_store(ctl, verb, delay):
    ctl("run", "-d", "--name", "victim", "busybox", "sleep", "1000")
    proc = ctl.popen(*(["rm", "-f", "-t", "0"] if verb == "rm" else ["stop", "-t", "0"]), "victim")
    time.sleep(delay)
    proc.kill()
    proc.wait()
    entries = ctl.ps()
    assert len(entries) <= 1
    if entries:
        assert entries[0]["State"] in ("running", "stopping", "exited", "removing")
        ctl("rm", "-f", "-t", "0", "victim")
    assert ctl.ps() == [] and not mounts_under(ctl.base)
    wait_until(lambda: not monitors_of(ctl), "the monitor to end")
    ctl("run", "--rm", "--name", "victim", "busybox", "true")


def test_cp_tar_streams(ctl):
    import io
    import tarfile

    ctl("create", "--name", "box", "busybox", "true")
    out = subprocess.run([*ctl.command, "cp", "box:/etc", "-"], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        names = tar.getnames()
        assert "etc" in names and "etc/passwd" in names and tar.getmember("etc").isdir()
    # in: a tar on stdin, into a directory of the container
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("dir/file", b"payload\n"),):
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.mode = len(data), 1000, 0o640
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/"
        tar.addfile(link)
        info = tarfile.TarInfo("evil/tmp/planted")  # through the symlink: inside the rootfs, never the host's /
        info.size = 3
        tar.addfile(info, io.BytesIO(b"in\n"))
    result = subprocess.run([*ctl.command, "cp", "-", "box:/tmp"], input=buffer.getvalue(), capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert not os.path.exists("/tmp/planted")
    ctl("start", "box")
    ctl("wait", "box")
    merged = ctl("mount", "box").stdout.strip()
    with open(os.path.join(merged, "tmp", "dir", "file")) as f:
        assert f.read() == "payload\n"
    st = os.stat(os.path.join(merged, "tmp", "dir", "file"))
    assert (st.st_uid, st.st_mode & 0o777) == (1000, 0o640)
    with open(os.path.join(merged, "tmp", "planted")) as f:
        assert f.read() == "in\n"
    ctl("unmount", "box")
    # a member outside the directory is refused, a non-tar is a clear error
    bad = io.BytesIO()
    with tarfile.open(fileobj=bad, mode="w") as tar:
        info = tarfile.TarInfo("../../outside")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    result = subprocess.run([*ctl.command, "cp", "-", "box:/tmp"], input=bad.getvalue(), capture_output=True)
    assert result.returncode == 125 and b"outside" in result.stderr
    result = subprocess.run([*ctl.command, "cp", "-", "box:/tmp"], input=b"not a tar" * 100, capture_output=True)
    assert result.returncode == 125 and b"not a tar" in result.stderr


# --- an unprivileged user ---------------------------------------------------------------------------------------

def test_rootless_containers_as_an_unprivileged_user(busybox_rootfs):
    """capsactl run by `nobody`: its store under $HOME/.local/share/capsa (vfs: overlayfs needs
    root here), its containers in a user namespace mapping it to root, no cgroup limits."""
    import pwd
    import tempfile

    if not shutil.which("setpriv"):
        pytest.skip("setpriv is needed to run as another user")
    user = pwd.getpwnam("nobody")
    base = tempfile.mkdtemp(prefix="ctr-rootless-")
    os.chmod(base, 0o755)
    rootfs = os.path.join(base, "rootfs")
    subprocess.run(["cp", "-a", busybox_rootfs, rootfs], check=True)
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", base], check=True)
    command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "env",
               f"HOME={base}", f"XDG_RUNTIME_DIR={base}/run", *capsactl_command()]

    def as_user(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, cwd=base)
        if check and result.returncode != 0:
            raise AssertionError(f"capsactl {' '.join(args)} as nobody exited {result.returncode}: {result.stderr}")
        return result

    try:
        if as_user("ps", check=False).returncode != 0:
            pytest.skip("nobody cannot run this checkout's capsactl")
        as_user("import", "-q", rootfs, "busybox")
        probe = as_user("run", "--rm", "busybox", "true", check=False)
        if probe.returncode != 0 and "user namespace" in probe.stderr:
            pytest.skip(f"this host does not let an unprivileged user make user namespaces: {probe.stderr}")
        out = as_user("run", "--rm", "busybox", "sh", "-c", "id -u; cat /proc/self/uid_map; cat /proc/net/dev").stdout
        lines = out.splitlines()
        assert lines[0] == "0" and lines[1].split() == ["0", str(user.pw_uid), "1"]
        assert [line.split(":")[0].strip() for line in lines[4:]] == ["lo"]  # a network namespace of its own
        info = json.loads(as_user("info", "--format", "json").stdout)
        assert info["store"]["graphRoot"] == os.path.join(base, ".local", "share", "capsa")
        assert info["host"]["security"]["rootless"] is True
        as_user("run", "-d", "--name", "bg", "busybox", "sleep", "1000")
        assert as_user("ps", "--format", "{{.Names}} {{.State}}").stdout == "bg running\n"
        as_user("stop", "-t", "0", "bg")
        assert json.loads(as_user("inspect", "bg").stdout)[0]["State"]["ExitCode"] == 137
        as_user("rm", "bg")
        assert as_user("run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/f").stdout == ""
        assert as_user("run", "--rm", "-v", "data:/data", "busybox", "cat", "/data/f").stdout == "kept\n"
        result = as_user("run", "--rm", "--memory", "16m", "busybox", "true", check=False)
        assert result.returncode == 125 and "need root" in result.stderr
        assert as_user("ps", "-a", "-q").stdout == ""
    finally:
        subprocess.run([*command, "rm", "-a", "-f", "-t", "0"], capture_output=True, cwd=base)
        shutil.rmtree(base, ignore_errors=True)


def test_foreground_output_comes_while_the_container_runs(ctl):
    proc = ctl.popen("run", "--name", "live", "busybox", "sh", "-c", "echo first; exec sleep 1000")
    assert proc.stdout.readline() == "first\n"  # before the container has exited
    assert ctl.inspect("live")["State"]["Status"] == "running"
    ctl("kill", "live")
    proc.wait(timeout=60)
    assert proc.returncode == 137
    # start -a of the exited container shows this run's output only
    ctl("rm", "live")
    ctl("create", "--name", "again", "busybox", "sh", "-c", "echo run; exit 1")
    assert ctl("start", "-a", "again", check=False).stdout == "run\n"
    assert ctl("start", "-a", "again", check=False).stdout == "run\n"


def test_run_interactive_tty_and_detach(ctl):
    result = ctl("run", "--rm", "-i", "busybox", "sh", "-c", "read line; echo got $line", input="hello\n")
    assert result.returncode == 0 and result.stdout == "got hello\n"
    out = ctl("run", "--rm", "-t", "busybox", "sh", "-c", "tty; echo $TERM").stdout
    assert out.replace("\r\n", "\n") == "/dev/pts/0\nxterm\n"
    # ctrl-p ctrl-q on stdin detaches: capsactl exits 0, the container goes on
    result = ctl("run", "-i", "--name", "stays", "busybox", "sh", "-c", "cat; sleep 1000", input="\x10\x11")
    assert result.returncode == 0
    assert ctl.inspect("stays")["State"]["Status"] == "running"
    ctl("rm", "-f", "-t", "0", "stays")


def test_hooks_dir_hooks_are_merged_at_create(ctl, tmp_path):
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    marker = tmp_path / "hook-ran"
    (hooks / "50-mark.json").write_text(json.dumps({
        "version": "1.0.0",
        "hook": {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {marker}"]},
        "when": {"commands": [".*/?true$"]},
        "stages": ["poststop"]}))
    (hooks / "bad.json").write_text("{not json")
    ctl.command[1:1] = ["--hooks-dir", str(hooks)]
    result = ctl("run", "--name", "hooked", "busybox", "true")
    assert "bad.json" in result.stderr  # reported, skipped
    wait_until(marker.exists, "the poststop hook to run")
    assert json.loads(marker.read_text())["id"] == ctl.inspect("hooked")["Id"]
    ctl("run", "--rm", "busybox", "echo", "no hook")  # args[0] echo: the condition does not match
