"""linux.seccomp: the OCI seccomp profile turned into a kernel filter with libseccomp (ctypes).

libseccomp is what runc, crun and youki use; it knows every architecture's syscall table and
compiles argument conditions to BPF. The filter is built in the init before pivot_root (the
library must be loaded while the host's /usr/lib is reachable) and loaded as late as possible:
right before exec when no_new_privs is set, otherwise just before the capabilities are dropped
(loading a filter without no_new_privs needs CAP_SYS_ADMIN), as runc does.
"""

from __future__ import annotations

import ctypes
import errno

from capsa.errors import ConfigError, UnsupportedError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
# Actions that carry a value (errnoRet) in their low 16 bits.
_WITH_VALUE = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
OPERATORS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}
# OCI flag -> libseccomp filter attribute (SCMP_FLTATR_*).
FLAGS = {"SECCOMP_FILTER_FLAG_LOG": 6, "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 7}
_ATTR_CTL_NNP = 3
ARCHITECTURES = (
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",
)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _library() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        raise UnsupportedError("linux.seccomp: libseccomp is not installed on this host (Debian package libseccomp2)") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def _action(name: str, errno_ret: int | None, default_errno: int, field: str) -> int:
    if name == "SCMP_ACT_NOTIFY":
        raise UnsupportedError(f"{field}: SCMP_ACT_NOTIFY (seccomp user notification) is not supported by this version of capsa")
    if name not in ACTIONS:
        raise ConfigError(field, f"unknown seccomp action {name!r}")
    value = ACTIONS[name]
    if name in _WITH_VALUE:
        value |= (errno_ret if errno_ret is not None else default_errno) & 0xFFFF
    return value


class Filter:
    """A compiled seccomp filter, ready to load into the calling thread."""

    def __init__(self, seccomp: dict[str, Any]):
        self._lib = _library()
        default_errno = seccomp.get("defaultErrnoRet", errno.EPERM)
        self.default = _action(seccomp.get("defaultAction", ""), seccomp.get("defaultErrnoRet"), errno.EPERM,
                               "linux.seccomp.defaultAction")
        self._ctx = self._lib.seccomp_init(self.default)
        if not self._ctx:
            raise ConfigError("linux.seccomp.defaultAction", "libseccomp refused the default action")
        self._lib.seccomp_attr_set(self._ctx, _ATTR_CTL_NNP, 0)  # no_new_privs follows process.noNewPrivileges
        for flag in seccomp.get("flags") or []:
            if flag not in FLAGS:
                raise UnsupportedError(f"linux.seccomp.flags: {flag} is not supported by this version of capsa")
            self._check(self._lib.seccomp_attr_set(self._ctx, FLAGS[flag], 1), "linux.seccomp.flags")
        for index, arch in enumerate(seccomp.get("architectures") or []):
            self._add_arch(arch, f"linux.seccomp.architectures[{index}]")
        for index, rule in enumerate(seccomp.get("syscalls") or []):
            self._add_rule(rule, default_errno, f"linux.seccomp.syscalls[{index}]")

    def _check(self, result: int, field: str) -> None:
        if result < 0:
            raise ConfigError(field, f"libseccomp: {errno.errorcode.get(-result, -result)}")

    def _add_arch(self, arch: str, field: str) -> None:
        if not arch.startswith("SCMP_ARCH_"):
            raise ConfigError(field, f"unknown architecture {arch!r}")
        token = self._lib.seccomp_arch_resolve_name(arch[len("SCMP_ARCH_"):].lower().encode())
        if not token:
            raise ConfigError(field, f"libseccomp does not know architecture {arch}")
        result = self._lib.seccomp_arch_add(self._ctx, token)
        if result < 0 and -result != errno.EEXIST:
            self._check(result, field)

    def _add_rule(self, rule: dict[str, Any], default_errno: int, field: str) -> None:
        action = _action(rule.get("action", ""), rule.get("errnoRet"), default_errno, f"{field}.action")
        if action == self.default:
            return  # libseccomp refuses a rule that repeats the default; it changes nothing
        conditions = [self._condition(arg, f"{field}.args[{i}]") for i, arg in enumerate(rule.get("args") or [])]
        # Conditions on distinct arguments must all hold (one rule); several on the same argument
        # are alternatives (one rule each), as runc reads the profile.
        indexes = [c.arg for c in conditions]
        groups = [conditions] if len(set(indexes)) == len(indexes) else [[c] for c in conditions]
        for name in rule.get("names") or []:
            number = self._lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                continue  # a syscall this architecture does not have
            for group in groups:
                array = (_ArgCmp * len(group))(*group) if group else None
                self._check(self._lib.seccomp_rule_add_array(self._ctx, action, number, len(group), array), f"{field} ({name})")

    @staticmethod
    def _condition(arg: dict[str, Any], field: str) -> _ArgCmp:
        op = OPERATORS.get(arg.get("op", ""))
        if op is None:
            raise ConfigError(f"{field}.op", f"unknown seccomp operator {arg.get('op')!r}")
        index = arg.get("index", 0)
        if not isinstance(index, int) or not 0 <= index <= 5:
            raise ConfigError(f"{field}.index", "must be 0 to 5")
        return _ArgCmp(index, op, arg.get("value", 0) & (2**64 - 1), arg.get("valueTwo", 0) & (2**64 - 1))

    def load(self) -> None:
        result = self._lib.seccomp_load(self._ctx)
        if result < 0:
            raise OSError(-result, f"seccomp_load: {errno.errorcode.get(-result, -result)}")
        self._lib.seccomp_release(self._ctx)
        self._ctx = None


def validate_profile(seccomp: dict[str, Any]) -> None:
    """Check the profile's names without building anything (for create's early error)."""
    if seccomp.get("listenerPath") or any(r.get("action") == "SCMP_ACT_NOTIFY" for r in seccomp.get("syscalls") or []):
        raise UnsupportedError("linux.seccomp: SCMP_ACT_NOTIFY (seccomp user notification) is not supported by this version of capsa")
    for index, arch in enumerate(seccomp.get("architectures") or []):
        if arch not in ARCHITECTURES:
            raise ConfigError(f"linux.seccomp.architectures[{index}]", f"unknown architecture {arch!r}")
