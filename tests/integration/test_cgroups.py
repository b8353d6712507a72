"""cgroup v1 (this host): resources reach the right files, freezer, kill --all, ps, cleanup."""

from __future__ import annotations

import os
import time

import pytest

from capsa import jsonfast
from capsa.cgroups import hierarchies

if set(hierarchies().values()) <= {""}:
    pytest.skip("these tests need a cgroup v1 host", allow_module_level=True)

ROOT = "/sys/fs/cgroup"


# Unique per test process, so that two test runs on one host do not share cgroups.
TEST_CGROUP = f"/capsa-test.{os.getpid()}"


def cgroup_file(controller: str, cid: str, name: str) -> str:
    with open(f"{ROOT}/{controller}{TEST_CGROUP}.{cid}/{name}") as f:
        return f.read().strip()


@pytest.fixture
def cgbundle(bundle):
    bundle.config["linux"]["cgroupsPath"] = f"{TEST_CGROUP}.c1"
    bundle.set_args("sleep", "30")
    return bundle


def test_resources_reach_cgroup_files(cgbundle):
    cgbundle.config["linux"]["resources"] = {
        "memory": {"limit": 64 * 1024 * 1024, "reservation": 32 * 1024 * 1024, "swappiness": 10},
        "cpu": {"shares": 512, "period": 100000, "quota": 50000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 42},
        "devices": [{"allow": False, "access": "rwm"}],
    }
    cgbundle.create("c1")
    pid = jsonfast.loads(cgbundle.capsa("state", "c1").stdout)["pid"]
    assert cgroup_file("memory", "c1", "memory.limit_in_bytes") == str(64 * 1024 * 1024)
    assert cgroup_file("memory", "c1", "memory.soft_limit_in_bytes") == str(32 * 1024 * 1024)
    assert cgroup_file("memory", "c1", "memory.swappiness") == "10"
    assert cgroup_file("cpu", "c1", "cpu.shares") == "512"
    assert cgroup_file("cpu", "c1", "cpu.cfs_quota_us") == "50000"
    assert cgroup_file("cpuset", "c1", "cpuset.cpus") == "0"
    assert cgroup_file("pids", "c1", "pids.max") == "42"
    devices = cgroup_file("devices", "c1", "devices.list").splitlines()
    assert "c 1:3 rwm" in devices and "a *:* rwm" not in devices
    # The init is in the cgroup before the user's program runs.
    for controller in ("memory", "cpu", "pids", "freezer"):
        assert str(pid) in cgroup_file(controller, "c1", "cgroup.procs").split()


def test_container_sees_its_own_cgroup(cgbundle):
    cgbundle.config["linux"]["resources"] = {"pids": {"limit": 77}}
    cgbundle.config["linux"]["namespaces"].append({"type": "cgroup"})  # runc's spec has one only on v2
    out = cgbundle.sh("cat /sys/fs/cgroup/pids/pids.max; cat /proc/self/cgroup | grep pids").stdout.split()
    assert out[0] == "77"
    assert out[1].endswith(":/")  # cgroup namespace: the container's cgroup is its root


def test_pids_limit_is_enforced(cgbundle):
    cgbundle.config["linux"]["resources"] = {"pids": {"limit": 5}}
    out = cgbundle.sh("for i in 1 2 3 4 5 6 7 8; do sleep 5 & done 2>/dev/null; echo started", check=False)
    assert "can't fork" in out.stderr or "Resource temporarily unavailable" in out.stderr or out.returncode != 0


def test_value_the_host_cannot_take_is_a_clear_error(cgbundle):
    cgbundle.config["linux"]["resources"] = {"memory": {"limit": -5}}
    result = cgbundle.create("c1", check=False)
    assert result.returncode == 1 and "linux.resources.memory.limit" in result.stderr
    assert not os.path.exists(f"{ROOT}/memory{TEST_CGROUP}.c1")
    assert os.listdir(cgbundle.root) == []


def test_unified_needs_v2_and_systemd_paths_need_the_driver(cgbundle):
    cgbundle.config["linux"]["resources"] = {"unified": {"memory.max": "1G"}}
    result = cgbundle.create("c1", check=False)
    assert result.returncode == 1 and "linux.resources.unified" in result.stderr
    cgbundle.config["linux"]["resources"] = {}
    cgbundle.config["linux"]["cgroupsPath"] = "system.slice:capsa:c1"
    result = cgbundle.create("c1", check=False)
    assert result.returncode == 1 and "--systemd-cgroup" in result.stderr


def test_pause_resume(cgbundle):
    cgbundle.set_args("sh", "-c", "while true; do sleep 0.05; done")
    cgbundle.create("c1")
    cgbundle.capsa("start", "c1")
    cgbundle.capsa("pause", "c1")
    assert jsonfast.loads(cgbundle.capsa("state", "c1").stdout)["status"] == "paused"
    assert cgroup_file("freezer", "c1", "freezer.state") == "FROZEN"
    listed = jsonfast.loads(cgbundle.capsa("list", "--format", "json").stdout)
    assert listed[0]["status"] == "paused"
    again = cgbundle.capsa("pause", "c1", check=False)
    assert again.returncode == 1
    cgbundle.capsa("resume", "c1")
    assert jsonfast.loads(cgbundle.capsa("state", "c1").stdout)["status"] == "running"
    assert cgroup_file("freezer", "c1", "freezer.state") == "THAWED"
    assert cgbundle.capsa("resume", "c1", check=False).returncode == 1


def test_delete_force_of_paused_container(cgbundle):
    cgbundle.create("c1")
    cgbundle.capsa("start", "c1")
    cgbundle.capsa("pause", "c1")
    cgbundle.capsa("delete", "--force", "c1")
    assert not os.path.exists(f"{ROOT}/freezer{TEST_CGROUP}.c1")


def test_ps_and_kill_all_with_host_pid_namespace(cgbundle):
    cgbundle.config["linux"]["namespaces"] = [ns for ns in cgbundle.config["linux"]["namespaces"] if ns["type"] != "pid"]
    cgbundle.set_args("sh", "-c", "sleep 30 & sleep 30 & wait")
    cgbundle.create("c1")
    cgbundle.capsa("start", "c1")
    deadline = time.monotonic() + 5
    while len(jsonfast.loads(cgbundle.capsa("ps", "--format", "json", "c1").stdout)) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pids = jsonfast.loads(cgbundle.capsa("ps", "--format", "json", "c1").stdout)
    table = cgbundle.capsa("ps", "c1").stdout.splitlines()
    assert table[0].split()[:2] == ["UID", "PID"] and len(table) == 4
    cgbundle.capsa("kill", "--all", "c1", "KILL")
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split(") ")[1][0] != "Z" for p in pids):
        assert time.monotonic() < deadline, "kill --all left processes"
        time.sleep(0.02)


def test_delete_removes_the_cgroup(cgbundle):
    cgbundle.create("c1")
    assert os.path.isdir(f"{ROOT}/memory{TEST_CGROUP}.c1")
    cgbundle.capsa("delete", "--force", "c1")
    for controller in ("memory", "cpu", "pids", "freezer", "devices", "systemd"):
        assert not os.path.exists(f"{ROOT}/{controller}{TEST_CGROUP}.c1")


def own_cgroup_dir(controller: str) -> str:
    """This process's cgroup directory in `controller`'s hierarchy."""
    with open("/proc/self/cgroup") as f:
        for line in f.read().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return f"{ROOT}/{controller}{path.rstrip('/')}"
    raise AssertionError(f"no {controller} hierarchy")


def test_delete_leaves_a_cgroup_it_joined(cgbundle):
    """A cgroup that was there before create (a Kubernetes pod's, a delegated one) is joined, not
    owned: delete --force kills what runs in it but leaves the directory. Ownership is per
    hierarchy: the directories capsa made itself go."""
    joined = [f"{ROOT}/{c}{TEST_CGROUP}.c1" for c in ("memory", "pids", "freezer")]
    for directory in joined:
        os.mkdir(directory)
    try:
        cgbundle.create("c1")
        pid = jsonfast.loads(cgbundle.capsa("state", "c1").stdout)["pid"]
        assert str(pid) in cgroup_file("memory", "c1", "cgroup.procs").split()
        cgbundle.capsa("delete", "--force", "c1")
        assert _gone(pid)
        for directory in joined:
            assert os.path.isdir(directory), f"delete removed {directory}, which it did not make"
            with open(f"{directory}/cgroup.procs") as f:
                assert f.read() == ""
        for controller in ("cpu", "devices", "blkio"):
            assert not os.path.exists(f"{ROOT}/{controller}{TEST_CGROUP}.c1")
    finally:
        for directory in joined:
            if os.path.isdir(directory):
                os.rmdir(directory)


def _gone(pid: int) -> bool:
    """Dead: no such process, or a zombie its parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(") ")[2][0] == "Z"
    except FileNotFoundError:
        return True


def test_default_cgroup_path(bundle):
    """As runc: without linux.cgroupsPath, the container's cgroup is its id, below the caller's
    own cgroup in each hierarchy."""
    del bundle.config["linux"]["cgroupsPath"]
    bundle.set_args("sleep", "30")
    cid = f"dflt{os.getpid()}"
    bundle.create(cid)
    for controller in ("memory", "cpu", "pids"):
        assert os.path.isdir(f"{own_cgroup_dir(controller)}/{cid}"), controller
    bundle.capsa("delete", "--force", cid)
    for controller in ("memory", "cpu", "pids"):
        assert not os.path.exists(f"{own_cgroup_dir(controller)}/{cid}"), controller


@pytest.mark.skipif(not os.path.exists(f"{ROOT}/cpu/cpu.rt_runtime_us"), reason="kernel without RT group scheduling")
def test_realtime_runtime_on_the_default_cgroup_path(bundle):
    """A realtime budget needs one in every cgroup above: capsa's old default, /capsa/<id>, put
    the container below a /capsa that has none (rt_runtime_us 0), so realtimeRuntime could never
    be set there. With runc's default (the id below the caller's cgroup) it works as in runc."""
    with open(f"{own_cgroup_dir('cpu')}/cpu.rt_runtime_us") as f:
        if int(f.read()) < 10000:
            pytest.skip("this test's own cpu cgroup has no realtime budget to give")
    del bundle.config["linux"]["cgroupsPath"]
    bundle.config["linux"]["resources"] = {"cpu": {"realtimePeriod": 1000000, "realtimeRuntime": 10000}}
    # Read from inside, through the container's cgroup mount (its own cgroup, as runc binds it).
    out = bundle.sh("cat /sys/fs/cgroup/cpu/cpu.rt_period_us /sys/fs/cgroup/cpu/cpu.rt_runtime_us", cid=f"rt{os.getpid()}").stdout
    assert out.split() == ["1000000", "10000"]


def test_kernel_memory_limit_is_not_pretended(cgbundle):
    # runtime-spec: memory.kernel is deprecated and "may be ignored by runtimes"; runc 1.1 ignores
    # it and the runtime-tools suite sets it with every memory limit. So: the container is
    # created with the other limits, and a kernel that does not enforce it is said in a warning.
    limit = 64 * 1024 * 1024
    cgbundle.config["linux"]["resources"] = {"memory": {"kernel": limit, "limit": limit}}
    result = cgbundle.create("c1")
    assert cgroup_file("memory", "c1", "memory.limit_in_bytes") == str(limit)
    if not os.path.exists(f"{ROOT}/memory{TEST_CGROUP}.c1/memory.kmem.limit_in_bytes"):
        assert "linux.resources.memory.kernel: ignored" in result.stderr
    elif cgroup_file("memory", "c1", "memory.kmem.limit_in_bytes") != str(limit):
        assert "linux.resources.memory.kernel: ignored" in result.stderr and "does not enforce" in result.stderr
        # `update` takes it the same way, and still applies what comes with it.
        updated = cgbundle.capsa("update", "--kernel-memory", "32m", "--memory", "100m", "c1")
        assert "linux.resources.memory.kernel: ignored" in updated.stderr
        assert cgroup_file("memory", "c1", "memory.limit_in_bytes") == str(100 * 1024 * 1024)


def test_fifo_device_with_device_rules(cgbundle):
    cgbundle.config["linux"]["devices"] = [{"path": "/dev/myfifo", "type": "p", "fileMode": 0o600}]
    assert cgbundle.run("stat", "-c", "%F", "/dev/myfifo").stdout.strip() == "fifo"


def test_no_device_rules_means_deny_all_not_the_parents_allow_all(cgbundle):
    """As runc: a config without device rules (or whose rules do not begin with a deny-all) does
    not inherit its parent's allow-all. Before, such a container could open any device node it
    made (mknod itself stays allowed, as runc's `c *:* m` and `b *:* m`): the host's disks."""
    # /dev/kmsg (c 1:11) can be opened for writing by anyone the device controller lets through.
    script = "mknod /dev/x-kmsg c 1 11 && (: > /dev/x-kmsg) 2>&1 && echo opened; head -c0 /dev/null && echo null-ok"
    kmsg = {"allow": True, "type": "c", "major": 1, "minor": 11}
    for kind in ("bounding", "effective", "permitted"):
        cgbundle.process["capabilities"][kind].append("CAP_MKNOD")  # docker's default set has it
    for resources, opens in (({}, False), ({"devices": [dict(kmsg, access="r")]}, False),
                             ({"devices": [dict(kmsg, access="rw")]}, True)):
        cgbundle.config["linux"]["resources"] = resources
        result = cgbundle.sh(script)
        out = result.stdout + result.stderr
        assert "null-ok" in out  # the default devices stay allowed
        assert ("opened" in out) == opens, (resources, out)
        if not opens:
            assert "can't create /dev/x-kmsg: Operation not permitted" in out  # mknod worked, open did not
    cgbundle.config["linux"]["resources"] = {}
    cgbundle.create("c1")
    rules = cgroup_file("devices", "c1", "devices.list").split("\n")
    assert "a *:* rwm" not in rules and "c 1:3 rwm" in rules
    cgbundle.capsa("update", "--pids-limit", "20", "c1")  # update leaves the device rules alone
    assert cgroup_file("devices", "c1", "devices.list").split("\n") == rules


def test_update_flags_and_resources_file(cgbundle, tmp_path):
    cgbundle.create("c1")
    cgbundle.capsa("update", "--memory", "100m", "--pids-limit", "50", "--cpu-share", "256", "--cpuset-cpus", "0", "c1")
    assert cgroup_file("memory", "c1", "memory.limit_in_bytes") == str(100 * 1024 * 1024)
    assert cgroup_file("pids", "c1", "pids.max") == "50"
    assert cgroup_file("cpu", "c1", "cpu.shares") == "256"
    assert cgroup_file("cpuset", "c1", "cpuset.cpus") == "0"
    resources = tmp_path / "resources.json"
    resources.write_text('{"pids": {"limit": 9}, "cpu": {"period": 100000, "quota": 20000}}')
    cgbundle.capsa("update", "--resources", str(resources), "c1")
    assert cgroup_file("pids", "c1", "pids.max") == "9"
    assert cgroup_file("cpu", "c1", "cpu.cfs_quota_us") == "20000"
    bad = cgbundle.capsa("update", "--memory", "lots", "c1", check=False)
    assert bad.returncode == 1 and "--memory" in bad.stderr
    refused = cgbundle.capsa("update", "--pids-limit", "-5x", "c1", check=False)
    assert refused.returncode == 1


def test_events_stats(cgbundle):
    cgbundle.config["linux"]["resources"] = {"pids": {"limit": 33}}
    cgbundle.create("c1")
    cgbundle.capsa("start", "c1")
    event = jsonfast.loads(cgbundle.capsa("events", "--stats", "c1").stdout)
    assert event["type"] == "stats" and event["id"] == "c1"
    assert event["data"]["pids"] == {"current": 1, "limit": 33}
    assert event["data"]["memory"]["usage"]["usage"] > 0
    assert event["data"]["cpu"]["usage"]["total"] > 0


def test_events_interval_stream_ends_with_container(cgbundle):
    cgbundle.set_args("sleep", "0.5")
    cgbundle.create("c1")
    cgbundle.capsa("start", "c1")
    out = cgbundle.capsa("events", "--interval", "100ms", "c1", timeout=10).stdout.splitlines()
    assert len(out) >= 2 and all(jsonfast.loads(line)["type"] == "stats" for line in out)


def test_events_reports_oom(cgbundle):
    cgbundle.config["linux"]["resources"] = {"memory": {"limit": 16 * 1024 * 1024}}
    # dd's 32 MiB buffer does not fit under the 16 MiB limit: the kernel kills it.
    cgbundle.set_args("sh", "-c", "sleep 0.5; dd if=/dev/zero bs=32M count=1 2>/dev/null | cat >/dev/null; sleep 0.5")
    cgbundle.create("c1")
    cgbundle.capsa("start", "c1")
    out = cgbundle.capsa("events", "--interval", "200ms", "c1", timeout=20).stdout.splitlines()
    events = [jsonfast.loads(line) for line in out]
    assert {"type": "oom", "id": "c1"} in events


def test_events_stats_network_interfaces(cgbundle):
    # The host's network namespace: its interfaces (loopback left out, as runc does).
    cgbundle.config["linux"]["namespaces"] = [ns for ns in cgbundle.config["linux"]["namespaces"] if ns["type"] != "network"]
    cgbundle.create("c1")
    data = jsonfast.loads(cgbundle.capsa("events", "--stats", "c1").stdout)["data"]
    with open("/proc/self/net/dev") as f:
        names = {line.split(":")[0].strip() for line in f.read().splitlines()[2:]} - {"lo"}
    assert {i["name"] for i in data.get("network_interfaces", [])} == names
    assert all({"rx_bytes", "tx_packets"} <= set(i) for i in data.get("network_interfaces", []))
