"""The cgroup library a sandbox stands on: a parent cgroup with its members' child cgroups, and
ownership (a cgroup capsa joined is never removed by it), with real cgroups and processes.

Runs on this host (cgroup v1, hybrid) and in the guest tier (cgroup2 only: test_guest.py).
The sandbox layer does not exist yet: the parent is made through capsa.cgroups directly, and
a member is a real container whose linux.cgroupsPath is below it.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from capsa import cgroups, jsonfast
from capsa.cgroups import UNIFIED, layout

V2 = layout() == UNIFIED


@pytest.fixture
def parent_path():
    """A parent path of this test's own; whatever a failed test leaves there is removed."""
    path = f"/capsa-test.{os.getpid()}.sandbox{time.monotonic_ns()}"
    yield path
    leftover = cgroups.parent(path)
    if any(os.path.isdir(d) for d in leftover.paths.values()):
        leftover.created = set(leftover.paths)
        leftover.kill_all(9)
        leftover.destroy()


@pytest.fixture
def sleepers():
    started: list[subprocess.Popen] = []

    def start() -> int:
        started.append(subprocess.Popen(["sleep", "60"]))
        return started[-1].pid

    yield start
    for process in started:
        process.kill()
        process.wait()


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def limit_file(cgroup, name: str) -> str:
    """A v1 controller file ("pids.max" in the pids hierarchy), or the v2 one."""
    directory = cgroup.cgroup2_dir() if V2 else cgroup.path_for(name.split(".")[0])
    return read(f"{directory}/{name}")


def frozen(cgroup) -> bool:
    """Frozen in effect, by its own freezer or a parent's."""
    if V2:
        return "frozen 1" in read(f"{cgroup.cgroup2_dir()}/cgroup.events").splitlines()
    return read(f"{cgroup.path_for('freezer')}/freezer.state") == "FROZEN"


def dead(pid: int) -> bool:
    try:
        return read(f"/proc/{pid}/stat").rpartition(") ")[2][0] == "Z"
    except FileNotFoundError:
        return True


def wait_until(check, what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_parent_with_two_children(parent_path, sleepers):
    parent = cgroups.parent(parent_path)
    parent.create()
    assert parent.owned and parent.exists()
    parent.apply({"pids": {"limit": 50}}, with_devices=False)
    first, second = parent.child("m1"), parent.child("m2")
    for child in (first, second):
        child.create()
        assert child.owned
    pids = [sleepers(), sleepers()]
    first.add(pids[0])
    second.add(pids[1])
    assert first.pids() == [pids[0]] and second.pids() == [pids[1]]
    assert sorted(parent.pids()) == sorted(pids)  # the sandbox sees every member's processes
    # The parent's limits are the sandbox's; a child gets none of them written.
    assert limit_file(parent, "pids.max") == "50" and limit_file(first, "pids.max") == "max"

    parent.freeze()  # sandbox-wide pause
    assert frozen(first) and frozen(second)
    parent.thaw()
    assert not frozen(first) and not frozen(second)

    parent.kill_all(9)  # sandbox-wide kill
    wait_until(lambda: all(dead(p) for p in pids), "kill_all of the parent left a member's process")

    first.destroy()  # a member's delete removes its own cgroup only
    assert not any(os.path.exists(d) for d in first.paths.values())
    assert parent.exists() and second.exists()
    parent.destroy()  # the sandbox's teardown removes what is left of its children, and itself
    assert not any(os.path.exists(d) for d in list(second.paths.values()) + list(parent.paths.values()))


def test_joined_cgroup_is_left_by_destroy(parent_path):
    mine = cgroups.parent(parent_path)
    mine.create()
    joined = cgroups.parent(parent_path)  # the same path, made by "someone else" first
    joined.create()
    assert not joined.owned and joined.record()["cgroupOwned"] is False
    child = joined.child("m1")
    child.create()
    assert child.owned
    again = cgroups.from_record(joined.record())  # as a later call reads it from the state
    assert again.paths == joined.paths and not again.owned
    again.destroy()
    assert joined.exists() and child.exists()  # nothing below a joined cgroup is touched
    child.destroy()
    assert joined.exists() and not child.exists()
    mine.destroy()
    assert not any(os.path.exists(d) for d in mine.paths.values())


def test_member_container_in_a_parent(bundle, parent_path):
    """A member container below a sandbox's parent: its limits go on its own cgroup, and its
    delete leaves the parent."""
    parent = cgroups.parent(parent_path)
    parent.create()
    parent.apply({"pids": {"limit": 50}}, with_devices=False)
    bundle.config["linux"]["cgroupsPath"] = f"{parent_path}/member"
    bundle.config["linux"]["resources"] = {"pids": {"limit": 7}}
    bundle.set_args("sleep", "30")
    bundle.create("member")
    pid = jsonfast.loads(bundle.capsa("state", "member").stdout)["pid"]
    member = parent.child("member")
    assert pid in member.pids() and pid in parent.pids()
    assert limit_file(member, "pids.max") == "7" and limit_file(parent, "pids.max") == "50"
    if not V2:  # the member's device rules are on its cgroup; the parent's stay as they were
        assert "a *:* rwm" in read(f"{parent.path_for('devices')}/devices.list").splitlines()
        assert "a *:* rwm" not in read(f"{member.path_for('devices')}/devices.list").splitlines()
    bundle.capsa("delete", "--force", "member")
    assert not any(os.path.exists(d) for d in member.paths.values())
    assert parent.exists()
    parent.destroy()
    assert not any(os.path.exists(d) for d in parent.paths.values())


def test_container_recorded_by_the_previous_version_is_deleted(bundle):
    """A state record without cgroupDriver/cgroupOwned (written before capsa kept them) is read
    as it was then: the directories are capsa's, and delete removes them."""
    bundle.set_args("sleep", "30")
    bundle.create("old")
    path = os.path.join(bundle.root, "old", "state.json")
    with open(path) as f:
        record = jsonfast.loads(f.read())
    assert record["cgroupDriver"] == ("cgroupfs-v2" if V2 else "cgroupfs-v1") and record["cgroupOwned"] is True
    del record["cgroupDriver"], record["cgroupOwned"]
    with open(path, "w") as f:
        f.write(jsonfast.dumps(record))
    bundle.capsa("delete", "--force", "old")
    assert not any(os.path.exists(d) for d in record["cgroupPaths"].values())
