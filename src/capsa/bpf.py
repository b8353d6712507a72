"""bpf(2) through _ctypes: load an eBPF program and attach it to a cgroup.

Used for the cgroup v2 device filter (cgroups/devices_bpf.py assembles the program). Imported only
when a container on a cgroup v2 host has device rules. The C types and the syscall function come
from capsa.linux, which drives _ctypes without the ctypes package (see there why).
"""

from __future__ import annotations

import posix

from capsa.linux import (
    Structure,
    _syscall,
    addressof,
    byref,
    c_char,
    c_uint,
    c_uint32,
    c_uint64,
    get_errno,
    sizeof,
    string_buffer,
)

SYS_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}.get(posix.uname().machine)

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6  # attach type
# Several programs per cgroup, all of which must allow: a parent's filter (a manager's, or a
# nested runtime's) keeps applying, as with runc.
BPF_F_ALLOW_MULTI = 2
LOG_SIZE = 65536


class _ProgLoad(Structure):
    _fields_ = [
        ("prog_type", c_uint32), ("insn_cnt", c_uint32), ("insns", c_uint64),
        ("license", c_uint64), ("log_level", c_uint32), ("log_size", c_uint32),
        ("log_buf", c_uint64), ("kern_version", c_uint32), ("prog_flags", c_uint32),
        ("prog_name", c_char * 16),
    ]


class _ProgAttach(Structure):
    _fields_ = [
        ("target_fd", c_uint32), ("attach_bpf_fd", c_uint32), ("attach_type", c_uint32),
        ("attach_flags", c_uint32), ("replace_bpf_fd", c_uint32),
    ]


def _bpf(command: int, attr: Structure) -> int:
    if SYS_BPF is None:
        raise OSError(38, f"bpf(2): no syscall number known for {posix.uname().machine}")
    return _syscall(SYS_BPF, command, byref(attr), c_uint(sizeof(attr)))


def load_program(instructions: bytes, prog_type: int = BPF_PROG_TYPE_CGROUP_DEVICE, name: str = "capsa_devices",
                 license: str = "Apache") -> int:
    """Load `instructions` (8 bytes each); the program's fd. OSError with the verifier's log if refused."""
    code = string_buffer(instructions, len(instructions))
    license_buffer = string_buffer(license.encode())
    attr = _ProgLoad(prog_type=prog_type, insn_cnt=len(instructions) // 8, insns=addressof(code),
                     license=addressof(license_buffer), prog_name=name.encode()[:15])
    fd = _bpf(BPF_PROG_LOAD, attr)
    if fd >= 0:
        return fd
    error = get_errno()
    # Again with the verifier's log, to say why.
    log = string_buffer(LOG_SIZE)
    attr.log_level, attr.log_size, attr.log_buf = 1, LOG_SIZE, addressof(log)
    fd = _bpf(BPF_PROG_LOAD, attr)
    if fd >= 0:
        return fd
    detail = log.value.decode(errors="replace").strip().splitlines()[-3:]
    raise OSError(error, f"bpf(BPF_PROG_LOAD): {posix.strerror(error)}" + (f": {' / '.join(detail)}" if detail else ""))


def attach_to_cgroup(cgroup_fd: int, program_fd: int, attach_type: int = BPF_CGROUP_DEVICE,
                     flags: int = BPF_F_ALLOW_MULTI) -> None:
    """Attach a loaded program to the cgroup directory `cgroup_fd`; it stays until the cgroup goes."""
    attr = _ProgAttach(target_fd=cgroup_fd, attach_bpf_fd=program_fd, attach_type=attach_type, attach_flags=flags)
    if _bpf(BPF_PROG_ATTACH, attr) < 0:
        error = get_errno()
        raise OSError(error, f"bpf(BPF_PROG_ATTACH): {posix.strerror(error)}")
