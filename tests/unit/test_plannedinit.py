"""capsa.plannedinit: the Builder's layout and fd numbers, the machine code run on small plans
built by hand (a real exec from a sealed memfd, as capsa.launch does it), the cache of plans by
spec, the error messages, and which launches may be planned. x86-64 only, as the program."""

from __future__ import annotations

import _struct
import fcntl
import os
import socket
import subprocess

import pytest
from machine_code import assembled, needs_gnu_as

from capsa import plannedinit
from capsa.plannedinit import (
    PLAN_ADDRESS,
    PLAN_MAX,
    STEP,
    UNEXPECTED,
    Builder,
    Planned,
)

pytestmark = pytest.mark.skipif(not plannedinit.supported(), reason="the planned init is x86-64 machine code")

ENOENT, EBADF, EACCES, ENOTDIR, EINVAL = 2, 9, 13, 20, 22
AT_FDCWD = -100


@needs_gnu_as
def test_the_machine_code_is_plannedinit_s_assembled(tmp_path):
    assert assembled(plannedinit, "plannedinit.s", "src/capsa", tmp_path) == plannedinit._CODE


# -- the Builder ---------------------------------------------------------------------------------
def child_builder() -> Builder:
    """As build() makes it: fds 0-2 and the channel open; the program closes the plan's fd."""
    return Builder({0, 1, 2, plannedinit.CHANNEL_FD})


def test_fd_numbers_are_the_lowest_free_ones_and_closes_free_them():
    b = child_builder()
    assert b.open("openat", AT_FDCWD, b.string("/"), 0, why="a") == 3
    assert b.open("openat", AT_FDCWD, b.string("/"), 0, why="b") == 5
    assert b.open("openat", AT_FDCWD, b.string("/"), 0, why="c") == 6
    b.close(3)
    b.close(6)
    assert b.open("openat", AT_FDCWD, b.string("/"), 0, why="d") == 3
    assert b.open("openat", AT_FDCWD, b.string("/"), 0, why="e") == 6
    wants = [(step[1] & plannedinit.EXACT, step[4]) for step in b.steps if step[2] == plannedinit._NR["openat"]]
    assert wants == [(plannedinit.EXACT, fd) for fd in (3, 5, 6, 3, 6)]


def test_skip_to_here_counts_the_steps_after_it():
    b = child_builder()
    soft = b.call("close", 99, why="soft", soft=EBADF)
    jump = b.skip()
    b.call("close", 98, why="x")
    b.call("close", 97, why="y")
    b.skip_to_here(jump)
    b.call("close", 96, why="z")
    b.skip_to_here(soft)
    assert (b.steps[soft][5], b.steps[jump][5]) == (4, 2)
    assert b.steps[soft][1] == plannedinit.SOFT and b.steps[soft][6] == EBADF
    assert b.why == ["soft", "skip", "x", "y", "z"]


def test_encode_lays_out_the_header_the_steps_and_the_data_at_their_addresses():
    b = child_builder()
    hello = b.string("hello")  # 6 bytes, padded to 8
    b.call("write", 1, hello, 5, why="w", want=5)
    table = b.blob(bytes(16))
    b.point(table, 8, hello)
    b.test(table, 0xFF, 7, why="t", soft=True)
    b.fail("f")
    plan = b.encode()
    count, = _struct.unpack_from("<I", plan, 0)
    assert count == 3 and plan[4:16] == bytes(12)
    data_address = PLAN_ADDRESS + 16 + STEP * 3
    assert len(plan) == 16 + STEP * 3 + 8 + 16
    kind, flags, number, *args, want, skip, errno = _struct.unpack_from("<IIQ6QqII", plan, 16)
    assert (kind, flags, number, want, skip, errno) == (plannedinit.CALL, plannedinit.EXACT, 1, 5, 0, 0)
    assert args == [1, data_address, 5, 0, 0, 0]
    kind, flags, _, *args, _, _, _ = _struct.unpack_from("<IIQ6QqII", plan, 16 + STEP)
    assert (kind, flags, args[:3]) == (plannedinit.TEST, plannedinit.SOFT, [data_address + 8, 0xFF, 7])
    assert _struct.unpack_from("<I", plan, 16 + 2 * STEP)[0] == plannedinit.FAIL
    data = plan[16 + STEP * 3:]
    assert data[:8] == b"hello\0\0\0"
    assert data[8:16] == bytes(8) and _struct.unpack_from("<Q", data, 16)[0] == data_address  # patched


def test_negative_arguments_are_encoded_as_u64_and_a_plan_too_large_is_refused():
    b = child_builder()
    b.call("openat", AT_FDCWD, 0, 0, why="n")
    assert _struct.unpack_from("<Q", b.encode(), 16 + 16)[0] == 2**64 - 100
    b.blob(bytes(PLAN_MAX))
    with pytest.raises(ValueError, match="too large"):
        b.encode()


# -- the program on real plans ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def image():
    return plannedinit.shared_fd()  # the process's own copy: stays open


def execute(image: int, plan: bytes | None, argv=("capsa-init",)) -> tuple[int, bytes, bytes]:
    """Exec the program as the launch does: fd 3 a memfd holding `plan` (None: no fd 3), fd 4 one
    end of a stream socketpair. Its exit status, its stdout, what it wrote on fd 4."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    channel = fcntl.fcntl(theirs.fileno(), fcntl.F_DUPFD_CLOEXEC, 100)
    theirs.close()
    memfd = -1
    if plan is not None:
        first = os.memfd_create("capsa-plan-test", os.MFD_CLOEXEC)
        os.write(first, plan)
        memfd = fcntl.fcntl(first, fcntl.F_DUPFD_CLOEXEC, 100)
        os.close(first)

    def as_the_launch_does():
        if memfd >= 0:
            os.dup2(memfd, plannedinit.PLAN_FD)
        else:
            try:
                os.close(plannedinit.PLAN_FD)
            except OSError:
                pass
        os.dup2(channel, plannedinit.CHANNEL_FD)

    try:
        process = subprocess.Popen(list(argv), executable=f"/proc/{os.getpid()}/fd/{image}", stdout=subprocess.PIPE,
                                   preexec_fn=as_the_launch_does, close_fds=False, env={})
    finally:
        os.close(channel)
        if memfd >= 0:
            os.close(memfd)
    out, _ = process.communicate(timeout=30)
    report = b"".join(iter(lambda: ours.recv(64), b""))
    ours.close()
    return process.returncode, out, report


def report(step: int, errno: int) -> bytes:
    return _struct.pack("<II", step, errno)


def execve_true(b: Builder) -> None:
    argv = plannedinit.pointers(b, ["true"])
    envp = plannedinit.pointers(b, [])
    b.call("execve", b.string("/bin/true"), argv, envp, why="exec:", flags=plannedinit.TRY)
    b.fail("exec:")


def test_a_plan_writes_opens_the_fd_predicted_and_execs_without_a_report(image):
    b = child_builder()
    b.call("write", 1, b.string("hello\n"), 6, why="w", want=6)
    assert b.open("openat", AT_FDCWD, b.string("/"), os.O_PATH | os.O_CLOEXEC, why="o") == 3  # the plan's, closed
    execve_true(b)
    assert execute(image, b.encode()) == (0, b"hello\n", b"")


def test_the_plans_fd_is_closed_before_the_first_step(image):
    b = child_builder()
    b.call("fstat", plannedinit.PLAN_FD, b.blob(bytes(144)), why="fstat")
    assert execute(image, b.encode()) == (1, b"", report(0, EBADF))


def test_a_result_that_is_not_the_one_planned_is_reported_as_unexpected(image):
    b = child_builder()
    b.call("write", 1, b.string("hello"), 5, why="w", want=5)
    b.call("write", 1, b.string("hello"), 5, why="w", want=4)
    execve_true(b)
    assert execute(image, b.encode()) == (1, b"hellohello", report(1, UNEXPECTED))


def test_a_failing_call_reports_its_step_and_errno(image):
    b = child_builder()
    b.call("write", 1, b.string("a"), 1, why="w")
    b.call("close", 99, why="c", soft=ENOENT)  # soft for another errno: fails
    execve_true(b)
    assert execute(image, b.encode()) == (1, b"a", report(1, EBADF))


def test_a_soft_call_failing_with_its_errno_skips_its_steps(image):
    b = child_builder()
    soft = b.call("close", 99, why="c", soft=EBADF)
    b.call("write", 1, b.string("skipped"), 7, why="w")
    b.call("write", 1, b.string("skipped"), 7, why="w")
    b.skip_to_here(soft)
    b.call("write", 1, b.string("after"), 5, why="w")
    b.fail("the end")
    assert execute(image, b.encode()) == (1, b"after", report(4, ENOENT))


def test_a_soft_call_that_succeeds_skips_nothing(image):
    b = child_builder()
    soft = b.call("write", 1, b.string("a"), 1, why="w", soft=EBADF)
    b.call("write", 1, b.string("b"), 1, why="w")
    b.skip_to_here(soft)
    execve_true(b)
    assert execute(image, b.encode()) == (0, b"ab", b"")


def test_test_steps_compare_masked_values_skip_if_soft_and_fail_with_einval(image):
    b = child_builder()
    value = b.blob(_struct.pack("<Q", 0x1234))
    b.test(value, 0xFF, 0x34, why="match")
    b.call("write", 1, b.string("1"), 1, why="w")
    soft = b.test(value, 0xFF, 0x35, why="no match", soft=True)
    b.call("write", 1, b.string("skipped"), 7, why="w")
    b.skip_to_here(soft)
    b.call("write", 1, b.string("2"), 1, why="w")
    b.test(value, 0xFFFF, 0x1235, why="no match, hard")
    execve_true(b)
    assert execute(image, b.encode()) == (1, b"12", report(5, EINVAL))


def test_skip_steps_jump_over_their_count(image):
    b = child_builder()
    jump = b.skip()
    b.call("write", 1, b.string("no"), 2, why="w")
    b.fail("skipped")
    b.skip_to_here(jump)
    b.call("write", 1, b.string("yes"), 3, why="w")
    execve_true(b)
    assert execute(image, b.encode()) == (0, b"yes", b"")


def exec_candidates(b: Builder, paths: list[str]) -> None:
    argv = plannedinit.pointers(b, ["x"])
    envp = plannedinit.pointers(b, [])
    for path in paths:
        b.call("execve", b.string(path), argv, envp, why="exec:", flags=plannedinit.TRY)
    b.fail("exec:")


def test_exec_candidates_report_the_first_error_that_is_not_enoent(image):
    b = child_builder()
    exec_candidates(b, ["/no/such", "/etc/passwd/x", "/", "/no/such/either"])
    assert execute(image, b.encode()) == (1, b"", report(4, ENOTDIR))
    b = child_builder()
    exec_candidates(b, ["/no/such", "/", "/etc/passwd/x"])
    assert execute(image, b.encode()) == (1, b"", report(3, EACCES))
    b = child_builder()
    exec_candidates(b, ["/no/such", "/no/such/either"])
    assert execute(image, b.encode()) == (1, b"", report(2, ENOENT))


def test_a_later_candidate_that_exists_is_exec_d(image):
    b = child_builder()
    argv = plannedinit.pointers(b, ["true"])
    for path in ("/no/such", "/", "/bin/true"):
        b.call("execve", b.string(path), argv, plannedinit.pointers(b, []), why="exec:", flags=plannedinit.TRY)
    b.fail("exec:")
    assert execute(image, b.encode()) == (0, b"", b"")


def test_it_refuses_to_run_as_an_interpreter(image):
    # "#!/proc/self/exe" in a script the container execs runs the program with argc >= 2.
    b = child_builder()
    b.call("write", 1, b.string("ran"), 3, why="w")
    execve_true(b)
    assert execute(image, b.encode(), argv=("/proc/self/exe", "/work/script")) == (126, b"", b"")


def test_a_short_empty_or_absent_plan_ends_it_without_a_step(image):
    b = child_builder()
    b.call("write", 1, b.string("ran"), 3, why="w")
    assert execute(image, b.encode()[:15]) == (1, b"", b"")
    assert execute(image, b"") == (1, b"", b"")
    assert execute(image, None) == (1, b"", b"")


def test_a_plan_without_steps_fails_with_enoent_at_its_end(image):
    assert execute(image, bytes(16)) == (1, b"", report(0, ENOENT))


# -- Planned: its errors, its container's id ---------------------------------------------------------
def test_exec_errors_are_the_python_inits_messages():
    planned = Planned(b"", ["mounts[0]: cannot mount tmpfs on /tmp", "exec:"], "/no/such/program", 0)
    assert planned.error(1, ENOENT) == 'exec: "/no/such/program": stat /no/such/program: no such file or directory'
    assert planned.error(1, EACCES) == 'exec: "/no/such/program": permission denied'
    assert planned.error(1, ENOTDIR) == f'exec: "/no/such/program": {os.strerror(ENOTDIR)}'
    assert Planned(b"", ["exec:"], "nosuch", 0).error(0, ENOENT) == 'exec: "nosuch": executable file not found in $PATH'


def test_other_errors_name_the_step():
    planned = Planned(b"", ["mounts[0]: cannot mount tmpfs on /tmp", "process.cwd '/x'", "exec:"], "sh", 0)
    assert planned.error(0, ENOENT) == "mounts[0]: cannot mount tmpfs on /tmp: No such file or directory"
    assert planned.error(0, UNEXPECTED) == "mounts[0]: cannot mount tmpfs on /tmp: the kernel's answer was not the one planned"
    assert planned.error(1, 0) == "process.cwd '/x'"
    assert planned.error(7, EINVAL) == "step 7: Invalid argument"


def test_a_failed_check_is_its_message_alone_as_the_python_inits():
    # capsa.rootfs.open_procfs_root: "mounts: /proc in the container is not a procfs", no errno.
    b = child_builder()
    b.call("fstatfs", 5, b.blob(bytes(120)), why="mounts: /proc in the container")
    b.test(b.blob(bytes(8)), 0xFFFFFFFFFFFFFFFF, 0x9FA0, why="mounts: /proc in the container is not a procfs")
    planned = Planned(b.encode(), b.why, "sh", 0)
    assert planned.error(1, EINVAL) == "mounts: /proc in the container is not a procfs"
    assert planned.error(0, EINVAL) == "mounts: /proc in the container: Invalid argument"


def test_mount_errors_name_the_call_as_capsa_linux_does():
    # capsa.rootfs: "mounts[6]: cannot mount tmpfs on /tmp: mount: Not a directory" (OSError's
    # strerror from capsa.linux names the call); posix's own (the bind source's open) do not.
    b = child_builder()
    why = "mounts[6]: cannot mount tmpfs on /tmp"
    b.open("openat", AT_FDCWD, b.string("/src"), 0, why=why)
    b.open("openat2", 5, b.string("/tmp"), b.blob(bytes(24)), 24, why=why)
    b.call("mount", b.string("tmpfs"), b.fd_path(6), b.string("tmpfs"), 0, 0, why=why)
    b.call("mount", 0, b.string("/"), 0, 0, 0, why="cannot make / a slave mount")
    planned = Planned(b.encode(), b.why, "sh", 0)
    assert [planned.error(step, ENOTDIR) for step in range(4)] == [
        f"{why}: Not a directory", f"{why}: openat2: Not a directory", f"{why}: mount: Not a directory",
        "cannot make / a slave mount: Not a directory"]


def test_a_view_s_facts_hold_until_what_it_saw_of_the_rootfs_changes(tmp_path):
    root = tmp_path / "root"
    (root / "work").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    view = plannedinit._View(str(root), [{"destination": "/work", "type": "tmpfs", "source": "tmpfs"}])
    assert view.stat("/work", 0) is not None and view.stat("/work/sub", 1) is None
    assert view.read("/etc/passwd", 1) == b"root:x:0:0::/root:/bin/sh\n"
    assert plannedinit.still_true(view.facts)
    (root / "etc" / "passwd").write_text("root:x:0:0::/home:/bin/sh\n")
    assert not plannedinit.still_true(view.facts)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    assert plannedinit.still_true(view.facts)
    (root / "work").rmdir()
    assert not plannedinit.still_true(view.facts)
    (root / "work").mkdir(mode=0o700)
    assert not plannedinit.still_true(view.facts)  # the mode a tmpfs over it takes
    os.chmod(root / "work", 0o755)
    assert plannedinit.still_true(view.facts)


def test_for_container_writes_the_id_at_its_offset_and_refuses_one_too_long():
    made = Planned(bytes(100) + b"\xff" * (plannedinit.ID_MAX + 8), ["x"], "sh", 100)
    planned = made.for_container("api-1-2")
    assert planned.plan[100:100 + plannedinit.ID_MAX] == b"api-1-2".ljust(plannedinit.ID_MAX, b"\0")
    assert planned.plan[:100] == bytes(100) and planned.plan[-8:] == b"\xff" * 8
    assert planned.why is made.why
    assert made.for_container("x" * (plannedinit.ID_MAX - 1)) is not None
    assert made.for_container("x" * plannedinit.ID_MAX) is None


# -- which launches are planned, and the cache ---------------------------------------------------------
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="planned only for root, who writes the maps")


@pytest.fixture(scope="module")
def api_rootfs(tmp_path_factory):
    from capsa.api.rootfs import Rootfs
    from capsa.bundle import make_rootfs

    path = tmp_path_factory.mktemp("planned") / "rootfs"
    make_rootfs(str(path))
    os.makedirs(path / "work", exist_ok=True)
    return Rootfs(str(path))


@pytest.fixture(scope="module")
def api_spec(api_rootfs):
    from capsa.api import spec as api_spec
    from capsa.api.arguments import Limits

    if os.geteuid() == 0:
        os.makedirs(os.path.dirname(api_spec.DEV_TEMPLATE), 0o755, exist_ok=True)
        api_spec.dev_template()  # as capsa.api.session.setup makes it: /dev is then a bind
    limits = Limits(memory=64 << 20, pids=32, cpu_time=5, file_size=1 << 20)
    return api_spec.build_spec(["sh", "-c", "true"], api_rootfs, limits, ["PATH=/bin", "A=b"], "/tmp")


def launch_plan(spec: dict, container_id: str = "plantest-1", **changes):
    """The LaunchPlan capsa.api's zygote makes for a run (capsa.create.launch_init)."""
    from capsa import launch

    arguments = dict(spec=spec, rootfs=spec["root"]["path"], container_id=container_id, state={}, listen_fd=-1,
                     cgroup=None, stdio=(0, 1, 2), exec_at_once=True)
    arguments.update(changes)
    return launch.plan_for_container(**arguments)


def changed(spec: dict, change) -> dict:
    import copy

    spec = copy.deepcopy(spec)
    change(spec)
    return spec


@needs_root
def test_an_api_run_is_eligible(api_spec):
    from capsa.api import HostTools
    from capsa.api.arguments import Limits
    from capsa.api.spec import build_spec

    assert plannedinit.eligible(launch_plan(api_spec))
    host_tools = build_spec(["python3"], HostTools().resolve(), Limits(network=True), ["PATH=/usr/bin"], "/work")
    assert plannedinit.eligible(launch_plan(host_tools))


@needs_root
@pytest.mark.parametrize("disqualifier", [
    "terminal", "hooks", "sysctl", "no user namespace", "joined namespace", "time namespace", "not exec at once",
    "console", "inherited fds", "apparmor", "scheduler", "rootfs propagation", "personality", "no pivot",
])
def test_what_the_plan_does_not_do_is_not_eligible(api_spec, disqualifier):
    from capsa.launch import Console

    def namespaces(spec, kinds):
        spec["linux"]["namespaces"] = kinds

    ns = api_spec["linux"]["namespaces"]
    cases = {
        "terminal": lambda: launch_plan(changed(api_spec, lambda s: s["process"].update(terminal=True))),
        "hooks": lambda: launch_plan(changed(api_spec, lambda s: s.update(hooks={"poststart": [{"path": "/bin/true"}]}))),
        "sysctl": lambda: launch_plan(changed(api_spec, lambda s: s["linux"].update(sysctl={"kernel.shmmax": "1"}))),
        "no user namespace": lambda: launch_plan(changed(api_spec, lambda s: namespaces(
            s, [n for n in ns if n["type"] != "user"]))),
        "joined namespace": lambda: launch_plan(changed(api_spec, lambda s: namespaces(
            s, ns + [{"type": "cgroup", "path": "/proc/1/ns/cgroup"}]))),
        "time namespace": lambda: launch_plan(changed(api_spec, lambda s: namespaces(s, ns + [{"type": "time"}]))),
        "not exec at once": lambda: launch_plan(api_spec, exec_at_once=False),
        "console": lambda: launch_plan(api_spec, console=Console(socket="/nonexistent.sock")),
        "inherited fds": lambda: launch_plan(api_spec, inherited_fds=1),
        "apparmor": lambda: launch_plan(changed(api_spec, lambda s: s["process"].update(apparmorProfile="x"))),
        "scheduler": lambda: launch_plan(changed(api_spec, lambda s: s["process"].update(
            scheduler={"policy": "SCHED_OTHER"}))),
        "rootfs propagation": lambda: launch_plan(changed(api_spec, lambda s: s["linux"].update(
            rootfsPropagation="private"))),
        "personality": lambda: launch_plan(changed(api_spec, lambda s: s["linux"].update(
            personality={"domain": "LINUX"}))),
        "no pivot": lambda: launch_plan(api_spec, no_pivot=True),
    }
    assert not plannedinit.eligible(cases[disqualifier]())


def test_an_exec_is_never_eligible():
    from capsa.launch import LaunchPlan

    assert not plannedinit.eligible(LaunchPlan(process={"args": ["true"], "cwd": "/"}, namespaces=[], fork=True,
                                               state={}, listener_status="running"))


@needs_root
def test_plans_are_cached_by_spec_for_each_container(api_spec):
    from capsa import init

    plan = launch_plan(api_spec, container_id="plantest-cache-1")
    seccomp_filter = init.build_seccomp(plan.seccomp)
    first = plannedinit.plan_for(plan, seccomp_filter, [])
    second = plannedinit.plan_for(launch_plan(api_spec, container_id="plantest-cache-2"), seccomp_filter, [])
    assert first is not None and second.why is first.why  # one plan made, for both
    assert first.plan[first.id_offset:first.id_offset + 17] == b"plantest-cache-1\0"
    assert second.plan[second.id_offset:second.id_offset + 17] == b"plantest-cache-2\0"
    assert first.plan[:first.id_offset] == second.plan[:second.id_offset]
    assert plannedinit.plan_for(launch_plan(api_spec, container_id="x" * plannedinit.ID_MAX), seccomp_filter,
                                []) is None
    other = plannedinit.plan_for(launch_plan(changed(api_spec, lambda s: s.update(hostname="other"))), seccomp_filter, [])
    assert other.why is not first.why
    with_a_join = plannedinit.plan_for(plan, seccomp_filter, ["/sys/fs/cgroup/pids/x/tasks"])
    assert with_a_join.why is not first.why  # one more fd: other numbers
    assert plannedinit.plan_for(plan, seccomp_filter, []).why is first.why


@needs_root
def test_a_missing_mount_destination_or_a_cwd_that_is_not_a_directory_is_not_planned(api_spec):
    # The Python init makes a missing cwd (mkdir_all), and says "cannot create it" of a file.
    from capsa import init

    plan = launch_plan(api_spec)
    seccomp_filter = init.build_seccomp(plan.seccomp)
    assert plannedinit.build(plan, seccomp_filter, []) is not None
    for change in (lambda s: s["process"].update(cwd="/no/such/dir"),
                   lambda s: s["process"].update(cwd="/etc/passwd"),
                   lambda s: s["mounts"].append({"destination": "/no/such/dir", "type": "tmpfs", "source": "tmpfs"}),
                   lambda s: s["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"})):
        assert plannedinit.build(launch_plan(changed(api_spec, change)), seccomp_filter, []) is None
