"""launch's kernel sequencing against the recording fake kernel: the order namespaces are entered
in, forking into a cgroup and its fallbacks, and what a failed launch cleans up. No root needed."""

from __future__ import annotations

import _socket
import _struct
import os
import posix
import signal
import subprocess
import sys

import pytest
from fake_kernel import fd_target, open_fds

from capsa import init, launch, linux
from capsa.errors import EINVAL, ENOSYS, EPERM, ContainerStartError
from capsa.linux import process as kernel_process


class FakeChannel:
    """The parent's side of the sync channel, scripted: "ok" to "userns"."""

    def __init__(self, kernel):
        self.kernel = kernel

    def send(self, kind, payload=""):
        self.kernel.note(f"send {kind}")

    def expect(self, kind):
        self.kernel.note(f"expect {kind}")
        return ""


def _plan(entries):
    """linux.namespaces entries as a launch plan has them (plan_for_container's conversion)."""
    return [launch.Namespace(ns["type"], path=ns.get("path")) for ns in entries]


def _namespace_files(tmp_path, *kinds):
    """Stand-ins for /proc/PID/ns/* files: what matters is when they are opened."""
    paths = {}
    for kind in kinds:
        path = tmp_path / f"ns-{kind}"
        path.write_text(kind)
        paths[kind] = str(path)
    return paths


def _record_setns_by_path(kernel, paths):
    """setns records the namespace file its fd is open on; the first setns makes every path
    unreachable, as setns(mnt) would (the paths then resolve in the container's mounts)."""
    def setns(fd, nstype):
        for path in paths.values():
            if os.path.exists(path):
                os.rename(path, path + ".gone")
        return None

    def answer(fd, nstype):
        kernel.note("setns-target", os.path.basename(fd_target(fd)).removesuffix(".gone"), nstype)
        return setns(fd, nstype)

    kernel.answer("setns", *[answer] * len(paths))


def test_joined_namespaces_user_first_mount_last_paths_opened_before_any_setns(kernel, tmp_path):
    paths = _namespace_files(tmp_path, "mount", "network", "user", "ipc")
    namespaces = [{"type": "mount", "path": paths["mount"]}, {"type": "network", "path": paths["network"]},
                  {"type": "pid"}, {"type": "user", "path": paths["user"]}, {"type": "ipc", "path": paths["ipc"]},
                  {"type": "uts"}, {"type": "cgroup"}]
    _record_setns_by_path(kernel, paths)
    before = open_fds()
    launch._enter_namespaces(_plan(namespaces), FakeChannel(kernel), None)
    joined = [(args[0], args[1]) for args in kernel.calls_of("setns-target")]
    assert joined == [("ns-user", linux.CLONE_NEWUSER), ("ns-network", linux.CLONE_NEWNET),
                      ("ns-ipc", linux.CLONE_NEWIPC), ("ns-mount", linux.CLONE_NEWNS)]
    # The new ones in one unshare after the joins; the cgroup namespace is left to the init.
    assert kernel.calls_of("unshare") == [(linux.CLONE_NEWPID | linux.CLONE_NEWUTS,)]
    assert kernel.names().index("unshare") > max(i for i, name in enumerate(kernel.names()) if name == "setns")
    assert kernel.calls[-1].name == "prctl" and kernel.calls[-1].args == (linux.PR_SET_DUMPABLE, 0)
    assert open_fds() == before  # every namespace fd closed


def test_a_new_user_namespace_is_mapped_before_the_other_namespaces_are_entered(kernel, tmp_path, monkeypatch):
    paths = _namespace_files(tmp_path, "network")
    monkeypatch.setattr(posix, "geteuid", lambda: 0)
    monkeypatch.setattr(posix, "setresgid", lambda *ids: kernel.note("setresgid", *ids))
    monkeypatch.setattr(posix, "setresuid", lambda *ids: kernel.note("setresuid", *ids))
    _record_setns_by_path(kernel, paths)
    launch._enter_namespaces(_plan([{"type": "user"}, {"type": "network", "path": paths["network"]}, {"type": "mount"}]),
                             FakeChannel(kernel), None)
    assert [name for name in kernel.names() if name != "setns-target"] == [
        "unshare", "send userns", "expect ok", "setresgid", "setresuid", "setns", "unshare", "prctl"]
    assert kernel.calls_of("unshare") == [(linux.CLONE_NEWUSER,), (linux.CLONE_NEWNS,)]
    assert kernel.calls_of("setresuid") == [(0, 0, 0)]


def test_rootless_child_stays_dumpable_only_while_its_maps_are_written(kernel, monkeypatch):
    monkeypatch.setattr(posix, "geteuid", lambda: 1000)
    monkeypatch.setattr(posix, "setresgid", lambda *ids: None)
    monkeypatch.setattr(posix, "setresuid", lambda *ids: None)
    launch._enter_namespaces(_plan([{"type": "user"}, {"type": "mount"}]), FakeChannel(kernel), None)
    assert kernel.names() == ["unshare", "prctl", "send userns", "expect ok", "unshare", "prctl"]
    assert kernel.calls_of("prctl") == [(linux.PR_SET_DUMPABLE, 1), (linux.PR_SET_DUMPABLE, 0)]


def test_born_in_its_user_namespace_a_roots_child_waits_for_the_maps_it_did_not_ask_for(kernel, monkeypatch):
    monkeypatch.setattr(posix, "setresgid", lambda *ids: kernel.note("setresgid", *ids))
    monkeypatch.setattr(posix, "setresuid", lambda *ids: kernel.note("setresuid", *ids))
    launch._finish_born_namespaces(_plan([{"type": "user"}, {"type": "pid"}]), FakeChannel(kernel), True)
    assert kernel.names() == ["expect ok", "setresgid", "setresuid", "prctl"]
    assert kernel.calls_of("prctl") == [(linux.PR_SET_DUMPABLE, 0)]  # never dumpable


def test_born_in_its_user_namespace_a_rootless_child_asks_for_its_maps_dumpable(kernel, monkeypatch):
    monkeypatch.setattr(posix, "setresgid", lambda *ids: None)
    monkeypatch.setattr(posix, "setresuid", lambda *ids: None)
    launch._finish_born_namespaces(_plan([{"type": "user"}, {"type": "pid"}]), FakeChannel(kernel), False)
    assert kernel.names() == ["prctl", "send userns", "expect ok", "prctl"]
    assert kernel.calls_of("prctl") == [(linux.PR_SET_DUMPABLE, 1), (linux.PR_SET_DUMPABLE, 0)]


def test_only_root_maps_unasked_and_only_a_new_user_namespace(monkeypatch):
    monkeypatch.setattr(posix, "geteuid", lambda: 0)
    assert launch._maps_unasked(_init_plan([{"type": "user"}, {"type": "pid"}]))
    assert not launch._maps_unasked(_init_plan([{"type": "pid"}]))
    monkeypatch.setattr(posix, "geteuid", lambda: 1000)
    assert not launch._maps_unasked(_init_plan([{"type": "user"}, {"type": "pid"}]))


def test_a_refused_user_namespace_is_a_clear_error(kernel, monkeypatch):
    monkeypatch.setattr(posix, "geteuid", lambda: 0)
    monkeypatch.setattr("capsa.rootless.running_in_userns", lambda: False)
    kernel.fail("unshare", EPERM)
    with pytest.raises(ContainerStartError, match="cannot create a user namespace: unshare: Operation not permitted$"):
        launch._enter_namespaces(_plan([{"type": "user"}]), FakeChannel(kernel), None)


def test_a_refused_join_names_the_namespace_and_closes_every_fd(kernel, tmp_path):
    paths = _namespace_files(tmp_path, "network", "ipc")
    kernel.fail("setns", EINVAL)
    with pytest.raises(ContainerStartError, match=f"cannot join network namespace {paths['network']}: setns: Invalid"):
        launch._enter_namespaces(_plan([{"type": "network", "path": paths["network"]}, {"type": "ipc", "path": paths["ipc"]}]),
                                 FakeChannel(kernel), None)
    assert kernel.names() == ["setns"]  # nothing entered after the refusal


# -- fork into the container's cgroup --------------------------------------------------------------
class FakeCgroup:
    def __init__(self, cgroup2_dir):
        self._cgroup2_dir = cgroup2_dir

    def cgroup2_dir(self):
        return self._cgroup2_dir

    def self_join_files(self, with_cgroup2=True):
        return ["v1/tasks"] + (["cgroup2/cgroup.procs"] if with_cgroup2 else [])


@pytest.fixture
def fork(kernel, monkeypatch):
    """posix.fork replaced: it records itself and returns 4242, as in the parent."""
    def fake_fork():
        kernel.note("fork")
        return 4242

    monkeypatch.setattr(posix, "fork", fake_fork)


def test_born_in_the_cgroup2_directory_the_child_joins_only_the_v1_ones(kernel, fork, tmp_path):
    kernel.answer("clone_child", lambda fd, flags: kernel.note("cgroup-fd", fd_target(fd), flags) or 77)
    before = open_fds()
    assert launch._fork_into(FakeCgroup(str(tmp_path))) == (77, ["v1/tasks"], False)
    assert kernel.names() == ["thread_count", "clone_child", "cgroup-fd"]
    assert kernel.calls_of("cgroup-fd") == [(str(tmp_path), 0)]
    assert open_fds() == before  # the directory's fd is closed


def test_without_clone3_into_a_cgroup_the_child_forks_and_joins_cgroup2_itself(kernel, fork, tmp_path):
    # The fake's default answer for clone_child is None: not possible on this kernel or libc.
    assert launch._fork_into(FakeCgroup(str(tmp_path))) == (4242, ["v1/tasks", "cgroup2/cgroup.procs"], False)
    assert kernel.names() == ["thread_count", "clone_child", "fork"]


def test_without_cgroup2_or_a_cgroup_plain_fork(kernel, fork):
    assert launch._fork_into(FakeCgroup(None)) == (4242, ["v1/tasks", "cgroup2/cgroup.procs"], False)
    assert launch._fork_into(None) == (4242, [], False)
    assert kernel.names() == ["thread_count", "fork", "thread_count", "fork"]


NEW_USER_PID_MOUNT = linux.CLONE_NEWUSER | linux.CLONE_NEWPID | linux.CLONE_NEWNS


def test_born_in_its_namespaces_and_cgroup_with_one_clone(kernel, fork, tmp_path):
    kernel.answer("clone_child", lambda fd, flags: kernel.note("clone", fd_target(fd), flags) or 77)
    assert launch._fork_into(FakeCgroup(str(tmp_path)), NEW_USER_PID_MOUNT) == (77, ["v1/tasks"], True)
    assert kernel.calls_of("clone") == [(str(tmp_path), NEW_USER_PID_MOUNT)]


def test_born_in_its_namespaces_without_a_cgroup(kernel, fork):
    kernel.answer("clone_child", lambda fd, flags: kernel.note("clone", fd, flags) or 77)
    assert launch._fork_into(None, NEW_USER_PID_MOUNT) == (77, [], True)
    assert kernel.calls_of("clone") == [(None, NEW_USER_PID_MOUNT)]


def test_namespaces_the_kernel_refuses_at_clone_are_made_by_the_child(kernel, fork, tmp_path):
    """The child's own unshare() then says why, as it always did (a refused user namespace's hint)."""
    kernel.answer("clone_child", OSError(EPERM, "clone3: Operation not permitted"),
                  lambda fd, flags: kernel.note("clone", flags) or 77)
    assert launch._fork_into(FakeCgroup(str(tmp_path)), NEW_USER_PID_MOUNT) == (77, ["v1/tasks"], False)
    assert kernel.calls_of("clone") == [(0,)]


def test_a_threaded_caller_is_never_born_in_namespaces(kernel, fork):
    kernel.answer("thread_count", 2)
    assert launch._fork_into(None, NEW_USER_PID_MOUNT) == (4242, [], False)
    assert "clone_child" not in kernel.names()


def _init_plan(namespaces, cgroup=None):
    spec = {"process": {"args": ["true"], "cwd": "/"}, "linux": {"namespaces": namespaces}}
    return launch.plan_for_container(spec=spec, rootfs="/r", container_id="c", state={}, listen_fd=9, cgroup=cgroup)


def test_an_init_whose_namespaces_are_all_new_is_born_in_them_but_the_cgroup_namespace():
    plan = _init_plan([{"type": t} for t in ("user", "pid", "mount", "network", "ipc", "uts", "cgroup")])
    assert launch._born_namespaces(plan) == (linux.CLONE_NEWUSER | linux.CLONE_NEWPID | linux.CLONE_NEWNS
                                             | linux.CLONE_NEWNET | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS)


@pytest.mark.parametrize("namespaces", [
    [{"type": "pid"}, {"type": "network", "path": "/proc/1/ns/net"}],  # one joined
    [{"type": "pid"}, {"type": "time"}],  # offsets are written before a process is in it
    [],
])
def test_an_init_is_not_born_in_namespaces_it_joins_or_must_prepare(namespaces):
    assert launch._born_namespaces(_init_plan(namespaces)) == 0


@pytest.mark.parametrize("error,falls_back", [(ENOSYS, True), (EINVAL, True), (7, True), (EPERM, False)])
def test_clone3_falls_back_to_fork_only_where_the_kernel_lacks_it(monkeypatch, error, falls_back):
    """ENOSYS (no clone3), E2BIG and EINVAL (no CLONE_INTO_CGROUP) mean an older kernel; any
    other refusal is an error."""
    made = []
    monkeypatch.setattr(kernel_process, "_own_tid_address", lambda: 0x7F0000001000)
    monkeypatch.setattr(kernel_process, "_clone3", lambda number, args: made.append((number, args)) or (-1, error))
    if falls_back:
        assert linux.clone_child(9) is None
    else:
        with pytest.raises(OSError, match="clone3"):
            linux.clone_child(9)
    ((number, args),) = made
    flags, _, child_tid, _, exit_signal, *_, cgroup = _struct.unpack("11Q", args)
    assert number == 435 and cgroup == 9 and exit_signal == signal.SIGCHLD and child_tid == 0x7F0000001000
    assert flags == kernel_process.CLONE_INTO_CGROUP | kernel_process.CLONE_CHILD_SETTID


def test_clone3_with_namespaces_the_kernel_refuses_is_an_error(monkeypatch):
    """EINVAL with namespaces (and no cgroup) is not an old kernel's: the caller is told."""
    monkeypatch.setattr(kernel_process, "_own_tid_address", lambda: 0x7F0000001000)
    monkeypatch.setattr(kernel_process, "_clone3", lambda number, args: (-1, EINVAL))
    with pytest.raises(OSError, match="clone3: Invalid argument"):
        linux.clone_child(None, linux.CLONE_NEWUSER)


def test_clone3_is_not_made_by_a_process_with_other_threads(monkeypatch):
    """A raw clone3 would copy locks other threads hold into the child (see linux/process.py)."""
    real_function = kernel_process.function

    def function(name, *args, **kwargs):
        if name == "syscall":
            return lambda *call_args: pytest.fail("clone3 made with another thread running")
        return real_function(name, *args, **kwargs)

    monkeypatch.setattr(kernel_process, "_own_tid_address", lambda: 0x7F0000001000)
    monkeypatch.setattr(kernel_process, "function", function)
    monkeypatch.setattr(kernel_process, "thread_count", lambda: 2)
    assert linux.clone_child(9) is None


def test_a_threaded_caller_imports_the_childs_modules_before_it_forks(kernel, monkeypatch, tmp_path):
    """A module another thread is importing when the fork happens stays locked in the child."""
    (tmp_path / "capsa_child_import_probe.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "capsa_child_import_probe", raising=False)
    monkeypatch.setattr(launch, "_CHILD_IMPORTS", ("capsa_child_import_probe",))
    monkeypatch.setattr(posix, "fork", lambda: kernel.note("fork", "capsa_child_import_probe" in sys.modules) or 4242)
    kernel.answer("thread_count", 2)
    assert launch._fork_into(None) == (4242, [], False)
    assert kernel.calls_of("fork") == [(True,)]
    sys.modules.pop("capsa_child_import_probe", None)


def test_clone3_is_not_tried_where_glibc_keeps_the_tid_elsewhere(monkeypatch):
    monkeypatch.setattr(kernel_process, "_own_tid_address", lambda: None)
    monkeypatch.setattr(kernel_process, "_clone3", lambda number, args: pytest.fail("clone3 without the tid address"))
    assert linux.clone_child(9) is None


def test_the_tid_address_is_found_on_this_host():
    """The check clone_child relies on holds on the glibc the tests run with (x86-64, 2.34+)."""
    if os.uname().machine != "x86_64":
        pytest.skip("the offset is x86-64 glibc's")
    assert kernel_process._own_tid_address() is not None


# -- a launch that fails kills what it started -----------------------------------------------------
class FakeInit:
    """posix.fork replaced by a real `sleep` process standing for the child (and the init), and
    the child's end of the sync channel kept here: the init's messages are written into it, then
    it is closed if the child is to exit."""

    def __init__(self):
        self.script: list[str] = []
        self.exits = False
        self.started: list[subprocess.Popen] = []
        self.ends: list[int] = []

    def fork(self) -> int:
        process = subprocess.Popen(["sleep", "60"])
        self.started.append(process)
        posix.write(self.ends[-1], "".join(f"{line}\n" for line in self.script).replace("{pid}", str(process.pid)).encode())
        if self.exits:
            posix.close(self.ends.pop())
        return process.pid


@pytest.fixture
def fake_init(kernel, monkeypatch):
    init = FakeInit()
    real_socketpair = _socket.socketpair

    def socketpair(*args):
        parent, child = real_socketpair(*args)
        init.ends.append(posix.dup(child.fileno()))
        return parent, child

    monkeypatch.setattr(_socket, "socketpair", socketpair)
    monkeypatch.setattr(posix, "fork", init.fork)
    yield init
    for process in init.started:
        process.kill()
        process.wait()
    for fd in init.ends:
        posix.close(fd)


def _spawn(tmp_path):
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "start.sock"))
    spec = {"process": {"args": ["true"], "cwd": "/"}, "linux": {"namespaces": [{"type": "mount"}]}}
    plan = launch.plan_for_container(spec=spec, rootfs=str(tmp_path), container_id="c1", state={"id": "c1"},
                                     listen_fd=listener.fileno(), cgroup=None)
    try:
        return launch.start(plan)
    finally:
        listener.close()


def _dead(pid):
    from capsa.procfs import is_alive

    return not is_alive(pid, None)


def test_an_init_error_kills_the_init_and_leaves_no_fd_of_ours(kernel, fake_init, tmp_path):
    fake_init.script += ["pid {pid}", "error cannot mount proc: Permission denied"]
    init.trampoline_fd()  # the process's own sealed trampoline, made once and kept (capsa.trampoline)
    before = open_fds()
    with pytest.raises(ContainerStartError, match="^cannot mount proc: Permission denied$"):
        _spawn(tmp_path)
    assert _dead(fake_init.started[0].pid)
    assert open_fds() - before == set(fake_init.ends)  # only the fake child's end of the channel


def test_a_child_that_exits_before_reporting_is_killed_and_reaped(kernel, fake_init, tmp_path):
    fake_init.exits = True
    with pytest.raises(ContainerStartError, match="init exited before it was ready"):
        _spawn(tmp_path)
    assert _dead(fake_init.started[0].pid)
