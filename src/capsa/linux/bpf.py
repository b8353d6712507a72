"""bpf(2): load an eBPF program and attach it to a cgroup.

Used for the cgroup v2 device filter (capsa.cgroups.devices_bpf assembles the program); loaded
only when a container on a cgroup v2 host has device rules.
"""

from __future__ import annotations

import _struct
import posix

from capsa.linux._abi import addressof, c_uint, get_errno, string_buffer, syscall

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6  # attach type
# Several programs per cgroup, all of which must allow: a parent's filter (a manager's, or a
# nested runtime's) keeps applying, as with runc.
BPF_F_ALLOW_MULTI = 2
LOG_SIZE = 65536

# union bpf_attr, as each command reads it:
# BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version,
# prog_flags, prog_name[16].
_PROG_LOAD = "IIQQIIQII16s"
# BPF_PROG_ATTACH: target_fd, attach_bpf_fd, attach_type, attach_flags, replace_bpf_fd.
_PROG_ATTACH = "IIIII"


def _bpf(command: int, attr: bytes) -> int:
    """bpf(2) with `attr` in memory the kernel may write to; the raw result (errno kept)."""
    return syscall("bpf", command, string_buffer(attr, len(attr)), c_uint(len(attr)))


def load_program(instructions: bytes, prog_type: int = BPF_PROG_TYPE_CGROUP_DEVICE, name: str = "capsa_devices",
                 license: str = "Apache") -> int:
    """Load `instructions` (8 bytes each); the program's fd. OSError with the verifier's log if refused."""
    code = string_buffer(instructions, len(instructions))
    license_buffer = string_buffer(license.encode())

    def attr(log_level: int = 0, log_size: int = 0, log_buf: int = 0) -> bytes:
        return _struct.pack(_PROG_LOAD, prog_type, len(instructions) // 8, addressof(code), addressof(license_buffer),
                            log_level, log_size, log_buf, 0, 0, name.encode()[:15])

    fd = _bpf(BPF_PROG_LOAD, attr())
    if fd >= 0:
        return fd
    error = get_errno()
    # Again with the verifier's log, to say why.
    log = string_buffer(LOG_SIZE)
    fd = _bpf(BPF_PROG_LOAD, attr(1, LOG_SIZE, addressof(log)))
    if fd >= 0:
        return fd
    detail = log.value.decode(errors="replace").strip().splitlines()[-3:]
    raise OSError(error, f"bpf(BPF_PROG_LOAD): {posix.strerror(error)}" + (f": {' / '.join(detail)}" if detail else ""))


def attach_to_cgroup(cgroup_fd: int, program_fd: int, attach_type: int = BPF_CGROUP_DEVICE,
                     flags: int = BPF_F_ALLOW_MULTI) -> None:
    """Attach a loaded program to the cgroup directory `cgroup_fd`; it stays until the cgroup goes."""
    if _bpf(BPF_PROG_ATTACH, _struct.pack(_PROG_ATTACH, cgroup_fd, program_fd, attach_type, flags, 0)) < 0:
        error = get_errno()
        raise OSError(error, f"bpf(BPF_PROG_ATTACH): {posix.strerror(error)}")
