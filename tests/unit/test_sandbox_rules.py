"""capsa.sandbox's pure parts: annotations, Kata's state machine, namespace joining, cgroup paths."""

from __future__ import annotations

import pytest

from capsa import cli, sandbox
from capsa.errors import ConfigError

CONTAINERD = ("io.kubernetes.cri.container-type", "io.kubernetes.cri.sandbox-id")
CRIO = ("io.kubernetes.cri-o.ContainerType", "io.kubernetes.cri-o.SandboxID")
DOCKERSHIM = ("io.kubernetes.docker.type", "io.kubernetes.sandbox.id")


def test_the_cli_checks_the_same_keys_as_the_sandbox_layer():
    assert cli.SANDBOX_TYPE_KEYS == sandbox.TYPE_KEYS


@pytest.mark.parametrize(("annotations", "expected"), [
    ({}, None),
    (None, None),
    ({"io.kubernetes.cri.sandbox-id": "p"}, None),  # an id without a type: standalone, as runsc
    ({CONTAINERD[0]: "sandbox", CONTAINERD[1]: "p"}, ("sandbox", None)),
    ({CONTAINERD[0]: "container", CONTAINERD[1]: "p"}, ("container", "p")),
    ({CRIO[0]: "sandbox"}, ("sandbox", None)),
    ({CRIO[0]: "container", CRIO[1]: "q"}, ("container", "q")),
    ({DOCKERSHIM[0]: "podsandbox"}, ("sandbox", None)),
    ({DOCKERSHIM[0]: "container", DOCKERSHIM[1]: "d"}, ("container", "d")),
    # containerd's wins over CRI-O's, CRI-O's over dockershim's: type and id from the same family.
    ({CONTAINERD[0]: "container", CONTAINERD[1]: "a", CRIO[0]: "sandbox", CRIO[1]: "b"}, ("container", "a")),
    ({CRIO[0]: "container", CRIO[1]: "b", DOCKERSHIM[0]: "podsandbox"}, ("container", "b")),
    ({DOCKERSHIM[0]: "container", DOCKERSHIM[1]: "d", CRIO[0]: "sandbox"}, ("sandbox", None)),
])
def test_annotations(annotations, expected):
    assert sandbox.parse_annotations(annotations) == expected


@pytest.mark.parametrize(("annotations", "message"), [
    ({CONTAINERD[0]: "pod"}, "io.kubernetes.cri.container-type: unknown container type 'pod'"),
    ({DOCKERSHIM[0]: "sandbox"}, "unknown container type 'sandbox': use 'podsandbox' or 'container'"),
    ({CONTAINERD[0]: "container"}, "io.kubernetes.cri.sandbox-id: io.kubernetes.cri.container-type is 'container' but no sandbox id"),
    ({CRIO[0]: "container", CRIO[1]: ""}, "io.kubernetes.cri-o.SandboxID"),
    # The id of a lower family does not complete a higher one.
    ({CONTAINERD[0]: "container", CRIO[1]: "x"}, "no sandbox id"),
])
def test_bad_annotations(annotations, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sandbox.parse_annotations(annotations)


VALID = [("ready", "running"), ("ready", "stopped"), ("running", "paused"), ("running", "stopped"),
         ("paused", "running"), ("paused", "stopped"), ("stopped", "running")]
STATES = ("ready", "running", "paused", "stopped")


@pytest.mark.parametrize(("current", "target"), [(a, b) for a in STATES for b in STATES])
def test_state_machine(current, target):
    if (current, target) in VALID:
        sandbox.check_transition("p", current, target)
        return
    with pytest.raises(sandbox.SandboxStateError, match=f"sandbox p: cannot go from {current} to {target}$"):
        sandbox.check_transition("p", current, target)


def test_stopped_to_running_only_while_the_holder_lives():
    sandbox.check_transition("p", "stopped", "running", holder_alive=True)
    with pytest.raises(sandbox.SandboxStateError, match="cannot go from stopped to running .its holder is gone."):
        sandbox.check_transition("p", "stopped", "running", holder_alive=False)
    sandbox.check_transition("p", "paused", "running", holder_alive=False)  # only stopped asks for it


@pytest.mark.parametrize(("recorded", "holder", "expected"), [
    ("ready", "created", "ready"), ("ready", "running", "running"), ("running", "running", "running"),
    ("paused", "running", "paused"), ("running", "paused", "paused"), ("running", "stopped", "stopped"),
    ("paused", "stopped", "stopped"), ("stopped", "running", "stopped"), ("ready", "creating", "stopped"),
])
def test_derived_state(recorded, holder, expected):
    assert sandbox.derived_state(recorded, holder) == expected


def _identity(path: str, field: str) -> tuple[int, int]:
    """Namespace files by name: /proc/7/ns/X and /run/netns/pod are the holder's, others not."""
    if path.startswith("/proc/7/ns/") or path == "/run/netns/pod":
        return (1, hash(path.rsplit("/", 1)[-1] if path.startswith("/proc") else "net"))
    return (2, hash(path))


SANDBOX_NS = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]


def _join(member, sandbox_ns=SANDBOX_NS, share_pid=False):
    return sandbox.join_namespaces(member, sandbox_ns, 7, share_pid, identity=_identity)


def test_entries_without_path_join_the_holders():
    joined = _join([{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")])
    assert joined == [{"type": "pid"}, {"type": "network", "path": "/proc/7/ns/net"},
                      {"type": "ipc", "path": "/proc/7/ns/ipc"}, {"type": "uts", "path": "/proc/7/ns/uts"},
                      {"type": "mount"}]


def test_shared_pid_namespace_is_joined_too():
    joined = _join([{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}], share_pid=True)
    assert joined[0] == {"type": "pid", "path": "/proc/7/ns/pid"}
    with pytest.raises(ConfigError, match="has no pid namespace"):
        _join([{"type": "network"}, {"type": "ipc"}, {"type": "uts"}], share_pid=True)


def test_paths_to_the_same_namespace_are_accepted_whatever_their_spelling():
    member = [{"type": "network", "path": "/run/netns/pod"}, {"type": "ipc", "path": "/proc/7/ns/ipc"},
              {"type": "uts"}]
    assert _join(member)[:2] == member[:2]


def test_a_path_elsewhere_or_a_missing_kind_is_an_error():
    with pytest.raises(ConfigError, match=r"linux.namespaces\[0\].path: /proc/9/ns/net is not the sandbox's network"):
        _join([{"type": "network", "path": "/proc/9/ns/net"}, {"type": "ipc"}, {"type": "uts"}])
    with pytest.raises(ConfigError, match="has no uts namespace, but the sandbox shares its own"):
        _join([{"type": "network"}, {"type": "ipc"}])


def test_host_network_sandbox_puts_members_on_the_host_network():
    host_network = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    joined = _join([{"type": "network"}, {"type": "ipc"}, {"type": "uts"}], host_network)
    assert joined == [{"type": "ipc", "path": "/proc/7/ns/ipc"}, {"type": "uts", "path": "/proc/7/ns/uts"}]
    assert _join([{"type": "ipc"}, {"type": "uts"}], host_network)[0]["type"] == "ipc"
    with pytest.raises(ConfigError, match="is not the host's .the sandbox has none of its own. network"):
        _join([{"type": "network", "path": "/proc/9/ns/net"}, {"type": "ipc"}, {"type": "uts"}], host_network)


def test_the_member_list_is_not_changed_in_place():
    member = [{"type": "network"}, {"type": "ipc"}, {"type": "uts"}]
    _join(member)
    assert member == [{"type": "network"}, {"type": "ipc"}, {"type": "uts"}]


@pytest.mark.parametrize(("path", "parent"), [
    ("/kubepods/pod1/abc", "/kubepods/pod1"), ("a/b", "a"), ("/a", None), ("a", None), (None, None), ("", None),
    ("kubepods-pod1.slice:cri-containerd:abc", "kubepods-pod1.slice"), ("/a/b/", "/a"),
])
def test_parent_of(path, parent):
    assert sandbox.parent_of(path) == parent


def test_member_cgroups_path():
    assert sandbox.member_cgroups_path(None, "/pods/p", "m1") == "/pods/p/m1"
    assert sandbox.member_cgroups_path("/pods/p/x", "/pods/p", "m1") == "/pods/p/x"
    assert sandbox.member_cgroups_path("/own", None, "m1") == "/own"
    assert sandbox.member_cgroups_path(None, "pod.slice", "m1") == "pod.slice:capsa:m1"
    with pytest.raises(ConfigError, match="linux.cgroupsPath: /other/m1 is not in the sandbox's cgroup /pods/p"):
        sandbox.member_cgroups_path("/other/m1", "/pods/p", "m1")


@pytest.mark.parametrize(("annotations", "namespaces", "shared"), [
    ({}, ["pid"], False),
    ({"capsa.sandbox.share-pid": "true"}, ["pid"], True),
    ({"capsa.sandbox.share-pid": "true"}, ["network"], False),  # no PID namespace of its own to share
    ({"io.kubernetes.cri-o.NamespaceOptions": '{"network": 2}'}, ["pid"], True),  # pid POD (0) is left out
    ({"io.kubernetes.cri-o.NamespaceOptions": '{"pid": 1}'}, ["pid"], False),  # CONTAINER
])
def test_shares_pid(annotations, namespaces, shared):
    spec = {"annotations": annotations, "linux": {"namespaces": [{"type": t} for t in namespaces]}}
    assert sandbox.shares_pid(spec) is shared
