"""The cgroup v2 device filter (eBPF, BPF_PROG_TYPE_CGROUP_DEVICE) on this host's own kernel.

The v2 driver attaches it to a container's cgroup on unified hosts (test_cgroups_v2.py, in the
guest tier). The kernel runs such programs for any cgroup2 directory, so a hybrid host like this
one can show here that the verifier takes the program and that the kernel enforces it: a process
in a cgroup2 directory of the test's own opens /dev/null (allowed) and /dev/full (denied).
"""

from __future__ import annotations

import os

import pytest

from capsa.cgroups import hierarchies
from capsa.cgroups.common import rmdir_tree

CGROUP2 = next((point for point, controllers in hierarchies().items() if controllers == ""), None)
if CGROUP2 is None:
    pytest.skip("no cgroup2 hierarchy on this host", allow_module_level=True)


@pytest.fixture
def cgroup_dir():
    path = os.path.join(CGROUP2, f"capsa-test-bpf.{os.getpid()}")
    os.mkdir(path)
    yield path
    rmdir_tree(path)


def _opens_in(cgroup: str, *devices: str) -> list[str]:
    """Open each device from a child moved into `cgroup`; 'ok' or the error's name for each."""
    import errno

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write("0")
            results = []
            for device in devices:
                try:
                    os.close(os.open(device, os.O_RDWR))
                    results.append("ok")
                except OSError as err:
                    results.append(errno.errorcode[err.errno])
            os.write(write_fd, " ".join(results).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        out = f.read().split()
    os.waitpid(pid, 0)
    return out


def test_device_filter_is_loaded_and_enforced(cgroup_dir):
    from capsa.cgroups.devices_bpf import program
    from capsa.linux import bpf

    assert _opens_in(cgroup_dir, "/dev/null", "/dev/full") == ["ok", "ok"]
    rules = [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "r"}]
    prog = bpf.load_program(program(rules))
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        bpf.attach_to_cgroup(fd, prog)
    finally:
        os.close(fd)
        os.close(prog)
    # /dev/full is allowed for reading only: opening it read-write is refused.
    assert _opens_in(cgroup_dir, "/dev/null", "/dev/full", "/dev/zero") == ["ok", "EPERM", "EPERM"]


def test_verifier_takes_every_rule_shape():
    from capsa.cgroups.devices_bpf import program
    from capsa.linux import bpf

    for rules in ([], [{"allow": True, "access": "rwm"}], [{"allow": False, "access": "rwm"}],
                  [{"allow": False}, {"allow": True, "type": "b", "major": -1, "minor": 5, "access": "m"},
                   {"allow": True, "type": "c", "major": 4, "access": "w"}, {"allow": True, "type": "u", "major": 2, "minor": 0}],
                  [{"allow": True}, {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "rw"}]):
        os.close(bpf.load_program(program(rules)))
