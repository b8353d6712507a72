"""What the init and the parent's mount preparation ask of the kernel, against the recording fake:
the fds that survive exec, detached and idmapped trees, the session keyring, rlimits."""

from __future__ import annotations

import posix

import pytest
from fake_kernel import fd_target, open_fds

from capsa import idmapped, init, linux, rootfs
from capsa.errors import EINVAL, ENOSYS, EPERM, ContainerStartError


@pytest.fixture
def inheritable(kernel, monkeypatch):
    """posix.set_inheritable recorded, not made: the test process's fds 3.. are pytest's."""
    monkeypatch.setattr(posix, "set_inheritable", lambda fd, value: kernel.note("set_inheritable", fd, value))


@pytest.mark.parametrize("keep,inherited", [(0, []), (2, [3, 4])])
def test_only_stdio_and_the_preserved_fds_survive_exec(kernel, inheritable, keep, inherited):
    init._prepare_fds(keep)
    assert kernel.calls_of("close_range_cloexec") == [(3 + keep,)]
    assert kernel.calls_of("set_inheritable") == [(fd, True) for fd in inherited]


def _joined_userns_spec(tmp_path, *mounts):
    """A container joining a user namespace by path, which idmap without mappings takes (no helper
    process to fork)."""
    userns = tmp_path / "userns"
    userns.write_text("")
    return {"mounts": list(mounts), "linux": {"namespaces": [{"type": "user", "path": str(userns)}]}}, str(userns)


def test_idmapped_trees_are_cloned_then_given_the_mapping(kernel, tmp_path):
    spec, userns = _joined_userns_spec(
        tmp_path,
        {"destination": "/a", "type": "bind", "source": "/srv/a", "options": ["bind", "idmap"]},
        {"destination": "/b", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/c", "type": "bind", "source": "/srv/c", "options": ["rbind", "ridmap"]},
    )
    kernel.answer("mount_setattr_idmap", *[lambda tree, ns, recursive: kernel.note("userns", fd_target(ns))] * 2)
    before = open_fds()
    trees = idmapped.prepare(spec)
    assert sorted(trees) == [0, 2]
    clone = linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC
    assert kernel.calls_of("open_tree") == [(linux.AT_FDCWD, "/srv/a", clone),
                                            (linux.AT_FDCWD, "/srv/c", clone | linux.AT_RECURSIVE)]
    assert [(tree, recursive) for tree, _, recursive in kernel.calls_of("mount_setattr_idmap")] == [
        (trees[0], False), (trees[2], True)]
    assert kernel.calls_of("userns") == [(userns,), (userns,)]
    assert open_fds() - before == set(trees.values())  # the user namespace's fd is closed, the trees kept


def test_a_refused_idmap_names_the_mount_and_closes_every_tree(kernel, tmp_path):
    spec, _ = _joined_userns_spec(
        tmp_path,
        {"destination": "/a", "type": "bind", "source": "/srv/a", "options": ["bind", "idmap"]},
        {"destination": "/b", "type": "bind", "source": "/srv/b", "options": ["bind", "idmap"]},
    )
    kernel.answer("mount_setattr_idmap", None)
    kernel.fail("mount_setattr_idmap", EINVAL)
    before = open_fds()
    with pytest.raises(ContainerStartError, match=r"^mounts\[1\]: cannot idmap /srv/b: .*its filesystem cannot be idmapped"):
        idmapped.prepare(spec)
    assert open_fds() == before


@pytest.mark.parametrize("options,recursive", [(["bind"], 0), (["rbind", "ro"], linux.AT_RECURSIVE)])
def test_a_detached_bind_source_is_cloned_and_made_a_slave(kernel, options, recursive):
    fd = rootfs.open_detached_source({"destination": "/d", "type": "bind", "source": "/srv/d", "options": options})
    assert kernel.calls_of("open_tree") == [(linux.AT_FDCWD, "/srv/d",
                                             linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | recursive)]
    assert kernel.calls_of("mount_setattr") == [(fd, "", linux.AT_EMPTY_PATH | recursive, 0, 0, linux.MS_SLAVE)]
    posix.close(fd)


def test_a_detached_source_that_cannot_be_made_a_slave_is_closed(kernel):
    kernel.fail("mount_setattr", EPERM)
    before = open_fds()
    with pytest.raises(PermissionError):
        rootfs.open_detached_source({"destination": "/d", "source": "/srv/d", "options": ["bind"]})
    assert open_fds() == before
    with pytest.raises(OSError, match="not a bind mount"):
        rootfs.open_detached_source({"destination": "/d", "type": "tmpfs", "source": "tmpfs"})


def test_a_kernel_without_keys_is_no_error_but_a_refused_keyring_is(kernel):
    kernel.fail("join_session_keyring", ENOSYS)
    init._new_session_keyring("c1")
    kernel.fail("join_session_keyring", EPERM)
    with pytest.raises(ContainerStartError, match="cannot create a session keyring: .*Operation not permitted"):
        init._new_session_keyring("c1")
    assert kernel.calls_of("join_session_keyring") == [("c1",), ("c1",)]


def test_rlimits_go_to_the_kernel_unlimited_as_rlim_infinity(kernel):
    init._apply_rlimits([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096},
                         {"type": "RLIMIT_CORE", "soft": 2**64 - 1, "hard": 2**63 - 1}])
    assert kernel.calls_of("setrlimit") == [(7, 1024, 4096), (4, linux.RLIM_INFINITY, linux.RLIM_INFINITY)]


def test_a_refused_rlimit_names_it_in_the_words_capsa_always_used():
    """A real setrlimit(2) that fails (soft above hard: EINVAL), worded as the resource module did."""
    with pytest.raises(ContainerStartError, match=r"^process.rlimits\[0\]: cannot set RLIMIT_CORE to 10:5: "
                                                  "current limit exceeds maximum limit$"):
        init._apply_rlimits([{"type": "RLIMIT_CORE", "soft": 10, "hard": 5}])
