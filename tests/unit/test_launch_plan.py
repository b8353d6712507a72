"""The launch plan's builders (capsa.launch): what a container's init, an exec'd process and a
sandbox member are asked to do, namespace by namespace and for the cgroup, before anything
is started. Every launch carries out such a plan on the one path, launch.start."""

from __future__ import annotations

import posix

import pytest

from capsa import launch
from capsa.cgroups.common import Cgroup
from capsa.errors import CapsaError
from capsa.launch import CGROUP_CHILD, CGROUP_MANAGER, Console, LaunchPlan, Namespace


class FsCgroup(Cgroup):
    """Only what the builders read of a cgroup: its paths and who places the process in it."""

    driver = "fake"


class ManagedCgroup(FsCgroup):
    placed_by_manager = True  # systemd's scope: made with the waiting child in it


def _spec(*namespaces, **linux):
    return {
        "ociVersion": "1.3.0",
        "process": {"args": ["sh"], "cwd": "/", "oomScoreAdj": 100},
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": dict({"namespaces": list(namespaces), "resources": {"pids": {"limit": 10}},
                       "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]}, **linux),
    }


def _container_plan(spec, cgroup=None, **extra):
    return launch.plan_for_container(spec=spec, rootfs="/b/rootfs", container_id="c1", state={"id": "c1"}, listen_fd=9,
                                     cgroup=cgroup, **extra)


def test_a_container_creates_its_namespaces_and_joins_those_with_a_path():
    spec = _spec({"type": "pid"}, {"type": "network", "path": "/var/run/netns/n1"}, {"type": "mount"})
    cgroup = FsCgroup({"": "/sys/fs/cgroup/c1"})
    plan = _container_plan(spec, cgroup, inherited_fds=2, listen_fds=1)
    assert plan.namespaces == [Namespace("pid"), Namespace("network", path="/var/run/netns/n1"), Namespace("mount")]
    assert plan.fork  # a pid namespace applies to the children of whoever made it
    assert plan.cgroup is cgroup and plan.cgroup_placement == CGROUP_CHILD
    assert plan.cgroup_limits == ({"pids": {"limit": 10}}, spec["linux"]["devices"])  # its own cgroup: limited
    assert plan.oom_score_adj == 100 and plan.listener_status == "creating"
    assert (plan.inherited_fds, plan.listen_fds) == (2, 1)
    assert plan.init.spec is spec and plan.init.listen_fd == 9 and plan.init.rootfs == "/b/rootfs"
    assert plan.id_mappings is spec["linux"]


def test_a_container_without_pid_or_time_namespace_is_not_forked_again():
    plan = _container_plan(_spec({"type": "network"}, {"type": "mount"}))
    assert not plan.fork and plan.cgroup is None


def test_a_systemd_cgroup_is_placed_by_the_manager():
    plan = _container_plan(_spec({"type": "pid"}), ManagedCgroup({"": "/sys/fs/cgroup/system.slice/capsa-c1.scope"}))
    assert plan.cgroup_placement == CGROUP_MANAGER


def test_an_exec_joins_the_namespaces_of_the_init_that_differ_from_ours(monkeypatch):
    links = {"/proc/42/ns/net": "net:[2]", "/proc/42/ns/pid": "pid:[2]", "/proc/42/ns/mnt": "mnt:[2]"}
    real_readlink = posix.readlink

    def readlink(path):
        if path.startswith("/proc/42/ns/time") or path == "/proc/self/ns/time":
            raise FileNotFoundError(path)  # a kernel without time namespaces
        if path.startswith("/proc/42/"):
            return links.get(path) or real_readlink(path.replace("/proc/42/", "/proc/self/"))
        return real_readlink(path)

    monkeypatch.setattr(posix, "readlink", readlink)

    class Running:
        pid = 42
        spec = _spec({"type": "pid"}, {"type": "network"}, {"type": "mount"}, seccomp={"defaultAction": "SCMP_ACT_ALLOW"},
                     memoryPolicy={"mode": "MPOL_BIND", "nodes": "0"})

        def hook_state(self, status):
            return {"id": "c1", "status": status, "pid": self.pid}

    sub = FsCgroup({"": "/sys/fs/cgroup/c1/sub"})
    process = {"args": ["true"], "cwd": "/"}
    plan = launch.plan_for_exec(Running(), process, console=Console(socket="/tmp/s"), inherited_fds=1, cgroup=sub)
    assert plan.namespaces == [Namespace("pid", path="/proc/42/ns/pid"), Namespace("network", path="/proc/42/ns/net"),
                               Namespace("mount", path="/proc/42/ns/mnt")]
    assert plan.fork and plan.process is process and plan.init is None
    assert plan.cgroup is sub and plan.cgroup_placement == CGROUP_CHILD
    assert plan.cgroup_limits is None and plan.oom_score_adj is None  # a cgroup joined as it is
    assert plan.state == {"id": "c1", "status": "running", "pid": 42} and plan.listener_status == "running"
    assert plan.seccomp == Running.spec["linux"]["seccomp"] and plan.memory_policy == {"mode": "MPOL_BIND", "nodes": "0"}
    assert plan.id_mappings is None  # it joins the user namespace, if any: no maps to write
    scope = ManagedCgroup({"": "/sys/fs/cgroup/system.slice/capsa-c1.scope"})
    plan = launch.plan_for_exec(Running(), process, cgroup=scope)
    assert plan.cgroup_placement == CGROUP_CHILD  # systemd made the scope at create: an exec joins it


def test_a_member_joins_the_sandbox_namespaces_by_path_and_keeps_its_own_mount_namespace():
    spec = _spec({"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"})
    sandbox = {"network": "/proc/7/ns/net", "ipc": "/proc/7/ns/ipc", "uts": "/proc/7/ns/uts", "pid": "/proc/7/ns/pid"}
    parent = FsCgroup({"": "/sys/fs/cgroup/pod1"})
    plan = launch.plan_for_member(sandbox, spec=spec, rootfs="/b/rootfs", container_id="c1", state={}, listen_fd=9,
                                  cgroup=parent.child("c1"))
    assert plan.namespaces == [Namespace("pid", path="/proc/7/ns/pid"), Namespace("network", path="/proc/7/ns/net"),
                               Namespace("ipc", path="/proc/7/ns/ipc"), Namespace("uts", path="/proc/7/ns/uts"),
                               Namespace("mount")]
    assert plan.fork  # a joined pid namespace, too, applies to children only
    assert plan.cgroup.paths == {"": "/sys/fs/cgroup/pod1/c1"} and plan.cgroup_placement == CGROUP_CHILD
    assert plan.cgroup_limits is not None and plan.init is not None  # a new container, in its own cgroup


def test_a_member_gets_a_namespace_its_config_lacks():
    plan = launch.plan_for_member({"network": "/proc/7/ns/net"}, spec=_spec({"type": "mount"}), rootfs="/r",
                                  container_id="c1", state={}, listen_fd=9, cgroup=None)
    assert plan.namespaces == [Namespace("mount"), Namespace("network", path="/proc/7/ns/net")]
    assert not plan.fork


def test_a_namespace_is_new_or_joined_by_path_or_fd():
    assert not Namespace("ipc").joined
    assert Namespace("ipc", path="/proc/1/ns/ipc").joined and Namespace("ipc", fd=7).joined
    with pytest.raises(CapsaError, match="unknown namespace type 'net'"):
        Namespace("net")


def test_the_plan_and_console_are_typed():
    with pytest.raises(TypeError):
        LaunchPlan(process={}, namespaces=[], fork=False, state={}, listener_status="running", preserve_fds=1)
    with pytest.raises(CapsaError):
        Console()
    with pytest.raises(CapsaError):
        Console(socket="/s", fd=3)


def test_joined_namespaces_of_a_config_are_validated_again():
    from capsa.errors import ConfigError
    from capsa.spec import with_joined_namespaces

    spec = _spec({"type": "time"}, {"type": "mount"}, timeOffsets={"monotonic": {"secs": 10}})
    with pytest.raises(ConfigError, match="linux.timeOffsets"):
        with_joined_namespaces(spec, {"time": "/proc/7/ns/time"})  # offsets are for a new time namespace only
    with pytest.raises(ConfigError, match="join_namespaces.network"):
        with_joined_namespaces(spec, {"network": "netns"})
    joined = with_joined_namespaces(spec, {"network": "/proc/7/ns/net"})
    assert joined["linux"]["namespaces"][-1] == {"type": "network", "path": "/proc/7/ns/net"}
    assert spec["linux"]["namespaces"] == [{"type": "time"}, {"type": "mount"}]  # the original is left as it was
