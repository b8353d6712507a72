"""The create sequence (capsa.create): validate, allocate, launch, commit, and one clean-up,
abandon, for a failure at any step. A failure injected at each step must leave no record, no
cgroup capsa made, and no process: the launch step is a fake that starts a real process (the
"init"), the cgroup a fake driver that makes plain directories under a temp directory."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from capsa import create, procfs
from capsa import state as st
from capsa.cgroups.common import Cgroup
from capsa.checkpoint import CriuOptions, Restoring, restore
from capsa.create import CreateConfig
from capsa.errors import CapsaError, ConfigError
from capsa.specgen import default_spec


class FakeCgroup(Cgroup):
    """The driver interface over plain directories: create makes them (owned) or joins them."""

    driver = "fake"

    def __init__(self, paths, created=()):
        super().__init__(paths, created)
        self.applied = []

    def create(self, ignore_denied=False):
        for controllers, directory in self.paths.items():
            if not os.path.isdir(directory):
                os.makedirs(directory)
                self.created.add(controllers)
        return []

    def add(self, pid):
        pass

    def self_join_files(self, with_cgroup2=True):
        return []

    def apply(self, resources, devices=None, rootless=False, warn=None, with_devices=True):
        self.applied.append(resources)

    def stats(self):
        return {}

    def oom_watch(self):
        return None

    def path_for(self, controller):
        return self.paths.get("")

    def pids(self):
        return []

    def can_freeze(self):
        return False

    def is_frozen(self):
        return False

    def freeze(self):
        pass

    def thaw(self):
        pass


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "bundle" / "rootfs").mkdir(parents=True)
    return tmp_path / "bundle"


@pytest.fixture
def store(tmp_path):
    return st.StateStore(str(tmp_path / "state"))


@pytest.fixture
def parent(tmp_path):
    """A sandbox's parent cgroup: the container's is its child, tmp/cgroups/<id>."""
    return FakeCgroup({"": str(tmp_path / "cgroups")})


def _prepared(bundle, parent, **config):
    # A rootless spec (a user namespace mapping the caller) validates whoever runs the tests.
    spec = default_spec(rootless=True)
    return create.validate(CreateConfig("c1", str(bundle), spec=spec, cgroup_parent=parent, rootless_cgroups=False,
                                        **config))


class Init:
    """A fake launch step: starts a real process as the init and records what it saw."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.process = None
        self.seen = None

    def __call__(self, allocation):
        self.seen = allocation.store.read(allocation.id)  # what the record said during the launch
        self.process = subprocess.Popen(["sleep", "60"])
        allocation.pid = self.process.pid
        self.start_time = procfs.start_time(self.process.pid)
        if self.fail:
            raise CapsaError("the init failed")

    def alive(self) -> bool:
        return procfs.is_alive(self.process.pid, self.start_time)


def _nothing_left(store, tmp_path):
    assert not os.path.exists(store.path("c1")), "the record remains"
    assert not os.path.exists(tmp_path / "cgroups" / "c1"), "the cgroup capsa made remains"


def test_a_create_commits_created_with_the_init_and_the_cgroup_it_made(bundle, store, parent, tmp_path):
    init = Init()
    allocation = create.create(store, _prepared(bundle, parent), init)
    try:
        assert init.seen["status"] == st.CREATING and init.seen["cgroupOwned"] is True
        record = store.read("c1")
        assert record["status"] == st.CREATED and record["pid"] == init.process.pid
        assert record["pidStartTime"] == init.start_time and "creator" not in record
        assert record["cgroupPaths"] == {"": str(tmp_path / "cgroups" / "c1")} and record["cgroupOwned"] is True
        assert store.read_config("c1")["process"]["args"] == ["sh"]
        assert allocation.lock is None
        with store.lock("c1"):  # released by commit
            pass
    finally:
        init.process.kill()
        init.process.wait()


def test_a_failure_in_validate_touches_nothing(bundle, store, parent, tmp_path):
    (bundle / "rootfs").rmdir()
    with pytest.raises(ConfigError, match="root.path"):
        _prepared(bundle, parent)
    assert not os.path.exists(store.root)
    assert not os.path.exists(tmp_path / "cgroups")


def test_a_failure_in_allocate_leaves_nothing(bundle, store, parent, tmp_path, monkeypatch):
    prepared = _prepared(bundle, parent)

    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "write", no_space)  # the record, after the cgroup and the config
    init = Init()
    with pytest.raises(OSError, match="No space"):
        create.create(store, prepared, init)
    assert init.process is None
    _nothing_left(store, tmp_path)


def test_a_failure_in_launch_kills_the_init_and_leaves_nothing(bundle, store, parent, tmp_path):
    init = Init(fail=True)
    with pytest.raises(CapsaError, match="the init failed"):
        create.create(store, _prepared(bundle, parent), init)
    assert not init.alive()
    _nothing_left(store, tmp_path)


def test_a_failure_in_commit_kills_the_init_and_leaves_nothing(bundle, store, parent, tmp_path, monkeypatch):
    prepared = _prepared(bundle, parent)
    writes = []
    real_write = store.write

    def write(container_id, record, exchange=None):
        writes.append(record["status"])
        if record["status"] == st.CREATED:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(container_id, record, exchange)

    monkeypatch.setattr(store, "write", write)
    init = Init()
    with pytest.raises(OSError, match="No space"):
        create.create(store, prepared, init)
    assert writes == [st.CREATING, st.CREATED]
    assert not init.alive()
    _nothing_left(store, tmp_path)


def test_a_cgroup_that_was_there_is_joined_and_left(bundle, store, parent, tmp_path):
    (tmp_path / "cgroups" / "c1").mkdir(parents=True)
    init = Init(fail=True)
    with pytest.raises(CapsaError):
        create.create(store, _prepared(bundle, parent), init)
    assert init.seen["cgroupOwned"] is False
    assert os.path.isdir(tmp_path / "cgroups" / "c1")
    assert not os.path.exists(store.path("c1"))


def test_the_id_is_taken_once(bundle, store, parent):
    init = Init()
    create.create(store, _prepared(bundle, parent), init)
    try:
        from capsa.errors import ExistsError

        with pytest.raises(ExistsError):
            create.create(store, _prepared(bundle, parent), Init())
        assert store.read("c1")["pid"] == init.process.pid  # the first one's record is untouched
    finally:
        init.process.kill()
        init.process.wait()


def test_restore_goes_through_the_same_steps(bundle, store, parent, tmp_path, monkeypatch):
    """CRIU's restore is restore's launch step: its failure is abandoned like create's."""
    from capsa import checkpoint

    started = []

    def criu_fails(allocation, restoring, criu, opts):
        started.append(allocation.store.read(allocation.id)["status"])
        raise checkpoint.CriuError("criu restore failed")

    monkeypatch.setattr(checkpoint, "_restore_into", criu_fails)
    with pytest.raises(checkpoint.CriuError):
        restore(store, Restoring(_prepared(bundle, parent), []), "criu", CriuOptions(image_path=str(tmp_path)))
    assert started == [st.CREATING]
    _nothing_left(store, tmp_path)


def test_a_restored_container_commits_running(bundle, store, parent, tmp_path, monkeypatch):
    from capsa import checkpoint

    process = subprocess.Popen(["sleep", "60"])
    monkeypatch.setattr(checkpoint, "_restore_into", lambda allocation, restoring, criu, opts: process.pid)
    try:
        restore(store, Restoring(_prepared(bundle, parent), []), "criu", CriuOptions(image_path=str(tmp_path)))
        record = store.read("c1")
        assert record["status"] == st.RUNNING and record["pid"] == process.pid
        assert record["restoredFrom"] == str(tmp_path)
    finally:
        process.kill()
        process.wait()


def test_config_keys_are_typed(bundle):
    with pytest.raises(TypeError):
        CreateConfig("c1", str(bundle), preserve_fds=1)  # the CLI's name: inherited_fds is the library's


def test_the_inherited_fds_must_be_open(bundle, parent):
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    count = fd - 2  # the range 3 .. fd ends with a closed fd (a finalizer may close a lower one meanwhile)
    with pytest.raises(CapsaError, match=rf"fd \d+ is not open \(the container is to inherit fds 3 to {fd}; each must be open\)"):
        _prepared(bundle, parent, inherited_fds=count)


def test_a_member_joins_the_namespaces_it_is_given(bundle, parent):
    prepared = _prepared(bundle, parent, join_namespaces={"network": "/proc/1/ns/net"})
    namespaces = prepared.spec["linux"]["namespaces"]
    assert {"type": "network", "path": "/proc/1/ns/net"} in namespaces
    assert prepared.cgroup.paths == {"": os.path.join(parent.paths[""], "c1")}


def test_the_short_form_of_create_takes_only_the_config_keywords(tmp_path, bundle):
    from capsa.container import Container

    with pytest.raises(TypeError):
        Container.create(str(tmp_path / "state"), "c1", str(bundle), preserve_fds=1)
    with pytest.raises(TypeError):
        Container.create(str(tmp_path / "state"), CreateConfig("c1", str(bundle)), str(bundle))
    assert not os.path.exists(tmp_path / "state")
