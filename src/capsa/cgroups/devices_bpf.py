"""cgroup v2 device rules as an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE), as runc's devicefilter.

cgroup v2 has no devices.allow/deny files: the kernel runs a program attached to the cgroup on
each open or mknod of a device node and allows it if the program returns 1. The OCI rules (a list
in which a later rule overrides an earlier one, as the v1 controller takes them) are first reduced
to what they mean (`effective`: a default and a set of exceptions, as runc's devices emulator does),
then each exception becomes a block of instructions that returns the opposite of the default when
the device matches; the default comes last.

The program reads struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; } where
access_type is (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*.
"""

from __future__ import annotations

import _struct  # struct without its Python wrapper module (~0.3M instructions)

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE
ALL_ACCESS = 7
DEVICE_TYPES = {"b": 1, "c": 2}  # BPF_DEVCG_DEV_BLOCK, _CHAR
WILDCARD = -1

# Opcodes (class | operation | source), from linux/bpf_common.h and linux/bpf.h.
LDX_MEM_W = 0x61  # dst = *(u32 *)(src + off)
ALU32_AND_K = 0x54
ALU32_RSH_K = 0x74
ALU32_MOV_X = 0xBC
ALU64_MOV_K = 0xB7
JMP_JEQ_K = 0x15
JMP_JNE_K = 0x55
JMP_JNE_X = 0x5D
JMP_EXIT = 0x95
R0, R1, R2, R3, R4, R5 = range(6)


class DeviceRule:
    """One device exception to the default: type ('a' for both), major, minor (-1: any), access bits."""

    __slots__ = ("kind", "major", "minor", "access")

    def __init__(self, kind: str, major: int, minor: int, access: int):
        self.kind, self.major, self.minor, self.access = kind, major, minor, access

    def key(self) -> tuple[str, int, int]:
        return (self.kind, self.major, self.minor)

    def __repr__(self) -> str:
        return f"DeviceRule({self.kind!r}, {self.major}, {self.minor}, {self.access})"


def _access_bits(text: str | None) -> int:
    bits = 0
    for letter in text or "rwm":
        bits |= ACCESS[letter]
    return bits


def effective(rules: list[dict[str, Any]]) -> tuple[bool, list[DeviceRule]]:
    """(allow by default?, the exceptions) that the OCI rules, applied in order, amount to.

    As the v1 controller and runc's emulator: starts denying everything; an "a" rule resets the
    default and drops every exception; a rule against the default adds (or widens) an exception;
    a rule agreeing with the default narrows the exception for exactly that device (it does not
    punch holes in a wildcard exception, as v1 does not either).
    """
    default_allow = False
    exceptions: list[DeviceRule] = []
    for rule in rules:
        kind = rule.get("type") or "a"
        kind = "c" if kind == "u" else kind
        major = WILDCARD if rule.get("major") is None else rule["major"]
        minor = WILDCARD if rule.get("minor") is None else rule["minor"]
        access = _access_bits(rule.get("access"))
        allow = bool(rule.get("allow"))
        if kind == "a" and major == WILDCARD and minor == WILDCARD:
            default_allow, exceptions = allow, []
            continue
        found = next((e for e in exceptions if e.key() == (kind, major, minor)), None)
        if allow != default_allow:
            if found:
                found.access |= access
            else:
                exceptions.append(DeviceRule(kind, major, minor, access))
        elif found:
            found.access &= ~access
            if not found.access:
                exceptions.remove(found)
    return default_allow, exceptions


def _insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return _struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def _block(exception: DeviceRule, default_allow: bool) -> list[bytes]:
    """Instructions returning the exception's verdict if the device matches, else falling through."""
    checks: list[tuple[int, int, int, int]] = []  # (op, dst, src, imm); jump to the block's end
    prepare: dict[int, list[bytes]] = {}
    if exception.kind != "a":
        checks.append((JMP_JNE_K, R2, 0, DEVICE_TYPES[exception.kind]))
    if exception.access != ALL_ACCESS:
        # r1 = requested & allowed; an allow needs every requested access in the exception
        # (r1 == r3), a deny applies as soon as one requested access is in it (r1 != 0).
        prepare[len(checks)] = [_insn(ALU32_MOV_X, R1, R3), _insn(ALU32_AND_K, R1, imm=exception.access)]
        checks.append((JMP_JNE_X, R1, R3, 0) if not default_allow else (JMP_JEQ_K, R1, 0, 0))
    if exception.major != WILDCARD:
        checks.append((JMP_JNE_K, R4, 0, exception.major))
    if exception.minor != WILDCARD:
        checks.append((JMP_JNE_K, R5, 0, exception.minor))
    verdict = [_insn(ALU64_MOV_K, R0, imm=0 if default_allow else 1), _insn(JMP_EXIT)]
    # Lay out, then point every jump past the verdict.
    layout: list[tuple[int, int, int, int] | bytes] = []
    for index, check in enumerate(checks):
        layout.extend(prepare.get(index, []))
        layout.append(check)
    layout.extend(verdict)
    out = []
    for position, item in enumerate(layout):
        if isinstance(item, bytes):
            out.append(item)
        else:
            op, dst, src, imm = item
            out.append(_insn(op, dst, src, off=len(layout) - position - 1, imm=imm))
    return out


def program(rules: list[dict[str, Any]]) -> bytes:
    """The eBPF program enforcing the OCI device rules `rules`."""
    default_allow, exceptions = effective(rules)
    code = [
        _insn(LDX_MEM_W, R2, R1, 0), _insn(ALU32_AND_K, R2, imm=0xFFFF),  # r2 = device type
        _insn(LDX_MEM_W, R3, R1, 0), _insn(ALU32_RSH_K, R3, imm=16),  # r3 = requested access
        _insn(LDX_MEM_W, R4, R1, 4),  # r4 = major
        _insn(LDX_MEM_W, R5, R1, 8),  # r5 = minor
    ]
    for exception in exceptions:
        code.extend(_block(exception, default_allow))
    code += [_insn(ALU64_MOV_K, R0, imm=1 if default_allow else 0), _insn(JMP_EXIT)]
    return b"".join(code)
