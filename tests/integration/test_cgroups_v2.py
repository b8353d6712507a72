"""cgroup v2 (unified hierarchy): resources reach the v2 files, freezer, kill --all, ps, events,
update and the eBPF device filter, against real containers.

This host has v1 controllers only: these tests run inside the guest tier (test_guest.py boots a
QEMU guest whose only cgroup hierarchy is cgroup2) and skip anywhere else.
"""

from __future__ import annotations

import os
import stat
import time

import pytest

from capsa import jsonfast
from capsa.cgroups import UNIFIED, layout

if layout() != UNIFIED:
    pytest.skip("these tests need a host with cgroup2 only (the guest tier runs them)", allow_module_level=True)

ROOT = "/sys/fs/cgroup"
MiB = 1024 * 1024
RAM_DISK = "/dev/ram0"  # brd, loaded by the guest's initramfs


def cgroup_file(bundle, name: str) -> str:
    with open(f"{ROOT}{bundle.cgroup}/{name}") as f:
        return f.read().strip()


def state(bundle, cid: str = "c1") -> dict:
    return jsonfast.loads(bundle.capsa("state", cid).stdout)


@pytest.fixture
def cgbundle(bundle):
    bundle.set_args("sleep", "30")
    return bundle


def test_host_is_unified():
    with open(f"{ROOT}/cgroup.controllers") as f:
        assert {"cpu", "memory", "pids", "io", "cpuset", "hugetlb"} <= set(f.read().split())


def test_resources_reach_v2_files(cgbundle):
    ram = os.stat(RAM_DISK).st_rdev
    device = {"major": os.major(ram), "minor": os.minor(ram)}
    cgbundle.config["linux"]["resources"] = {
        "memory": {"limit": 64 * MiB, "reservation": 32 * MiB, "swap": 96 * MiB},
        "cpu": {"shares": 2048, "quota": 50000, "period": 100000, "burst": 10000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 42},
        "blockIO": {"weight": 500, "throttleReadBpsDevice": [dict(device, rate=1048576)],
                    "throttleWriteIOPSDevice": [dict(device, rate=100)]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MiB}],
        "unified": {"memory.high": str(60 * MiB)},
    }
    cgbundle.create("c1")
    assert cgroup_file(cgbundle, "memory.max") == str(64 * MiB)
    assert cgroup_file(cgbundle, "memory.low") == str(32 * MiB)
    if os.path.exists(f"{ROOT}{cgbundle.cgroup}/memory.swap.max"):
        assert cgroup_file(cgbundle, "memory.swap.max") == str(32 * MiB)  # memory+swap minus memory
    assert cgroup_file(cgbundle, "memory.high") == str(60 * MiB)  # unified: raw files
    assert cgroup_file(cgbundle, "cpu.weight") == "174"  # runc's conversion of 2048 shares
    assert cgroup_file(cgbundle, "cpu.max") == "50000 100000"
    assert cgroup_file(cgbundle, "cpu.max.burst") == "10000"
    assert cgroup_file(cgbundle, "cpuset.cpus") == "0"
    assert cgroup_file(cgbundle, "cpuset.mems") == "0"
    assert cgroup_file(cgbundle, "pids.max") == "42"
    weight = cgroup_file(cgbundle, "io.bfq.weight" if os.path.exists(f"{ROOT}{cgbundle.cgroup}/io.bfq.weight") else "io.weight")
    assert weight.split()[-1] in ("500", "4950")  # bfq takes blkio's scale; io.weight: 1 + 490 * 9999 // 990
    io_max = cgroup_file(cgbundle, "io.max")
    assert f"{device['major']}:{device['minor']} rbps=1048576 wbps=max riops=max wiops=100" in io_max
    assert cgroup_file(cgbundle, "hugetlb.2MB.max") == str(4 * MiB)
    assert cgroup_file(cgbundle, "hugetlb.2MB.rsvd.max") == str(4 * MiB)
    # The init is in the cgroup before the user's program runs (born there: clone3 CLONE_INTO_CGROUP).
    pid = state(cgbundle)["pid"]
    assert str(pid) in cgroup_file(cgbundle, "cgroup.procs").split()
    with open(f"/proc/{pid}/cgroup") as f:
        assert f.read().strip() == f"0::{cgbundle.cgroup}"


def test_child_is_born_in_its_cgroup():
    """clone3(CLONE_INTO_CGROUP), which create and exec use, works on this kernel: no fallback."""
    from capsa import linux

    name = f"capsa-test-clone3.{os.getpid()}"
    path = f"{ROOT}/{name}"
    os.mkdir(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            pid = linux.clone_child(fd)
        finally:
            os.close(fd)
        if pid == 0:
            with open("/proc/self/cgroup") as f:
                os._exit(0 if f.read().strip() == f"0::/{name}" else 1)
        assert pid is not None, "clone3 with CLONE_INTO_CGROUP is not available"
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.rmdir(path)


def test_cpu_idle(cgbundle):
    cgbundle.config["linux"]["resources"] = {"cpu": {"idle": 1}}
    cgbundle.create("c1")
    assert cgroup_file(cgbundle, "cpu.idle") == "1"


def test_container_sees_its_own_cgroup(cgbundle):
    cgbundle.config["linux"]["resources"] = {"pids": {"limit": 77}}
    out = cgbundle.sh("cat /sys/fs/cgroup/pids.max /proc/self/cgroup; cat /sys/fs/cgroup/cgroup.controllers").stdout.split("\n")
    assert out[0] == "77"
    assert out[1] == "0::/"  # a cgroup namespace rooted at the container's cgroup
    assert "pids" in out[2].split()


def test_pids_limit_is_enforced(cgbundle):
    cgbundle.config["linux"]["resources"] = {"pids": {"limit": 5}}
    out = cgbundle.sh("for i in 1 2 3 4 5 6 7 8; do sleep 5 & done 2>/dev/null; echo started", check=False)
    assert "can't fork" in out.stderr or "Resource temporarily unavailable" in out.stderr or out.returncode != 0


def test_kernel_memory_is_ignored_with_a_warning(cgbundle):
    cgbundle.config["linux"]["resources"] = {"memory": {"kernel": 64 * MiB, "kernelTCP": MiB, "limit": 64 * MiB}}
    result = cgbundle.create("c1")
    assert "linux.resources.memory.kernel: ignored" in result.stderr
    assert "linux.resources.memory.kernelTCP: ignored" in result.stderr
    assert cgroup_file(cgbundle, "memory.max") == str(64 * MiB)


def test_values_v2_cannot_take_are_clear_errors(cgbundle):
    for resources, field in (({"memory": {"limit": -5}}, "linux.resources.memory.limit"),
                             ({"memory": {"swappiness": 10}}, "linux.resources.memory.swappiness"),
                             ({"memory": {"swap": 64 * MiB}}, "linux.resources.memory.swap"),
                             ({"cpu": {"realtimeRuntime": 1000}}, "linux.resources.cpu.realtimeRuntime"),
                             ({"network": {"classID": 7}}, "linux.resources.network"),
                             ({"rdma": {"mlx5_0": {"hcaHandles": 3}}}, "linux.resources.rdma.mlx5_0"),
                             ({"unified": {"nosuch.file": "1"}}, "linux.resources.unified.nosuch.file"),
                             ({"unified": {"../x": "1"}}, "linux.resources.unified.../x")):
        cgbundle.config["linux"]["resources"] = resources
        result = cgbundle.create("c1", check=False)
        assert result.returncode == 1 and field in result.stderr, (resources, result.stderr)
        assert not os.path.exists(f"{ROOT}{cgbundle.cgroup}")
        assert os.listdir(cgbundle.root) == []


def test_pause_resume(cgbundle):
    cgbundle.set_args("sh", "-c", "while true; do sleep 0.05; done")
    cgbundle.create("c1")
    cgbundle.capsa("start", "c1")
    cgbundle.capsa("pause", "c1")
    assert state(cgbundle)["status"] == "paused"
    assert cgroup_file(cgbundle, "cgroup.freeze") == "1"
    assert "frozen 1" in cgroup_file(cgbundle, "cgroup.events").splitlines()
    listed = jsonfast.loads(cgbundle.capsa("list", "--format", "json").stdout)
    assert listed[0]["status"] == "paused"
    assert cgbundle.capsa("pause", "c1", check=False).returncode == 1
    cgbundle.capsa("resume", "c1")
    assert state(cgbundle)["status"] == "running"
    assert "frozen 0" in cgroup_file(cgbundle, "cgroup.events").splitlines()
    assert cgbundle.capsa("resume", "c1", check=False).returncode == 1


def test_delete_force_of_paused_container(cgbundle):
    cgbundle.create("c1")
    cgbundle.capsa("start", "c1")
    cgbundle.capsa("pause", "c1")
    cgbundle.capsa("delete", "--force", "c1")
    assert not os.path.exists(f"{ROOT}{cgbundle.cgroup}")


def _wait_for_pids(bundle, count: int) -> list[int]:
    deadline = time.monotonic() + 10
    while len(pids := jsonfast.loads(bundle.capsa("ps", "--format", "json", "c1").stdout)) < count:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return pids


def _all_gone(pids: list[int]) -> bool:
    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ")[1][0] != "Z"
        except FileNotFoundError:
            return False

    return not any(alive(p) for p in pids)


@pytest.mark.parametrize("signal", ["KILL", "TERM"])  # KILL: cgroup.kill; others: freeze, signal, thaw
def test_ps_and_kill_all_with_host_pid_namespace(cgbundle, signal):
    cgbundle.config["linux"]["namespaces"] = [ns for ns in cgbundle.config["linux"]["namespaces"] if ns["type"] != "pid"]
    cgbundle.set_args("sh", "-c", "sleep 30 & sleep 30 & wait")
    cgbundle.create("c1")
    cgbundle.capsa("start", "c1")
    pids = _wait_for_pids(cgbundle, 3)
    table = cgbundle.capsa("ps", "c1").stdout.splitlines()
    assert table[0].split()[:2] == ["UID", "PID"] and len(table) == 4
    cgbundle.capsa("kill", "--all", "c1", signal)
    deadline = time.monotonic() + 10
    while not _all_gone(pids):
        assert time.monotonic() < deadline, "kill --all left processes"
        time.sleep(0.05)


def test_exec_joins_the_cgroup(cgbundle):
    cgbundle.create("c1")
    cgbundle.capsa("start", "c1")
    out = cgbundle.capsa("exec", "c1", "sh", "-c", "cat /proc/self/cgroup; sleep 1").stdout
    assert out.strip() == "0::/"


def test_delete_removes_the_cgroup(cgbundle):
    cgbundle.create("c1")
    assert os.path.isdir(f"{ROOT}{cgbundle.cgroup}")
    cgbundle.capsa("delete", "--force", "c1")
    assert not os.path.exists(f"{ROOT}{cgbundle.cgroup}")


def test_delete_leaves_a_cgroup_it_joined(cgbundle):
    """A cgroup that was there before create (a Kubernetes pod's, a delegated one) is joined, not
    owned: delete --force kills what runs in it (cgroup.kill) but leaves the directory."""
    directory = f"{ROOT}{cgbundle.cgroup}"
    os.mkdir(directory)
    try:
        cgbundle.create("c1")
        pid = state(cgbundle)["pid"]
        assert str(pid) in cgroup_file(cgbundle, "cgroup.procs").split()
        cgbundle.capsa("delete", "--force", "c1")
        assert _all_gone([pid])
        assert os.path.isdir(directory), "delete removed a cgroup it did not make"
        assert cgroup_file(cgbundle, "cgroup.procs") == ""
    finally:
        if os.path.isdir(directory):
            os.rmdir(directory)


def test_default_cgroup_path(bundle):
    del bundle.config["linux"]["cgroupsPath"]
    bundle.set_args("sleep", "30")
    cid = f"dflt{os.getpid()}"
    bundle.create(cid)
    # As runc: the id, below the caller's own cgroup.
    with open("/proc/self/cgroup") as f:
        own = next(line.split(":", 2)[2] for line in f.read().splitlines() if line.startswith("0::"))
    expected = f"{ROOT}{own.rstrip('/')}/{cid}"
    assert os.path.isdir(expected)
    bundle.capsa("delete", "--force", cid)
    assert not os.path.exists(expected)


def test_update_flags_and_resources_file(cgbundle, tmp_path):
    cgbundle.create("c1")
    cgbundle.capsa("update", "--memory", "100m", "--pids-limit", "50", "--cpu-share", "1024", "--cpuset-cpus", "0",
                   "--cpu-quota", "20000", "--cpu-period", "50000", "c1")
    assert cgroup_file(cgbundle, "memory.max") == str(100 * MiB)
    assert cgroup_file(cgbundle, "pids.max") == "50"
    assert cgroup_file(cgbundle, "cpu.weight") == "100"
    assert cgroup_file(cgbundle, "cpu.max") == "20000 50000"
    assert cgroup_file(cgbundle, "cpuset.cpus") == "0"
    resources = tmp_path / "resources.json"
    resources.write_text('{"pids": {"limit": 9}, "unified": {"memory.high": "83886080"}}')
    cgbundle.capsa("update", "--resources", str(resources), "c1")
    assert cgroup_file(cgbundle, "pids.max") == "9"
    assert cgroup_file(cgbundle, "memory.high") == "83886080"
    bad = cgbundle.capsa("update", "--memory", "lots", "c1", check=False)
    assert bad.returncode == 1 and "--memory" in bad.stderr


def test_events_stats(cgbundle):
    cgbundle.config["linux"]["resources"] = {"pids": {"limit": 33}, "memory": {"limit": 64 * MiB}}
    cgbundle.create("c1")
    cgbundle.capsa("start", "c1")
    event = jsonfast.loads(cgbundle.capsa("events", "--stats", "c1").stdout)
    assert event["type"] == "stats" and event["id"] == "c1"
    data = event["data"]
    assert data["pids"] == {"current": 1, "limit": 33}
    assert data["memory"]["usage"]["usage"] > 0 and data["memory"]["usage"]["limit"] == 64 * MiB
    assert data["memory"]["raw"]["anon"] >= 0
    assert data["cpu"]["usage"]["total"] > 0


def test_events_reports_oom(cgbundle):
    import subprocess

    from conftest import capsa_command

    cgbundle.config["linux"]["resources"] = {"memory": {"limit": 16 * MiB, "swap": 16 * MiB}}
    # dd's 32 MiB buffer does not fit under the 16 MiB limit (and no swap): the kernel kills it.
    # It waits for /go, made once `events` watches (under TCG a start-up can take seconds: an OOM
    # before the watch exists is part of its baseline, not an event).
    cgbundle.set_args("sh", "-c", "while [ ! -e /go ]; do sleep 0.1; done; "
                      "dd if=/dev/zero bs=32M count=1 2>/dev/null | cat >/dev/null; sleep 1")
    cgbundle.create("c1")
    cgbundle.capsa("start", "c1")
    events = subprocess.Popen(capsa_command() + ["--root", cgbundle.root, "events", "--interval", "500ms", "c1"],
                              stdout=subprocess.PIPE, text=True)
    try:
        first = events.stdout.readline()  # the watch is set up before the first stats event
        assert jsonfast.loads(first)["type"] == "stats"
        open(os.path.join(cgbundle.rootfs, "go"), "w").close()
        rest, _ = events.communicate(timeout=60)
    finally:
        events.kill()
    assert {"type": "oom", "id": "c1"} in [jsonfast.loads(line) for line in rest.splitlines()]
    assert int(dict(line.split() for line in cgroup_file(cgbundle, "memory.events").splitlines())["oom_kill"]) >= 1


# -- devices: the eBPF filter ---------------------------------------------------------------------
@pytest.fixture
def ram_disk_node(cgbundle):
    """A node for the guest's RAM disk inside the rootfs, made on the host side (the container has
    no CAP_MKNOD), outside /dev so that only the device rules decide."""
    ram = os.stat(RAM_DISK).st_rdev
    path = os.path.join(cgbundle.rootfs, "ram0")
    os.mknod(path, 0o666 | stat.S_IFBLK, ram)
    return os.major(ram), os.minor(ram)


def test_device_rules_deny_all_keeps_default_devices(cgbundle, ram_disk_node):
    cgbundle.config["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    out = cgbundle.sh("echo x > /dev/null && echo null-ok; head -c 1 /dev/zero | wc -c; "
                      "head -c 1 /ram0 >/dev/null 2>&1 && echo ram-read || echo ram-denied").stdout.split()
    assert out == ["null-ok", "1", "ram-denied"]


def test_device_rules_allow_read_only(cgbundle, ram_disk_node):
    major, minor = ram_disk_node
    cgbundle.config["linux"]["resources"] = {"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "b", "major": major, "minor": minor, "access": "r"},
    ]}
    out = cgbundle.sh("head -c 1 /ram0 | wc -c; (echo x > /ram0) 2>/dev/null && echo write-ok || echo write-denied").stdout.split()
    assert out == ["1", "write-denied"]


def test_device_rules_blacklist(cgbundle, ram_disk_node):
    major, minor = ram_disk_node
    cgbundle.config["linux"]["resources"] = {"devices": [
        {"allow": True, "access": "rwm"},
        {"allow": False, "type": "b", "major": major, "minor": minor, "access": "w"},
    ]}
    out = cgbundle.sh("head -c 1 /ram0 | wc -c; (echo x > /ram0) 2>/dev/null && echo write-ok || echo write-denied").stdout.split()
    assert out == ["1", "write-denied"]
