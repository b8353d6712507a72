"""capsactl's pods through the CLI, as root (issue 18, pods part): a pod's infra container holds
a capsa sandbox, its members join its namespaces (checked from inside and by /proc/PID/ns), pod-wide
pause and kill go through capsa.sandbox, rm of a pod with members is refused without --force."""

from __future__ import annotations

import json
import os

import pytest
from test_capsactl_containers import busybox_rootfs, ctl, wait_until  # noqa: F401 - fixtures
from test_capsactl_network import host, host_netns  # noqa: F401 - fixtures

# a client that retries until the listener is up (a detached run returns once nc is exec'd, not
# once it listens)
SEND_HELLO = "for i in $(seq 200); do echo hello | nc 127.0.0.1 8080 && exit 0; sleep 0.05; done; exit 1"


@pytest.fixture
def pods(ctl):  # noqa: F811
    """The containers fixture (which checks that no mount, monitor or cgroup is left), pods removed
    first: rm --all leaves infra containers to pod rm."""
    yield ctl
    ctl("pod", "rm", "-a", "-f", "-t", "0", check=False)
    assert not os.listdir(os.path.join(ctl.runroot, "runtime", "@sandbox")) \
        if os.path.isdir(os.path.join(ctl.runroot, "runtime", "@sandbox")) else True


def pid_of(manager, name: str) -> int:
    return manager.inspect(name)["State"]["Pid"]


def ns(pid: int, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def sandbox_record(manager, infra_id: str) -> dict | None:
    path = os.path.join(manager.runroot, "runtime", "@sandbox", infra_id, "sandbox.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def frozen(pid: int) -> bool:
    """Is the process's cgroup frozen (v1 freezer.state, or v2 cgroup.freeze)?"""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [line.strip().split(":", 2) for line in f]
    for _, controllers, path in lines:
        if "freezer" in controllers.split(","):
            with open(f"/sys/fs/cgroup/freezer{path}/freezer.state") as f:
                return f.read().strip() == "FROZEN"
    path = next(p for h, c, p in lines if h == "0")
    with open(f"/sys/fs/cgroup{path}/cgroup.freeze") as f:
        return f.read().strip() == "1"


def test_members_share_the_infra_containers_namespaces_and_see_each_other_on_localhost(pods):
    pod_id = pods("pod", "create", "--name", "web").stdout.strip()
    assert len(pod_id) == 64
    # -i: busybox nc ends at its stdin's end; /dev/null could end it before the data came
    pods("run", "-d", "-i", "--pod", "web", "--name", "server", "busybox", "nc", "-l", "-p", "8080")
    result = pods("run", "--rm", "--pod", "web", "busybox", "sh", "-c", f"{SEND_HELLO}", check=False)
    assert result.returncode == 0, result.stderr
    assert pods("wait", "server").stdout.strip() == "0"
    assert pods("logs", "server").stdout == "hello\n"

    pods("run", "-d", "--pod", "web", "--name", "other", "busybox", "sleep", "1000")
    listed = pods("ps", "-a", "--filter", "pod=web", "--format", "{{.Names}}").stdout.split()
    assert sorted(listed) == ["other", "server", "web-infra"]
    infra = pods.inspect("web-infra")
    assert infra["IsInfra"] and infra["Pod"] == pod_id
    other = pid_of(pods, "other")
    for kind in ("net", "ipc", "uts"):
        assert ns(other, kind) == ns(infra["State"]["Pid"], kind) != ns(os.getpid(), kind)
    assert ns(other, "pid") != ns(infra["State"]["Pid"], "pid")  # not shared by default
    assert ns(other, "mnt") != ns(infra["State"]["Pid"], "mnt")
    assert pods("exec", "other", "hostname").stdout == "web\n"
    with open(f"/proc/{other}/cgroup") as f:
        assert f"/capsactl/pod-{pod_id}/{pods.inspect('other')['Id']}" in f.read()
    record = sandbox_record(pods, infra["Id"])
    assert record is not None and record["sharedNamespaces"] == ["network", "ipc", "uts"]
    assert os.listdir(os.path.join(pods.runroot, "runtime", "@sandbox", infra["Id"], "members")) == \
        [pods.inspect("other")["Id"]]
    document = json.loads(pods("pod", "inspect", "web").stdout)
    assert document["State"] == "Degraded" and document["NumContainers"] == 3  # server exited
    assert document["InfraContainerID"] == infra["Id"] and document["SharedNamespaces"] == ["net", "ipc", "uts"]


def test_pid_namespace_shared_on_request(pods):
    pods("pod", "create", "--share", "net,ipc,uts,pid", "shared")
    pods("run", "-d", "--pod", "shared", "--name", "s", "busybox", "sleep", "1000")
    out = pods("run", "--rm", "--pod", "shared", "busybox", "ps", "-o", "args").stdout
    assert "/catatonit -P" in out and "sleep 1000" in out


def test_pod_pause_and_unpause_go_through_the_sandbox(pods):
    pods("pod", "create", "p")
    pods("run", "-d", "--pod", "p", "--name", "a", "busybox", "sleep", "1000")
    pods("run", "-d", "--pod", "p", "--name", "b", "busybox", "sleep", "1000")
    infra_id = pods.inspect("p-infra")["Id"]
    pids = [pid_of(pods, n) for n in ("a", "b", "p-infra")]
    assert pods("pod", "pause", "p").returncode == 0
    assert sandbox_record(pods, infra_id)["state"] == "paused"
    assert all(frozen(pid) for pid in pids)
    assert {c["Names"][0]: c["State"] for c in pods.ps()} == {"a": "paused", "b": "paused", "p-infra": "paused"}
    assert json.loads(pods("pod", "inspect", "p").stdout)["State"] == "Paused"
    pods("pod", "unpause", "p")
    assert sandbox_record(pods, infra_id)["state"] == "running"
    assert not any(frozen(pid) for pid in pids)
    assert {c["State"] for c in pods.ps()} == {"running"}
    assert [e["Status"] for e in pods.events() if e["Type"] == "pod"][-2:] == ["pause", "unpause"]


def test_pod_kill_signals_every_container_through_the_sandbox(pods):
    pods("pod", "create", "k")
    pods("run", "-d", "--pod", "k", "--name", "a", "busybox", "sleep", "1000")
    infra_id = pods.inspect("k-infra")["Id"]
    pods("pod", "kill", "k")
    for name in ("a", "k-infra"):
        assert pods("wait", name).stdout.strip() == "137"
    wait_until(lambda: sandbox_record(pods, infra_id) is None, "the infra's exit to delete the sandbox")
    assert json.loads(pods("pod", "inspect", "k").stdout)["State"] == "Exited"
    # killed pods start again: a new sandbox, the member in it
    pods("pod", "start", "k")
    assert ns(pid_of(pods, "a"), "net") == ns(pid_of(pods, "k-infra"), "net")
    # a paused pod's processes act on the signal: it is thawed after the kill
    pods("pod", "pause", "k")
    pods("pod", "kill", "k")
    for name in ("a", "k-infra"):
        assert pods("wait", name).stdout.strip() == "137"
    assert pods("pod", "kill", "-s", "TERM", "nonexistent", check=False).returncode == 125


def test_pod_stop_then_start_and_restart(pods):
    pods("pod", "create", "s")
    pods("run", "-d", "--pod", "s", "--name", "a", "busybox", "sh", "-c", "trap 'exit 3' TERM; while true; do sleep 0.1; done")
    pods("pod", "stop", "-t", "5", "s")
    assert pods.inspect("a")["State"]["ExitCode"] == 3
    assert {c["State"] for c in pods.ps()} == {"exited"}
    pods("pod", "restart", "s")
    assert {c["State"] for c in pods.ps()} == {"running"}
    assert ns(pid_of(pods, "a"), "net") == ns(pid_of(pods, "s-infra"), "net")
    # a member's own start starts the infra container first
    pods("pod", "stop", "-t", "5", "s")
    pods("start", "a")
    assert pods.inspect("s-infra")["State"]["Status"] == "running"
    assert ns(pid_of(pods, "a"), "uts") == ns(pid_of(pods, "s-infra"), "uts")


def test_pod_rm_with_members_is_refused_without_force_and_names_them(pods):
    pods("pod", "create", "busy")
    pods("create", "--pod", "busy", "--name", "one", "busybox", "true")
    pods("run", "-d", "--pod", "busy", "--name", "two", "busybox", "sleep", "1000")
    result = pods("pod", "rm", "busy", check=False)
    assert result.returncode == 125
    assert "one" in result.stderr and "two" in result.stderr and "--force" in result.stderr
    assert pods("pod", "exists", "busy").returncode == 0 and len(pods.ps()) == 3
    result = pods("rm", "-f", "busy-infra", check=False)
    assert result.returncode == 125 and "pod rm" in result.stderr
    pods("pod", "rm", "-f", "-t", "0", "busy")
    assert pods("pod", "exists", "busy", check=False).returncode == 1
    assert pods.ps() == []
    assert [e["Status"] for e in pods.events() if e["Type"] == "pod"][-1] == "remove"
    # rm --all leaves the infra container to pod rm (as podman's); the running pod then needs -f
    pods("pod", "create", "again")
    pods("run", "-d", "--pod", "again", "--name", "three", "busybox", "sleep", "1000")
    assert pods("rm", "-a", "-f", "-t", "0").returncode == 0
    assert [c["Names"][0] for c in pods.ps()] == ["again-infra"]
    result = pods("pod", "rm", "again", check=False)
    assert result.returncode == 125 and "running" in result.stderr


def test_pod_without_members_removed_and_pruned(pods):
    pods("pod", "create", "empty")
    pods("pod", "create", "--infra=false", "bare")
    pods("run", "-d", "--pod", "bare", "--name", "loose", "busybox", "sleep", "1000")
    assert pods.inspect("loose")["Pod"] == pods("pod", "inspect", "--format", "{{.Id}}", "bare").stdout.strip()
    assert ns(pid_of(pods, "loose"), "net") != ns(os.getpid(), "net")  # its own namespaces: nothing to share
    assert json.loads(pods("pod", "ps", "--format", "json").stdout)[0]["Name"] == "bare"
    pods("pod", "prune", "-f")  # empty's infra was never started: it goes; bare runs: it stays
    assert pods("pod", "ps", "-q").stdout.split() == [pods("pod", "inspect", "-f", "{{.Id}}", "bare").stdout[:12]]
    pods("pod", "stop", "-t", "0", "bare")
    pods("pod", "rm", "bare", check=False)  # a member: refused
    pods("rm", "loose")
    pods("pod", "rm", "bare")
    assert pods("pod", "ps", "-q").stdout == ""


def test_run_pod_new_logs_and_top(pods):
    assert pods("run", "--rm", "--pod", "new:fresh", "--name", "hi", "busybox", "echo", "hi").stdout == "hi\n"
    assert pods("pod", "exists", "fresh").returncode == 0
    pods("run", "-d", "--pod", "fresh", "--name", "talker", "busybox", "sh", "-c", "echo one; echo two; sleep 1000")
    wait_until(lambda: "two" in pods("pod", "logs", "fresh").stdout, "the member's output in pod logs")
    top = pods("pod", "top", "fresh").stdout
    assert "/catatonit -P" in top and "sleep 1000" in top


def test_bad_input_is_refused_and_leaves_nothing(pods):
    result = pods("pod", "create", "--share", "net", "x", check=False)
    assert result.returncode == 125 and "ipc, uts missing" in result.stderr
    result = pods("pod", "create", "--infra=false", "-p", "8080", "x", check=False)
    assert result.returncode == 125 and "--infra=true" in result.stderr
    result = pods("--runtime", "runc", "pod", "create", "x", check=False)
    assert result.returncode == 125 and "runc" in result.stderr and "sandboxes" in result.stderr
    result = pods("run", "--pod", "nope", "busybox", "true", check=False)
    assert result.returncode == 125 and "nope" in result.stderr
    pods("pod", "create", "x")
    for flags in (["--network", "host"], ["-p", "8080"], ["--hostname", "h"]):
        result = pods("create", "--pod", "x", *flags, "busybox", "true", check=False)
        assert result.returncode == 125 and "pod" in result.stderr, flags
    result = pods("pod", "create", "x", check=False)
    assert result.returncode == 125 and "already in use" in result.stderr
    assert [c["Names"][0] for c in pods.ps()] == ["x-infra"]
    assert len(pods("pod", "ps", "-q").stdout.split()) == 1


def test_pod_publishes_a_port_that_a_member_serves(host, rootfs_template):  # noqa: F811
    """-p on the pod: its infra container is on the bridge (netavark's DNAT), a member listens. In
    a network namespace of the test's own that plays the host (test_capsactl_network's fixtures)."""
    try:
        host.capsactl("import", "-q", "-c", 'CMD ["sh"]', rootfs_template, "busybox")
        host.capsactl("pod", "create", "-p", "18080:8080", "published")
        host.capsactl("run", "-d", "-i", "--pod", "published", "--name", "srv", "busybox", "nc", "-l", "-p", "8080")
        gateway = "10.88.0.1"  # the default network's, an address of the test's "host"
        sent = host.run("sh", "-c", f"for i in $(seq 200); do echo hi | busybox nc {gateway} 18080 && exit 0; "
                        "sleep 0.05; done; exit 1", check=False)
        assert sent.returncode == 0, sent.stderr
        assert host.capsactl("wait", "srv").stdout.strip() == "0"
        assert host.capsactl("logs", "srv").stdout == "hi\n"
        document = json.loads(host.capsactl("pod", "inspect", "published").stdout)
        assert document["InfraConfig"]["PortBindings"] == {"8080/tcp": [{"HostIp": "", "HostPort": "18080"}]}
    finally:
        host.capsactl("pod", "rm", "-a", "-f", "-t", "0", check=False)
    assert host.capsactl("ps", "-a", "-q").stdout == ""
