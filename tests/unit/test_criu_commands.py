"""The criu command lines capsa builds for checkpoint and restore (runc 1.1's options, CLI spelling).

Pure logic: a container record and config in memory, no CRIU run. The real round trips are in
tests/integration/test_checkpoint.py (in the guest tier, where `criu check` passes).
"""

from __future__ import annotations

import os

import pytest

from capsa.checkpoint import CriuOptions, dump_command, restore_command, validate_options
from capsa.cli import checkpoint as cli_checkpoint
from capsa.cli import restore as cli_restore
from capsa.cli.flags import parse
from capsa.errors import CapsaError


class FakeContainer:
    """What dump_command and restore_command read of a Container."""

    def __init__(self, spec, directory="/run/capsa/c1"):
        self.spec = spec
        self.pid = os.getpid()  # a live pid: masked paths are looked up under /proc/PID/root
        self.directory = directory
        self.record = {"rootfs": "/bundle/rootfs", "bundle": "/bundle", "annotations": {"org.criu.config": ""}}

    def cgroup(self):
        return None


def _spec(**linux):
    return {
        "process": {"args": ["sh"]},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind"]},
            {"destination": "/etc/hosts", "type": "none", "source": "hosts", "options": ["bind", "ro"]},
        ],
        "linux": {"maskedPaths": ["/proc/keys", "/proc/does-not-exist", "/proc/acpi"], **linux},
    }


def _pairs(argv, flag):
    return [argv[i + 1] for i, word in enumerate(argv) if word == flag]


def test_dump_command():
    netns = f"/proc/{os.getpid()}/ns/net"
    spec = _spec(namespaces=[{"type": "network", "path": netns}, {"type": "mount"}])
    opts = CriuOptions(image_path="/img", parent_path="../pre", tcp_established=True, manage_cgroups_mode="full")
    argv, log = dump_command(FakeContainer(spec), spec, "criu", opts)
    assert argv[:4] == ["criu", "dump", "--tree", str(os.getpid())]
    assert log == "/img/dump.log"
    assert _pairs(argv, "--root") == ["/bundle/rootfs"]
    assert "--tcp-established" in argv and "--manage-cgroups=full" in argv
    assert _pairs(argv, "--empty-ns") == ["net"]  # always, as runc
    assert _pairs(argv, "--prev-images-dir") == ["../pre"] and "--track-mem" in argv
    assert "--leave-running" not in argv and "--config" not in argv  # org.criu.config "" means none
    external = _pairs(argv, "--external")
    assert f"net[{os.stat(netns).st_ino}]:extRootNetNS" in external
    assert "mnt[/data]:/data" in external and "mnt[/etc/hosts]:/etc/hosts" in external
    #
    assert "mnt[/proc/keys]:/dev/null" in external
    assert not any("does-not-exist" in e or "acpi" in e for e in external)


def test_pre_dump_has_no_external_mounts():
    spec = _spec()
    argv, log = dump_command(FakeContainer(spec), spec, "criu", CriuOptions(image_path="/img", pre_dump=True,
                                                                           work_path="/work"))
    assert argv[1] == "pre-dump" and log == "/work/pre-dump.log"
    assert _pairs(argv, "--work-dir") == ["/work"]
    assert not any(e.startswith("mnt[") for e in _pairs(argv, "--external"))


def test_restore_command():
    netns = f"/proc/{os.getpid()}/ns/net"
    spec = _spec(namespaces=[{"type": "network", "path": netns}, {"type": "uts", "path": "/run/uts"}, {"type": "pid"}])
    fds = []
    argv, log, pid_path = restore_command(
        FakeContainer(spec), spec, _NoCgroup(), "criu", CriuOptions(image_path="/img", lsm_profile="apparmor:x"),
        "/run/capsa/c1/criu-root", ["pipe:[11]", "/dev/null", "pipe:[12]"], fds,
    )
    try:
        assert argv[:2] == ["criu", "restore"] and log == "/img/restore.log"
        assert pid_path == "/run/capsa/c1/criu-restore.pid" and _pairs(argv, "--pidfile") == [pid_path]
        assert "--restore-detached" in argv and "--restore-sibling" in argv and "--evasive-devices" in argv
        assert _pairs(argv, "--root") == ["/run/capsa/c1/criu-root"]
        assert _pairs(argv, "--lsm-profile") == ["apparmor:x"]
        inherit = _pairs(argv, "--inherit-fd")
        assert "fd[0]:pipe:[11]" in inherit and "fd[2]:pipe:[12]" in inherit and len(fds) == 1
        assert f"fd[{fds[0]}]:extRootNetNS" in inherit
        assert _pairs(argv, "--join-ns") == ["uts:/run/uts"]
        external = _pairs(argv, "--external")
        assert "mnt[/data]:/srv/data" in external and "mnt[/etc/hosts]:/bundle/hosts" in external
        assert "mnt[/dev/null]:/dev/null" in external
    finally:
        for fd in fds:
            os.close(fd)


def test_restore_refuses_a_cgroup_namespace_by_path():
    spec = _spec(namespaces=[{"type": "cgroup", "path": "/proc/1/ns/cgroup"}])
    with pytest.raises(CapsaError, match="cgroup namespace"):
        restore_command(FakeContainer(spec), spec, _NoCgroup(), "criu", CriuOptions(image_path="/img"), "/r", [], [])


class _NoCgroup:
    paths: dict = {}


@pytest.mark.parametrize("values, message", [
({"manage_cgroups_mode": "bogus"}, "manage-cgroups-mode"),
({"empty_ns": ["pid"]}, "not supported"),
({"page_server": "host"}, "ADDRESS:PORT"),
({"page_server": "host:port"}, "Invalid port"),
({"parent_path": "/abs"}, "must be relative"),
])
def test_invalid_options(values, message):
    with pytest.raises(CapsaError, match=message):
        validate_options(CriuOptions(**values))


def test_runc_flag_spellings():
    parsed = parse(["-leave-running", "--image-path=/i", "-empty-ns", "network", "-status-fd", "5", "c1"],
                   cli_checkpoint.FLAGS)
    assert parsed.leave_running and parsed.image_path == "/i" and parsed.empty_ns == ["network"]
    assert parsed.status_fd == 5 and parsed.args == ["c1"]
    parsed = parse(["-no-subreaper", "-d", "-b", "/b", "--lsm-mount-context", "ctx", "c1"], cli_restore.FLAGS)
    assert parsed.no_subreaper and parsed.detach and parsed.bundle == "/b" and parsed.lsm_mount_context == "ctx"


class _V1Cgroup:
    """A container cgroup in every v1 hierarchy of this host (only paths are read)."""

    def __init__(self, found):
        self.paths = {controllers: f"{point}/capsa-unit" for point, controllers in found.items() if controllers}

    def path_for(self, controller):
        return next((d for c, d in self.paths.items() if controller in c.split(",")), None)

    def cgroup2_dir(self):
        return None


def test_cgroup_v1_roots_and_binds():
    from capsa.cgroups import CGROUP_ROOT, hierarchies

    found = {p: c for p, c in hierarchies().items() if p.startswith(CGROUP_ROOT + "/")}
    if not any(found.values()):
        pytest.skip("no cgroup v1 hierarchy on this host")
    spec = _spec()
    spec["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"})
    cgroup = _V1Cgroup(found)
    container = FakeContainer(spec)
    container.cgroup = lambda: cgroup
    fds = []
    argv, _, _ = restore_command(container, spec, cgroup, "criu", CriuOptions(image_path="/img"), "/r", [], fds)
    # each v1 hierarchy is restored under the new container's cgroup ...
    roots = _pairs(argv, "--cgroup-root")
    assert sorted(roots) == sorted(f"{c}:/capsa-unit" for c in cgroup.paths)
    # ... and each bind capsa made of it in the container is an external mount, mapped to it
    external = _pairs(argv, "--external")
    for point, controllers in found.items():
        if controllers:
            assert f"mnt[{point}]:{point}/capsa-unit" in external
    dump, _ = dump_command(container, spec, "criu", CriuOptions(image_path="/img"))
    if cgroup.path_for("freezer"):
        assert _pairs(dump, "--freeze-cgroup") == [cgroup.path_for("freezer")]
    for point, controllers in found.items():
        if controllers:
            assert f"mnt[{point}]:{point}" in _pairs(dump, "--external")


def test_rpc_request_from_the_command_line():
    """A container with a terminal goes over criu swrk: the same command line as RPC options."""
    from capsa import criu_rpc

    argv = ["criu", "restore", "--images-dir", "/img", "--log-file", "restore.log", "-v4", "--root", "/r",
            "--restore-detached", "--restore-sibling", "--pidfile", "/p", "--evasive-devices", "--shell-job",
            "--manage-cgroups=strict", "--empty-ns", "net", "--external", "mnt[/data]:/srv/data",
            "--inherit-fd", "fd[7]:extRootNetNS", "--cgroup-root", "pids:/c1", "--join-ns", "uts:/run/uts",
            "--page-server", "--address", "10.0.0.1", "--port", "27"]
    kind, opts = criu_rpc.request_from_argv(argv, images_fd=5, work_fd=None)
    assert kind == criu_rpc.RESTORE
    fields = criu_rpc.parse_message(opts)
    assert fields[1] == [5] and fields[9] == [4] and fields[10] == [b"restore.log"] and fields[13] == [b"/r"]
    assert fields[26] == [1] and fields[6] == [1] and fields[7] == [1]  # rst_sibling, evasive, shell_job
    assert fields[12] == [1] and fields[50] == [1]  # notify_scripts, orphan_pts_master
    assert fields[24] == [1] and fields[34] == [5] and fields[38] == [0x40000000]
    assert fields[37] == [b"mnt[/data]:/srv/data"]
    inherit = criu_rpc.parse_message(fields[27][0])
    assert inherit == {1: [b"extRootNetNS"], 2: [7]}
    assert criu_rpc.parse_message(fields[25][0]) == {1: [b"pids"], 2: [b"/c1"]}
    assert criu_rpc.parse_message(fields[39][0]) == {1: [b"uts"], 2: [b"/run/uts"]}
    assert criu_rpc.parse_message(fields[11][0]) == {1: [b"10.0.0.1"], 2: [27]}
    assert 2 not in fields and 14 not in fields  # no pid for a restore, no parent image


def test_rpc_varints():
    from capsa import criu_rpc

    for value in (0, 1, 127, 128, 300, 2**31 - 1):
        assert criu_rpc.parse_message(criu_rpc.field_varint(3, value)) == {3: [value]}
    # a negative int32 travels as ten bytes of two's complement
    assert criu_rpc.parse_message(criu_rpc.field_varint(1, -1)) == {1: [2**64 - 1]}


def test_cgroup_v2_root_on_a_unified_host():
    """On a cgroup2-only host the restored tree goes under the new container's cgroup (runc's
    CgroupRoot with no controller), not back to the path it was dumped from."""
    from capsa.checkpoint import _cgroup_roots

    class Unified:
        paths = {"": "/sys/fs/cgroup/capsactl/new"}

    assert _cgroup_roots(Unified(), {"/sys/fs/cgroup": ""}) == ["--cgroup-root", "/capsactl/new"]
    # hybrid: the v2 hierarchy at /sys/fs/cgroup/unified gets no default root
    hybrid = Unified()
    hybrid.paths = {"": "/sys/fs/cgroup/unified/capsactl/new", "pids": "/sys/fs/cgroup/pids/capsactl/new"}
    assert _cgroup_roots(hybrid, {"/sys/fs/cgroup/unified": "", "/sys/fs/cgroup/pids": "pids"}) == \
        ["--cgroup-root", "pids:/capsactl/new"]
