"""Sandboxes (pods) through the CLI: an infra container and members joined by CRI annotations.

Real containers as root: the members must share the sandbox's network, IPC and UTS namespaces
(checked from inside and by the namespace files' inodes from the host), keep their own mount
namespace and rootfs, nest their cgroups in the sandbox's, and go with it, leaving nothing.
"""

from __future__ import annotations

import os
import subprocess
import threading

import pytest
from conftest import Bundle, capsa_command
from test_lifecycle import _imports_of

from capsa import jsonfast

TYPE = "io.kubernetes.cri.container-type"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"


@pytest.fixture
def pod(bundle, tmp_path, rootfs_template):
    """A sandbox "pod1" (infra: sleep) whose cgroup parent is the bundle's test cgroup, and a
    factory of member bundles (each its own rootfs copy)."""
    bundle.config["annotations"] = {TYPE: "sandbox", SANDBOX_ID: "pod1"}
    bundle.config["hostname"] = "pod-host"
    bundle.config["linux"]["cgroupsPath"] = f"{bundle.cgroup}/pod1"
    bundle.config["linux"]["sysctl"] = {"kernel.msgmax": "12345"}  # an IPC namespace's own setting
    bundle.set_args("sleep", "1000")
    numbers = iter(range(1000))

    def member(*args: str, sandbox: str = "pod1") -> Bundle:
        other = Bundle(str(tmp_path / f"member{next(numbers)}"), rootfs_template, bundle.root)
        other.config["annotations"] = {TYPE: "container", SANDBOX_ID: sandbox}
        other.config.pop("hostname", None)  # the sandbox's UTS namespace has the pod's hostname
        del other.config["linux"]["cgroupsPath"]  # in the sandbox's cgroup, named after the member
        other.set_args(*(args or ("sleep", "1000")))
        return other

    bundle.member = member
    yield bundle
    capsa(bundle, "sandbox", "delete", "--force", "pod1", check=False)


def capsa(bundle, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return bundle.capsa(*args, check=check, write=False)


def state(bundle, cid: str) -> dict:
    return jsonfast.loads(capsa(bundle, "state", cid).stdout)


def sandbox_state(bundle, sid: str = "pod1") -> dict:
    return jsonfast.loads(capsa(bundle, "sandbox", "state", sid).stdout)


def ns(pid: int, kind: str) -> tuple[int, int]:
    info = os.stat(f"/proc/{pid}/ns/{kind}")
    return info.st_dev, info.st_ino


def start_pod(pod) -> int:
    pod.create("pod1")
    capsa(pod, "start", "pod1")
    return state(pod, "pod1")["pid"]


def add(pod, member: Bundle, cid: str, start: bool = True) -> int:
    member.create(cid)
    if start:
        capsa(pod, "start", cid)
    return state(pod, cid)["pid"]


def cgroup_dirs(path: str) -> list[str]:
    return [d for d in (os.path.join("/sys/fs/cgroup", h, path.lstrip("/")) for h in os.listdir("/sys/fs/cgroup"))
            if os.path.isdir(d)]


def test_members_share_network_ipc_uts_and_keep_their_own_mounts(pod):
    holder = start_pod(pod)
    # The server's stdin never at EOF: busybox nc ends on it, at times before the client's line came.
    server, client = pod.member("sh", "-c", "sleep 1000 | nc -l -p 8080 > /dev/shm/got; exec sleep 1000"), pod.member()
    server_pid = add(pod, server, "m1")
    client_pid = add(pod, client, "m2")
    # From the host: one network, IPC and UTS namespace for all three; a mount namespace and root each.
    for kind in ("net", "ipc", "uts"):
        assert ns(server_pid, kind) == ns(client_pid, kind) == ns(holder, kind) != ns(os.getpid(), kind), kind
    assert len({ns(p, "mnt") for p in (holder, server_pid, client_pid)}) == 3
    assert len({os.stat(f"/proc/{p}/root").st_ino for p in (holder, server_pid, client_pid)}) == 3
    # The sandbox's hostname and its IPC namespace's sysctl, seen in the members.
    assert capsa(pod, "exec", "m2", "hostname").stdout.strip() == "pod-host"
    assert capsa(pod, "exec", "m1", "cat", "/proc/sys/kernel/msgmax").stdout.strip() == "12345"
    # SysV IPC: a shared memory segment made in m1's IPC namespace is listed in m2.
    made = subprocess.run(["nsenter", f"--ipc=/proc/{server_pid}/ns/ipc", "python3", "-c",
                           "import ctypes; print(ctypes.CDLL(None).shmget(0x5ca9, 4096, 0o1600))"],
                          capture_output=True, text=True, check=True)
    assert int(made.stdout) >= 0
    assert str(0x5CA9) in capsa(pod, "exec", "m2", "cat", "/proc/sysvipc/shm").stdout
    # From inside: the listener in m1 gets what m2 sends to 127.0.0.1 (m1's /dev/shm is its own tmpfs).
    capsa(pod, "exec", "m2", "sh", "-c", "echo hello-over-lo | nc 127.0.0.1 8080")
    _wait(lambda: capsa(pod, "exec", "m1", "cat", "/dev/shm/got").stdout == "hello-over-lo\n")
    assert capsa(pod, "exec", "m2", "cat", "/dev/shm/got", check=False).returncode != 0
    # Each its own rootfs: a file put in m2's (from the host) is not in m1's.
    open(os.path.join(client.rootfs, "only-in-m2"), "w").close()
    assert capsa(pod, "exec", "m1", "ls", "/only-in-m2", check=False).returncode != 0
    assert capsa(pod, "exec", "m2", "ls", "/only-in-m2").returncode == 0
    # The members' cgroups are children of the sandbox's parent, as the holder's is.
    for cid in ("pod1", "m1", "m2"):
        assert os.path.isdir(f"/sys/fs/cgroup/pids/{pod.cgroup.lstrip('/')}/{cid}")
    # The record: the members and their states; list's sandbox column and field; state's annotations.
    record = sandbox_state(pod)
    assert record["state"] == "running" and record["pid"] == holder
    assert {m["id"]: m["status"] for m in record["members"]} == {"m1": "running", "m2": "running"}
    assert record["cgroupParent"] == pod.cgroup
    listed = {c["id"]: c["sandbox"] for c in jsonfast.loads(capsa(pod, "list", "--format", "json").stdout)}
    assert listed == {"pod1": "pod1", "m1": "pod1", "m2": "pod1"}
    table = capsa(pod, "list").stdout.splitlines()
    assert table[0].split()[-1] == "SANDBOX" and all(line.split()[-1] == "pod1" for line in table[1:])
    assert state(pod, "m1")["annotations"] == {TYPE: "container", SANDBOX_ID: "pod1"}
    # A member that exits leaves the others running.
    capsa(pod, "kill", "m2", "KILL")
    _wait(lambda: state(pod, "m2")["status"] == "stopped")
    assert state(pod, "m1")["status"] == "running" and sandbox_state(pod)["state"] == "running"


def test_delete_with_live_members_fails_naming_them_and_force_leaves_nothing(pod):
    holder = start_pod(pod)
    pids = [add(pod, pod.member(), cid) for cid in ("m1", "m2")]
    for args in (("delete", "pod1"), ("sandbox", "delete", "pod1")):
        failed = capsa(pod, *args, check=False)
        assert failed.returncode == 1 and "m1, m2" in failed.stderr, failed.stderr
    capsa(pod, "kill", "pod1", "KILL")
    _wait(lambda: state(pod, "pod1")["status"] == "stopped")
    assert sandbox_state(pod)["state"] == "stopped"
    # A stopped sandbox takes no members.
    refused = pod.member().create("m3", check=False)
    assert refused.returncode == 1 and "sandbox pod1 is stopped" in refused.stderr
    assert not os.path.exists(os.path.join(pod.root, "m3"))
    still = capsa(pod, "delete", "pod1", check=False)
    assert still.returncode == 1 and "m1, m2" in still.stderr
    # delete --force of the infra container: every member killed and deleted, then the sandbox.
    capsa(pod, "delete", "--force", "pod1")
    assert not any(os.path.exists(f"/proc/{p}") and _alive(p) for p in pids + [holder])
    assert sorted(os.listdir(pod.root)) == ["@sandbox"] and os.listdir(os.path.join(pod.root, "@sandbox")) == []
    assert cgroup_dirs(pod.cgroup) == []
    # Idempotent.
    capsa(pod, "sandbox", "delete", "--force", "pod1")
    capsa(pod, "delete", "--force", "pod1")


def test_members_leave_one_by_one_then_the_sandbox_goes(pod):
    start_pod(pod)
    add(pod, pod.member("true"), "m1")
    _wait(lambda: state(pod, "m1")["status"] == "stopped")
    capsa(pod, "delete", "m1")
    assert [m["id"] for m in sandbox_state(pod)["members"]] == []
    # `capsa run` of a member: it joins, runs, and leaves the sandbox when it is deleted after its exit.
    runner = pod.member("hostname")
    assert runner.capsa("run", "--bundle", runner.path, "m2", write=False).stdout == "pod-host\n"
    assert [m["id"] for m in sandbox_state(pod)["members"]] == [] and not os.path.exists(os.path.join(pod.root, "m2"))
    assert not os.path.isdir(f"/sys/fs/cgroup/pids/{pod.cgroup.lstrip('/')}/m1")
    capsa(pod, "kill", "pod1", "KILL")
    _wait(lambda: state(pod, "pod1")["status"] == "stopped")
    capsa(pod, "delete", "pod1")
    assert sorted(os.listdir(pod.root)) == ["@sandbox"] and cgroup_dirs(pod.cgroup) == []


def test_twenty_members_created_in_parallel_are_all_recorded(pod):
    start_pod(pod)
    member = pod.member()
    results = _in_parallel(pod, [("create", "--bundle", member.path, f"m{i}") for i in range(20)])
    assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results if r.returncode]
    assert sorted(m["id"] for m in sandbox_state(pod)["members"]) == sorted(f"m{i}" for i in range(20))
    assert all(m["status"] == "created" for m in sandbox_state(pod)["members"])
    capsa(pod, "sandbox", "delete", "--force", "pod1")
    assert sorted(os.listdir(pod.root)) == ["@sandbox"] and cgroup_dirs(pod.cgroup) == []


def test_delete_racing_member_creates_leaves_no_half_member(pod):
    start_pod(pod)
    member = pod.member()
    calls = [("create", "--bundle", member.path, f"m{i}") for i in range(10)]
    calls.insert(5, ("sandbox", "delete", "--force", "pod1"))
    results = _in_parallel(pod, calls)
    assert results[5].returncode == 0, results[5].stderr
    for call, result in zip(calls, results, strict=True):
        if call[0] == "create":
            # Either joined (then deleted with the sandbox) or refused with a clear error.
            assert result.returncode == 0 or "sandbox pod1" in result.stderr, result.stderr
    # Whatever was joined went with the sandbox; a create that came after it made a standalone
    # nothing: no record, no cgroup, no process.
    assert sorted(os.listdir(pod.root)) == ["@sandbox"] and os.listdir(os.path.join(pod.root, "@sandbox")) == []
    assert cgroup_dirs(pod.cgroup) == []


def _in_parallel(pod, calls: list[tuple[str, ...]]) -> list[subprocess.CompletedProcess]:
    results: list = [None] * len(calls)

    def one(index: int) -> None:
        args = calls[index]
        # A created member's init holds the caller's stdio: files, not pipes.
        with open(os.devnull, "w") as out, open(f"{pod.path}.err{index}", "w+") as err:
            code = subprocess.run(capsa_command() + ["--root", pod.root, *args], stdout=out, stderr=err,
                                  stdin=subprocess.DEVNULL, timeout=120).returncode
            err.seek(0)
            results[index] = subprocess.CompletedProcess(args, code, "", err.read())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("case", [
    "no-such-sandbox", "stopped-sandbox", "names-a-member", "unknown-type", "no-sandbox-id",
    "namespace-elsewhere", "namespace-missing", "cgroup-outside",
])
def test_bad_input_is_a_clear_error_and_leaves_nothing(pod, case):
    start_pod(pod)
    add(pod, pod.member(), "m1")
    member = pod.member()
    annotations = member.config["annotations"]
    namespaces = member.config["linux"]["namespaces"]
    expected = {
        "no-such-sandbox": "sandbox nosuch does not exist",
        "stopped-sandbox": "sandbox pod1 is stopped",
        "names-a-member": "m1 is a member of sandbox pod1, not a sandbox",
        "unknown-type": "unknown container type 'sidecar'",
        "no-sandbox-id": "io.kubernetes.cri.sandbox-id: io.kubernetes.cri.container-type is 'container' but no sandbox id",
        "namespace-elsewhere": "is not the sandbox's network namespace",
        "namespace-missing": "has no ipc namespace, but the sandbox shares its own",
        "cgroup-outside": f"is not in the sandbox's cgroup {pod.cgroup}",
    }[case]
    if case == "no-such-sandbox":
        annotations[SANDBOX_ID] = "nosuch"
    elif case == "stopped-sandbox":
        capsa(pod, "kill", "pod1", "KILL")
        _wait(lambda: state(pod, "pod1")["status"] == "stopped")
    elif case == "names-a-member":
        annotations[SANDBOX_ID] = "m1"
    elif case == "unknown-type":
        annotations[TYPE] = "sidecar"
    elif case == "no-sandbox-id":
        del annotations[SANDBOX_ID]
    elif case == "namespace-elsewhere":
        next(n for n in namespaces if n["type"] == "network")["path"] = "/proc/self/ns/net"
    elif case == "namespace-missing":
        namespaces[:] = [n for n in namespaces if n["type"] != "ipc"]
    elif case == "cgroup-outside":
        member.config["linux"]["cgroupsPath"] = "/capsa-elsewhere/m9"
    member.write()
    before = _cgroup_children(pod)
    failed = member.create("m9", check=False)
    assert failed.returncode == 1 and expected in failed.stderr, failed.stderr
    assert not os.path.exists(os.path.join(pod.root, "m9"))
    assert [m["id"] for m in sandbox_state(pod)["members"]] == ["m1"]
    assert _cgroup_children(pod) == before and cgroup_dirs("/capsa-elsewhere") == []


def _cgroup_children(pod) -> list[str]:
    return sorted(os.listdir(f"/sys/fs/cgroup/pids/{pod.cgroup.lstrip('/')}"))


def test_sandbox_commands_name_what_is_not_a_sandbox(pod):
    start_pod(pod)
    add(pod, pod.member(), "m1")
    for args, message in ((("sandbox", "state", "nosuch"), "sandbox nosuch does not exist"),
                          (("sandbox", "pause", "m1"), "m1 is a member of sandbox pod1, not a sandbox"),
                          (("sandbox", "frobnicate", "pod1"), "unknown sandbox command 'frobnicate'")):
        failed = capsa(pod, *args, check=False)
        assert failed.returncode == 1 and message in failed.stderr, failed.stderr


def test_host_network_sandbox_has_members_on_the_host_network(pod):
    pod.config["linux"]["namespaces"] = [n for n in pod.config["linux"]["namespaces"] if n["type"] != "network"]
    pod.write()
    holder = start_pod(pod)
    member_pid = add(pod, pod.member(), "m1")
    assert ns(member_pid, "net") == ns(holder, "net") == ns(os.getpid(), "net")
    assert ns(member_pid, "ipc") == ns(holder, "ipc") != ns(os.getpid(), "ipc")


def test_a_standalone_container_named_as_sandbox_holds_one(pod):
    """podman's way: its infra container has no annotation, its members name it in CRI-O's."""
    pod.config["annotations"] = {}
    pod.write()
    holder = start_pod(pod)
    member = pod.member()
    member.config["annotations"] = {"io.kubernetes.cri-o.ContainerType": "container",
                                    "io.kubernetes.cri-o.SandboxID": "pod1"}
    member_pid = add(pod, member, "m1")
    assert ns(member_pid, "net") == ns(holder, "net")
    assert [m["id"] for m in sandbox_state(pod)["members"]] == ["m1"]
    capsa(pod, "delete", "--force", "m1")
    capsa(pod, "kill", "pod1", "KILL")
    _wait(lambda: state(pod, "pod1")["status"] == "stopped")
    capsa(pod, "delete", "pod1")
    assert sorted(os.listdir(pod.root)) == ["@sandbox"] and os.listdir(os.path.join(pod.root, "@sandbox")) == []
    # The parent (the directory above the holder's cgroup, podman's pod cgroup) was joined: it stays, empty.
    for directory in cgroup_dirs(pod.cgroup):
        assert [d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d))] == []
        os.rmdir(directory)


def test_half_created_sandbox_is_deleted_by_force(pod):
    holder = start_pod(pod)
    # As if create died after the record and the cgroup were made: the holder's own state is gone.
    os.kill(holder, 9)
    _wait(lambda: not _alive(holder))
    subprocess.run(["rm", "-rf", os.path.join(pod.root, "pod1")], check=True)
    assert os.path.isdir(os.path.join(pod.root, "@sandbox", "pod1")) and cgroup_dirs(pod.cgroup)
    capsa(pod, "sandbox", "delete", "--force", "pod1")
    assert os.listdir(os.path.join(pod.root, "@sandbox")) == [] and cgroup_dirs(pod.cgroup) == []


def test_plain_create_does_not_load_the_sandbox_layer(bundle, pod):
    bundle.config.pop("annotations")
    bundle.config["linux"]["cgroupsPath"] = bundle.cgroup
    bundle.write()
    entries = {name for _, name in _imports_of(bundle, "create", "--bundle", bundle.path, "plain")}
    assert "capsa.launch" in entries and "capsa.sandbox" not in entries
    capsa(bundle, "delete", "--force", "plain")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _wait(check, timeout: float = 10) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
