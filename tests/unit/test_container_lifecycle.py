"""Container.create, start and delete, sequenced against a fake launch, a fake cgroup and the fake
kernel: a temporary state root, and a real `sleep` process standing for the container's init.
No root needed, no namespace or cgroup made.

The fake launch plays the init's side of the start protocol (it accepts on the start socket, reads
"S", and closes the connection as the init's exec would); what create cleans up after a failure,
what start records and the order delete does things in are checked from the outside: the state
root, the cgroup's record of calls, whether the init still lives.
"""

from __future__ import annotations

import _socket
import json
import os
import posix
import subprocess
import threading

import pytest

from capsa import cgroups, launch, procfs
from capsa import state as st
from capsa.container import Container
from capsa.errors import CapsaError, ContainerStartError, StateError
from capsa.specgen import default_spec


class FakeCgroup:
    """The container's cgroup: records what is asked of it; its processes are the fake init."""

    def __init__(self, log: list, init_pids: list):
        self.log = log
        self.init_pids = init_pids
        self.paths = {"": "/sys/fs/cgroup/capsa-unit-test"}
        self.placed_by_manager = False

    def create(self):
        self.log.append("create")

    def record(self):
        return {"cgroupPaths": self.paths}

    def pids(self):
        self.log.append("pids")
        return [pid for pid in self.init_pids if procfs.is_alive(pid, None)]

    def is_frozen(self):
        return False

    def kill_all(self, signal):
        self.log.append(("kill_all", signal))

    def destroy(self):
        # What delete must have done before: no process of the container is left alive.
        self.log.append(("destroy", [pid for pid in self.init_pids if procfs.is_alive(pid, None)]))


class FakeLaunch:
    """launch.start of a container's plan: a real `sleep` stands for the init, which then waits for
    `start` on the start socket (a thread here); `fail` makes the launch fail as an init reporting
    an error does."""

    def __init__(self):
        self.fail: BaseException | None = None
        self.start_reply = b""  # what the init answers to "S" before its exec closes the connection
        self.processes: list[subprocess.Popen] = []
        self.calls: list[tuple] = []
        self.killed: list[int] = []
        self._threads: list[threading.Thread] = []

    def start(self, plan):
        listen_fd = plan.init.listen_fd
        self.calls.append((plan.process["args"], plan.init.rootfs, plan.init.container_id, plan.cgroup))
        process = subprocess.Popen(["sleep", "60"])
        self.processes.append(process)
        for hook in (plan.make_cgroup, plan.cloned):  # the caller's work, as the real launch calls it
            if hook is not None:
                hook()
        if self.fail is not None:
            launch.kill_init(process.pid)  # as the real launch does before it raises
            raise self.fail
        listener = _socket.socket(fileno=posix.dup(listen_fd))  # create closes its own copy
        thread = threading.Thread(target=self._wait_for_start, args=(listener,), daemon=True)
        thread.start()
        self._threads.append(thread)
        return process.pid

    def _wait_for_start(self, listener):
        """The init's accept loop; closing the listener in the end resets a connection it missed."""
        try:
            connection, _ = listener._accept()
            try:
                if posix.read(connection, 1) == b"S":
                    posix.write(connection, self.start_reply)
            finally:
                posix.close(connection)  # the init's exec closes it: EOF tells `start` it happened
        finally:
            listener.close()

    def kill_init(self, pid, *args, **kwargs):
        self.killed.append(pid)
        return real_kill_init(pid, *args, **kwargs)

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


real_kill_init = launch.kill_init


@pytest.fixture
def world(kernel, monkeypatch, tmp_path):
    """A bundle, a state root, the fake launch and the fake cgroups (one log for all of them)."""
    log: list = []
    fake = FakeLaunch()
    init_pids: list[int] = []

    def new_cgroup(*args, **kwargs):
        log.append("cgroup")
        return FakeCgroup(log, init_pids)

    def start(plan):
        pid = fake.start(plan)
        init_pids.append(pid)
        return pid

    monkeypatch.setattr(launch, "start", start)
    monkeypatch.setattr(launch, "kill_init", fake.kill_init)
    monkeypatch.setattr(cgroups, "for_spec", new_cgroup)
    monkeypatch.setattr(cgroups, "from_record", lambda record: FakeCgroup(log, init_pids))
    monkeypatch.setattr(posix, "geteuid", lambda: 0)  # root's checks and cgroups, not rootless ones
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    spec = default_spec(cgroup_namespace=False)
    spec["process"].update(terminal=False, args=["true"])
    (bundle / "config.json").write_text(json.dumps(spec))
    world = type("World", (), {})()
    world.root, world.bundle, world.launch, world.log = str(tmp_path / "state"), str(bundle), fake, log
    yield world
    fake.stop()


def _create(world, container_id="c1"):
    return Container.create(world.root, container_id, world.bundle, rootless_cgroups=False)


def _alive(pid):
    return procfs.is_alive(pid, None)


def test_create_records_a_created_container_whose_init_waits(world):
    container = _create(world)
    pid = world.launch.processes[0].pid
    assert world.launch.calls == [(["true"], os.path.join(world.bundle, "rootfs"), "c1", world.launch.calls[0][3])]
    again = Container.load(world.root, "c1")
    assert again.state()["status"] == st.CREATED and again.pid == pid == container.pid
    assert again.record["cgroupPaths"] == {"": "/sys/fs/cgroup/capsa-unit-test"}
    assert os.path.exists(os.path.join(again.directory, st.START_SOCKET))
    assert "destroy" not in str(world.log)


def test_a_failed_launch_leaves_neither_state_nor_cgroup(world):
    world.launch.fail = ContainerStartError("cannot mount proc: Permission denied")
    with pytest.raises(ContainerStartError, match="cannot mount proc"):
        _create(world)
    assert world.log == ["cgroup", "create", ("destroy", [])]
    assert os.listdir(world.root) == []
    assert not _alive(world.launch.processes[0].pid)
    world.launch.fail = None
    _create(world)  # the id is free again


def test_a_failure_after_the_launch_kills_the_init_and_removes_everything(world, monkeypatch):
    """The init is up and waits for start when the last state write fails: left alive, it would
    wait for ever holding the caller's stdio."""
    write = st.StateStore.write

    def write_failing_once_created(self, container_id, record, exchange=None):
        if record.get("status") == st.CREATED:
            raise OSError(28, "No space left on device")
        write(self, container_id, record, exchange)

    monkeypatch.setattr(st.StateStore, "write", write_failing_once_created)
    with pytest.raises(OSError, match="No space left"):
        _create(world)
    pid = world.launch.processes[0].pid
    assert world.launch.killed == [pid] and not _alive(pid)
    assert world.log == ["cgroup", "create", ("destroy", [])]
    assert os.listdir(world.root) == []


def test_start_releases_the_init_and_records_running(world):
    _create(world)
    container = Container.load(world.root, "c1")
    container.start()
    assert Container.load(world.root, "c1").state()["status"] == st.RUNNING
    assert not os.path.exists(os.path.join(container.directory, st.START_SOCKET))
    with pytest.raises(StateError, match="cannot start an already running container"):
        Container.load(world.root, "c1").start()


def test_a_start_the_init_refuses_leaves_the_container_created(world):
    world.launch.start_reply = b"error exec: \"true\": permission denied\n"
    _create(world)
    with pytest.raises(ContainerStartError, match='^exec: "true": permission denied$'):
        Container.load(world.root, "c1").start()
    assert Container.load(world.root, "c1").state()["status"] == st.CREATED


def test_delete_of_a_created_container_needs_force_and_changes_nothing_without(world):
    _create(world)
    pid = world.launch.processes[0].pid
    with pytest.raises(StateError, match="cannot delete container c1 that is not stopped: created"):
        Container.load(world.root, "c1").delete()
    assert _alive(pid) and Container.load(world.root, "c1").state()["status"] == st.CREATED
    assert not any("destroy" in str(entry) for entry in world.log)


def test_delete_force_kills_the_init_then_removes_its_cgroup_then_its_state(world):
    _create(world)
    container = Container.load(world.root, "c1")
    container.start()
    pid = container.pid
    Container.load(world.root, "c1").delete(force=True)
    assert not _alive(pid)
    assert world.log[-2:] == ["pids", ("destroy", [])]  # the init was dead when its cgroup went
    assert os.listdir(world.root) == []
    with pytest.raises(CapsaError, match="container c1 does not exist"):
        Container.load(world.root, "c1")


def test_delete_of_a_stopped_container_removes_its_cgroup_and_state(world):
    _create(world)
    process = world.launch.processes[0]
    process.kill()
    process.wait()
    container = Container.load(world.root, "c1")
    assert container.state()["status"] == st.STOPPED
    container.delete()
    assert world.log[-1] == ("destroy", []) and "pids" not in world.log
    assert os.listdir(world.root) == []
