"""runtime-spec 1.3's process.scheduler, process.ioPriority and linux.memoryPolicy, checked in the
container's own process (its /proc/PID/stat, numa_maps, busybox ionice) and, for exec'd
processes, from the host; where the host or the container cannot honour one, the error names the
field and the reason."""

from __future__ import annotations

import os

import pytest

from capsa import jsonfast

# Real-time group scheduling (cgroup v1, CONFIG_RT_GROUP_SCHED): a real-time task needs a budget
# in its cpu cgroup, linux.resources.cpu.realtimeRuntime.
RT_GROUP_SCHED = os.path.exists("/sys/fs/cgroup/cpu/cpu.rt_runtime_us")
NUMA = os.path.exists("/proc/self/numa_maps")


def _stat_of_shell(bundle) -> list[str]:
    """Fields 3.. of /proc/PID/stat of the container's process itself (busybox sh, no fork)."""
    out = bundle.sh("read line < /proc/$$/stat; echo $line").stdout
    return out[out.rindex(")") + 2:].split()


def _policy_priority_nice(fields: list[str]) -> tuple[int, int, int]:
    """(policy (field 41), rt_priority (40), nice (19))"""
    return int(fields[38]), int(fields[37]), int(fields[16])


def _refused(bundle, *needles: str) -> str:
    result = bundle.run("true", check=False)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert bundle.capsa("list", "-q").stdout == ""
    return result.stderr


@pytest.mark.parametrize("scheduler,expected", [
    ({"policy": "SCHED_BATCH", "nice": 7}, (3, 0, 7)),
    ({"policy": "SCHED_IDLE"}, (5, 0, 0)),
    ({"policy": "SCHED_OTHER", "nice": -5}, (0, 0, -5)),
])
def test_scheduler_policy_and_nice(bundle, scheduler, expected):
    bundle.process["scheduler"] = scheduler
    assert _policy_priority_nice(_stat_of_shell(bundle)) == expected


def _rt_budget(bundle) -> None:
    if RT_GROUP_SCHED:
        bundle.config["linux"].setdefault("resources", {})["cpu"] = {"realtimeRuntime": 10000, "realtimePeriod": 1000000}


def test_scheduler_fifo_with_priority(bundle):
    _rt_budget(bundle)
    bundle.process["scheduler"] = {"policy": "SCHED_FIFO", "priority": 10, "flags": ["SCHED_FLAG_RESET_ON_FORK"]}
    fields = _stat_of_shell(bundle)
    assert _policy_priority_nice(fields)[:2] == (1, 10)
    assert int(fields[15]) == -11  # the kernel's priority field: -1 - rt_priority
    # Reset on fork: a child of the process (a subshell) is back to SCHED_OTHER.
    out = bundle.sh("(read line < /proc/self/stat; echo $line); exit 0").stdout
    assert int(out[out.rindex(")") + 2:].split()[38]) == 0


def test_scheduler_deadline(bundle):
    bundle.process["scheduler"] = {"policy": "SCHED_DEADLINE", "runtime": 10_000_000, "deadline": 30_000_000,
                                   "period": 100_000_000, "flags": ["SCHED_FLAG_RESET_ON_FORK"]}
    assert _policy_priority_nice(_stat_of_shell(bundle))[0] == 6


@pytest.mark.skipif(not RT_GROUP_SCHED, reason="needs real-time group scheduling (cgroup v1 cpu.rt_runtime_us)")
def test_fifo_without_a_realtime_budget_names_the_field_and_the_reason(bundle):
    bundle.process["scheduler"] = {"policy": "SCHED_FIFO", "priority": 10}
    _refused(bundle, "process.scheduler", "SCHED_FIFO", "linux.resources.cpu.realtimeRuntime")


def test_realtime_scheduler_in_a_user_namespace_is_refused_with_the_reason(bundle):
    bundle.use_user_namespace()
    _rt_budget(bundle)
    bundle.process["scheduler"] = {"policy": "SCHED_RR", "priority": 5}
    _refused(bundle, "process.scheduler", "user namespace", "CAP_SYS_NICE")


def test_scheduler_the_kernel_does_not_implement(bundle):
    bundle.process["scheduler"] = {"policy": "SCHED_ISO"}
    _refused(bundle, "process.scheduler", "Linux does not implement SCHED_ISO")


def test_invalid_scheduler_is_a_config_error(bundle):
    bundle.process["scheduler"] = {"policy": "SCHED_FIFO", "priority": 0}
    _refused(bundle, "process.scheduler.priority", "between 1 and 99")


@pytest.mark.parametrize("io_priority,shown", [
    ({"class": "IOPRIO_CLASS_BE", "priority": 6}, "best-effort: prio 6"),
    ({"class": "IOPRIO_CLASS_RT", "priority": 2}, "realtime: prio 2"),
    ({"class": "IOPRIO_CLASS_IDLE", "priority": 0}, "idle"),
])
def test_io_priority(bundle, io_priority, shown):
    bundle.process["ioPriority"] = io_priority
    assert bundle.sh("ionice -p $$").stdout.strip() == shown


def test_realtime_io_priority_in_a_user_namespace_is_refused_with_the_reason(bundle):
    bundle.use_user_namespace()
    bundle.process["ioPriority"] = {"class": "IOPRIO_CLASS_RT", "priority": 0}
    _refused(bundle, "process.ioPriority", "IOPRIO_CLASS_RT", "user namespace")


def test_exec_honours_scheduler_and_io_priority(bundle, tmp_path):
    bundle.set_args("sleep", "60")
    bundle.create("c1")
    bundle.capsa("start", "c1")
    process = {"args": ["sh", "-c", "read line < /proc/$$/stat; echo $line; ionice -p $$"], "cwd": "/",
               "env": ["PATH=/bin:/usr/bin"], "user": {"uid": 0, "gid": 0},
               "scheduler": {"policy": "SCHED_BATCH", "nice": 4}, "ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 0}}
    (tmp_path / "process.json").write_text(jsonfast.dumps(process))
    out = bundle.capsa("exec", "--process", str(tmp_path / "process.json"), "c1").stdout
    stat_line, ionice = out.strip().splitlines()
    fields = stat_line[stat_line.rindex(")") + 2:].split()
    assert _policy_priority_nice(fields) == (3, 0, 4) and ionice == "idle"
    # Refused in exec as in create: the field and the reason, and no process left behind.
    process["scheduler"] = {"policy": "SCHED_ISO"}
    (tmp_path / "process.json").write_text(jsonfast.dumps(process))
    failed = bundle.capsa("exec", "--process", str(tmp_path / "process.json"), "c1", check=False)
    assert failed.returncode != 0 and "process.scheduler" in failed.stderr and "SCHED_ISO" in failed.stderr
    assert len(jsonfast.loads(bundle.capsa("ps", "--format", "json", "c1").stdout)) == 1


def _first_policy(numa_maps: str) -> str:
    """The policy numa_maps shows for the first mapping (the process's own, as no mapping has one)."""
    return numa_maps.splitlines()[0].split()[1]


@pytest.mark.skipif(not NUMA, reason="needs a NUMA kernel (/proc/self/numa_maps)")
@pytest.mark.parametrize("policy,shown", [
    ({"mode": "MPOL_BIND", "nodes": "0"}, "bind:0"),
    ({"mode": "MPOL_INTERLEAVE", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]}, "interleave=static:0"),
    ({"mode": "MPOL_PREFERRED", "nodes": "0"}, "prefer:0"),
    ({"mode": "MPOL_LOCAL"}, "local"),
])
def test_memory_policy(bundle, policy, shown):
    bundle.config["linux"]["memoryPolicy"] = policy
    assert _first_policy(bundle.sh("cat /proc/$$/numa_maps").stdout) == shown


@pytest.mark.skipif(not NUMA, reason="needs a NUMA kernel (/proc/self/numa_maps)")
def test_exec_gets_the_containers_memory_policy(bundle):
    bundle.config["linux"]["memoryPolicy"] = {"mode": "MPOL_BIND", "nodes": "0"}
    bundle.set_args("sleep", "60")
    bundle.create("c1")
    bundle.capsa("start", "c1")
    out = bundle.capsa("exec", "c1", "sh", "-c", "cat /proc/$$/numa_maps").stdout
    assert _first_policy(out) == "bind:0"


@pytest.mark.skipif(not NUMA, reason="needs a NUMA kernel (/proc/self/numa_maps)")
def test_memory_policy_on_a_node_the_host_lacks_names_the_field_and_the_reason(bundle):
    with open("/sys/devices/system/node/possible") as f:
        if f.read().strip() != "0":
            pytest.skip("this host has more than one NUMA node")
    bundle.config["linux"]["memoryPolicy"] = {"mode": "MPOL_BIND", "nodes": "3"}
    _refused(bundle, "linux.memoryPolicy", "MPOL_BIND", "'3'", "allowed here: 0")


@pytest.mark.skipif(NUMA, reason="a kernel without NUMA refuses every memory policy")
def test_memory_policy_without_numa_names_the_reason(bundle):
    bundle.config["linux"]["memoryPolicy"] = {"mode": "MPOL_LOCAL"}
    _refused(bundle, "linux.memoryPolicy", "no NUMA support")


def test_features_list_memory_policies_and_idmapped_mounts(bundle):
    features = jsonfast.loads(bundle.capsa("features").stdout)
    assert features["linux"]["memoryPolicy"] == {
        "modes": ["MPOL_BIND", "MPOL_DEFAULT", "MPOL_INTERLEAVE", "MPOL_LOCAL", "MPOL_PREFERRED", "MPOL_PREFERRED_MANY",
                  "MPOL_WEIGHTED_INTERLEAVE"],
        "flags": ["MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES"],
    }
    assert features["linux"]["mountExtensions"] == {"idmap": {"enabled": True}}
    assert {"idmap", "ridmap"} <= set(features["mountOptions"]) and "tmpcopyup" not in features["mountOptions"]


@pytest.mark.parametrize("where,key,value", [
    ("process", "ioPriority", {"class": "IOPRIO_CLASS_BE", "priority": 1}),
    ("linux", "memoryPolicy", {"mode": "MPOL_LOCAL"}),
    ("process", "scheduler", {"policy": "SCHED_DEADLINE", "runtime": 10**6, "deadline": 10**7}),
])
def test_restore_refuses_what_criu_does_not_bring_back(bundle, tmp_path, where, key, value):
    (bundle.process if where == "process" else bundle.config["linux"])[key] = value
    bundle.write()
    result = bundle.capsa("restore", "--image-path", str(tmp_path), "--bundle", bundle.path, "r1", check=False)
    assert result.returncode == 1 and f"{where}.{key}" in result.stderr and "CRIU does not restore" in result.stderr
