"""linux.seccomp: the OCI seccomp profile turned into a kernel filter with libseccomp (_ctypes).

libseccomp is what runc, crun and youki use; it knows every architecture's syscall table and
compiles argument conditions to BPF. The filter is built by the runtime before it forks the
container's first process (the library must be loaded while the host's /usr/lib is reachable,
and a bad profile is then an error with nothing started) and exported to BPF there; the
BPF is loaded as late as possible with one seccomp(2) call: right before exec when no_new_privs
is set, otherwise just before the capabilities are dropped (loading a filter without
no_new_privs needs CAP_SYS_ADMIN), as runc does. Loading it ourselves rather than with
seccomp_load() gives every kernel flag (WAIT_KILLABLE_RECV is newer than Debian's libseccomp)
and keeps libseccomp out of the window between the load and the hand-over of the notify fd.

SCMP_ACT_NOTIFY (seccomp user notification): the load returns a listener fd, which the
container's process sends with SCM_RIGHTS over a unix socket that the runtime connected to
`listenerPath` on the host, together with runc's ContainerProcessState JSON (ociVersion,
fds ["seccompFd"], pid, metadata, state). Only then can the listener answer notifications, so
the syscalls that process makes between the load and the send cannot be notified: write (as
runc refuses it) and sendmsg (the send itself).

The C calls go through capsa.linux's _ctypes types, not the ctypes package (10.6M instructions to
import, see capsa/linux/_abi.py), and seccomp(2) itself through capsa.linux.seccomp; with a compiled program in the cache, libseccomp is only asked its version
(the cache key), and only the functions called are made.
"""

from __future__ import annotations

# Imported here, not where they are used: the filter is built and loaded inside the container's
# namespaces, where the host's files may be out of reach (see init.load_modules).
import _sha256
import _socket
import _struct
import posix

from capsa import jsonfast, posixlite
from capsa.errors import EEXIST, EPERM, ConfigError, ContainerStartError, UnsupportedError
from capsa.linux import Library, addressof, c_uint, ctype, function, string_buffer
from capsa.linux import seccomp as kernel
from capsa.state import write_atomic

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
    "SCMP_ACT_NOTIFY": 0x7FC00000,
}
NOTIFY = "SCMP_ACT_NOTIFY"
# Actions that carry a value (errnoRet) in their low 16 bits.
_WITH_VALUE = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
# Syscalls the container's process makes after the filter is loaded and before the listener has
# the notify fd: a notification on them would wait for a listener that cannot answer yet.
NOTIFY_REFUSED = ("write", "sendmsg")
OPERATORS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}
# OCI flag -> seccomp(2) SECCOMP_FILTER_FLAG_* bit.
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
}
_ATTR_CTL_NNP = 3
# SCMP_FLTATR_CTL_OPTIMIZE 2: the syscalls sorted into a binary tree instead of a chain. The
# kernel walks the filter once per syscall number when it loads it (the constant-action cache
# of Linux 5.11+): a 300-syscall chain costs ~1.2 ms to load here, the tree 0.5 ms, and every
# syscall of the container is checked in a few steps instead of up to hundreds.
_ATTR_CTL_OPTIMIZE = 8
ARCHITECTURES = (
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",
)


# The libseccomp functions capsa calls: (restype, argtypes) by name, the C types made only when a
# function is first used (each costs ~0.1M instructions; a cached program needs only the version).
# Structures are packed with _struct: struct scmp_arg_cmp arrays are passed as char pointers.
_SIGNATURES: dict[str, tuple[str | None, list[str]]] = {
    "seccomp_version": ("c_long", []),  # const struct scmp_version *: three unsigned ints there
    "seccomp_init": ("c_void_p", ["c_uint32"]),
    "seccomp_arch_add": ("int", ["c_void_p", "c_uint32"]),
    "seccomp_arch_resolve_name": ("c_uint32", ["c_char_p"]),
    "seccomp_syscall_resolve_name": ("int", ["c_char_p"]),
    "seccomp_rule_add_array": ("int", ["c_void_p", "c_uint32", "c_int", "c_uint", "c_char_p"]),
    "seccomp_attr_set": ("int", ["c_void_p", "c_int", "c_uint32"]),
    "seccomp_export_bpf": ("int", ["c_void_p", "c_int"]),
    "seccomp_release": (None, ["c_void_p"]),
}
_ARG_CMP = "IiQQ"  # struct scmp_arg_cmp: arg, op, datum_a, datum_b


class _Libseccomp:
    """libseccomp's functions by attribute, each made with its signature on first use."""

    def __init__(self, library: Library):
        self._library = library

    def __getattr__(self, name: str) -> Any:
        restype, argtypes = _SIGNATURES[name]
        func = function(name, restype if restype in ("int", None) else ctype(restype), self._library)
        func.argtypes = [ctype(argtype) for argtype in argtypes]
        setattr(self, name, func)
        return func


def _library() -> _Libseccomp:
    try:
        return _Libseccomp(Library("libseccomp.so.2"))
    except OSError:
        raise UnsupportedError("linux.seccomp: libseccomp is not installed on this host (Debian package libseccomp2)") from None


def kernel_has_flag(flag: str) -> bool:
    """Whether this kernel knows an OCI seccomp flag."""
    bits = FLAGS[flag]
    if flag == "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV":
        bits |= kernel.SECCOMP_FILTER_FLAG_NEW_LISTENER  # meaningless (EINVAL) without a listener
    return kernel.filter_flags_known(bits)


def kernel_has_notify() -> bool:
    return kernel.action_available(ACTIONS[NOTIFY])


def supported_flags() -> list[str]:
    return sorted(flag for flag in FLAGS if kernel_has_flag(flag))


def _action(name: str, errno_ret: int | None, default_errno: int, field: str) -> int:
    if name not in ACTIONS:
        raise ConfigError(field, f"unknown seccomp action {name!r}")
    value = ACTIONS[name]
    if name in _WITH_VALUE:
        value |= (errno_ret if errno_ret is not None else default_errno) & 0xFFFF
    return value


# -- the compiled-program cache ---------------------------------------------------------------
# A compiled program depends only on the profile, libseccomp's version and the machine; the key
# hashes all three (and this format's number). Files are written atomically, 0600, in a directory
# under the state root (0700, root's or the rootless user's): whoever could plant a program there
# could already rewrite the containers' state. A file that is not a whole number of BPF
# instructions is ignored and rebuilt.
_CACHE_FORMAT = 2  # 2: the binary tree (_ATTR_CTL_OPTIMIZE)
_BPF_INSTRUCTION = 8


def _cache_path(cache_dir: str, seccomp: dict[str, Any], lib: Any) -> str:
    major, minor, micro = (c_uint * 3).from_address(lib.seccomp_version())
    key = (f"{_CACHE_FORMAT} libseccomp {major}.{minor}.{micro} {posix.uname().machine} "
           + jsonfast.dumps(seccomp))
    return posixlite.join(cache_dir, _sha256.sha256(key.encode()).hexdigest() + ".bpf")


def _read_cached(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            program = f.read()
    except OSError:
        return None
    return program if program and len(program) % _BPF_INSTRUCTION == 0 else None


def _write_cached(path: str, program: bytes) -> None:
    """Best effort: a cache that cannot be written only costs the next container the compile."""
    try:
        posixlite.makedirs(path.rpartition("/")[0], mode=0o700, exist_ok=True)
        write_atomic(path, program)
    except OSError:
        pass


class Filter:
    """A seccomp filter compiled to BPF, ready to load into the calling thread."""

    def __init__(self, seccomp: dict[str, Any], cache_dir: str | None = None):
        """`cache_dir`: where compiled programs are kept by the hash of their profile (see
        _cache_path); managers give every container the same profile, and compiling podman's
        default one costs ~9 ms of each create and exec."""
        validate_profile(seccomp)
        default_errno = seccomp.get("defaultErrnoRet")
        if default_errno is None:
            default_errno = EPERM
        self.default = _action(seccomp.get("defaultAction", ""), seccomp.get("defaultErrnoRet"), EPERM,
                               "linux.seccomp.defaultAction")
        self.notifies = uses_notify(seccomp)
        self.flags = self._kernel_flags(seccomp.get("flags") or [])
        self._listener: Any = None  # see set_listener
        self._message = b""
        self._lib = _library()
        cache = _cache_path(cache_dir, seccomp, self._lib) if cache_dir else None
        program = _read_cached(cache) if cache else None
        if program is None:
            program = self._compile(seccomp, default_errno)
            if cache:
                _write_cached(cache, program)
        self._set_program(program)

    def _set_program(self, program: bytes) -> None:
        self._program = string_buffer(program, len(program))
        # struct sock_fprog (len, filter), read by the kernel.
        self._fprog = _struct.pack("HP", len(program) // 8, addressof(self._program))

    @property
    def program(self) -> bytes:
        """The BPF program (struct sock_filter[]) that load() installs."""
        return self._program.raw

    @classmethod
    def of_program(cls, program: bytes, flags: int) -> Filter:
        """A filter of a `program` built before (Filter.program) with its kernel `flags`, made
        without libseccomp nor the profile: what a pooled sandbox's agent loads, built by the
        zygote (capsa.api.zygote). Not for a profile with SCMP_ACT_NOTIFY (no listener)."""
        made = cls.__new__(cls)
        made.default, made.notifies, made.flags = None, False, flags
        made._listener, made._message, made._lib = None, b"", None
        made._set_program(program)
        return made

    def _compile(self, seccomp: dict[str, Any], default_errno: int) -> bytes:
        """The profile as BPF (struct sock_filter[]), built by libseccomp."""
        lib = self._lib
        self._ctx = lib.seccomp_init(self.default)
        if not self._ctx:
            raise ConfigError("linux.seccomp.defaultAction", "libseccomp refused the default action")
        try:
            lib.seccomp_attr_set(self._ctx, _ATTR_CTL_NNP, 0)  # no_new_privs follows process.noNewPrivileges
            lib.seccomp_attr_set(self._ctx, _ATTR_CTL_OPTIMIZE, 2)  # refused by libseccomp < 2.5: a chain then
            for index, arch in enumerate(seccomp.get("architectures") or []):
                self._add_arch(arch, f"linux.seccomp.architectures[{index}]")
            for index, rule in enumerate(seccomp.get("syscalls") or []):
                self._add_rule(rule, default_errno, f"linux.seccomp.syscalls[{index}]")
            return self._export()
        finally:
            lib.seccomp_release(self._ctx)
            self._ctx = None

    def _kernel_flags(self, flags: list[str]) -> int:
        bits = kernel.SECCOMP_FILTER_FLAG_NEW_LISTENER if self.notifies else 0
        for flag in flags:
            if flag not in FLAGS:
                raise UnsupportedError(f"linux.seccomp.flags: {flag} is not supported by this version of capsa")
            if flag == "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" and not self.notifies:
                continue  # it only changes how notified syscalls wait; the kernel refuses it alone
            if not kernel_has_flag(flag):
                raise UnsupportedError(f"linux.seccomp.flags: {flag} is not supported by the kernel of this host")
            bits |= FLAGS[flag]
        if bits & FLAGS["SECCOMP_FILTER_FLAG_TSYNC"] and self.notifies:
            bits |= kernel.SECCOMP_FILTER_FLAG_TSYNC_ESRCH  # the kernel refuses TSYNC with a listener unless failures are ESRCH
        return bits

    def _check(self, result: int, field: str) -> None:
        if result < 0:
            import errno  # built in (no file to read); for a message only: its table costs 0.26M instructions

            raise ConfigError(field, f"libseccomp: {errno.errorcode.get(-result, -result)}")

    def _add_arch(self, arch: str, field: str) -> None:
        if not arch.startswith("SCMP_ARCH_"):
            raise ConfigError(field, f"unknown architecture {arch!r}")
        token = self._lib.seccomp_arch_resolve_name(arch[len("SCMP_ARCH_"):].lower().encode())
        if not token:
            raise ConfigError(field, f"libseccomp does not know architecture {arch}")
        result = self._lib.seccomp_arch_add(self._ctx, token)
        if result < 0 and -result != EEXIST:
            self._check(result, field)

    def _add_rule(self, rule: dict[str, Any], default_errno: int, field: str) -> None:
        action = _action(rule.get("action", ""), rule.get("errnoRet"), default_errno, f"{field}.action")
        if action == self.default:
            return  # libseccomp refuses a rule that repeats the default; it changes nothing
        conditions = [self._condition(arg, f"{field}.args[{i}]") for i, arg in enumerate(rule.get("args") or [])]
        # Conditions on distinct arguments must all hold (one rule); several on the same argument
        # are alternatives (one rule each), as runc reads the profile.
        indexes = [c[0] for c in conditions]
        groups = [conditions] if len(set(indexes)) == len(indexes) else [[c] for c in conditions]
        for name in rule.get("names") or []:
            number = self._lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                continue  # a syscall this architecture does not have
            for group in groups:
                array = b"".join(_struct.pack(_ARG_CMP, *c) for c in group) if group else None
                result = self._lib.seccomp_rule_add_array(self._ctx, action, number, len(group), array)
                # EEXIST: libseccomp has the rule already (podman's default profile allows socket
                # twice, for two capability cases): runc accepts such a profile, and so do we.
                if result < 0 and -result != EEXIST:
                    self._check(result, f"{field} ({name})")

    @staticmethod
    def _condition(arg: dict[str, Any], field: str) -> tuple[int, int, int, int]:
        op = OPERATORS.get(arg.get("op", ""))
        if op is None:
            raise ConfigError(f"{field}.op", f"unknown seccomp operator {arg.get('op')!r}")
        index = arg.get("index", 0)
        if not isinstance(index, int) or not 0 <= index <= 5:
            raise ConfigError(f"{field}.index", "must be 0 to 5")
        return (index, op, arg.get("value", 0) & (2**64 - 1), arg.get("valueTwo", 0) & (2**64 - 1))

    def _export(self) -> bytes:
        """Through a memfd: libseccomp 2.5 exports only to an fd."""
        fd = posix.memfd_create("capsa-seccomp", posix.MFD_CLOEXEC)
        try:
            self._check(self._lib.seccomp_export_bpf(self._ctx, fd), "linux.seccomp")
            return posix.pread(fd, posix.fstat(fd).st_size, 0)
        finally:
            posix.close(fd)

    def set_listener(self, fd: int, message: str) -> None:
        """The connected listenerPath socket (see connect_listener) and the ContainerProcessState to
        send on it; everything is made ready here so that load() has only sendmsg left to do."""
        self._listener = _socket.socket(fileno=fd)  # this constructor makes syscalls: not after the load
        self._message = message.encode()

    def load(self) -> None:
        """Install the filter; with a listener, hand the notify fd over at once (see the module doc)."""
        notify_fd = kernel.load_filter(self.flags, self._fprog)
        if self.flags & kernel.SECCOMP_FILTER_FLAG_NEW_LISTENER:
            self._hand_over(notify_fd)

    def _hand_over(self, notify_fd: int) -> None:
        if self._listener is None:
            posix.close(notify_fd)
            raise ContainerStartError("linux.seccomp: no listener connection to send the notify fd to")
        try:
            self._listener.sendmsg([self._message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, notify_fd.to_bytes(4, "little"))])
        except OSError as err:
            raise ContainerStartError(f"linux.seccomp.listenerPath: cannot send the notify fd: {err.strerror}") from None
        finally:
            posix.close(notify_fd)
            self._listener.close()


# The last filter shared_filter built: (profile, cache_dir, Filter).
_last_shared: tuple[dict[str, Any], str | None, Filter] | None = None


def shared_filter(seccomp: dict[str, Any], cache_dir: str | None = None) -> Filter:
    """A Filter of `seccomp`: the one built last when the profile is the same. A program that
    makes container after container with one profile (the Python API, a manager's library use)
    then validates, hashes and reads it once, not for each (~0.5 ms). Only a filter without
    SCMP_ACT_NOTIFY is shared: it does not change once built, while a notifying one is given
    its listener per container."""
    global _last_shared
    last = _last_shared
    if last is not None and last[1] == cache_dir and last[0] == seccomp:
        return last[2]
    built = Filter(seccomp, cache_dir)
    if not built.notifies:
        import marshal  # built in

        # A copy: the caller may change its dict afterwards (compared with itself, it would match).
        _last_shared = (marshal.loads(marshal.dumps(seccomp)), cache_dir, built)
    return built


def connect_listener(seccomp: dict[str, Any] | None) -> int:
    """The connected listenerPath socket (-1 if the profile does not notify), made by the runtime on
    the host side so that the path resolves as the caller sees it."""
    if not seccomp or not uses_notify(seccomp):
        return -1
    path = seccomp["listenerPath"]
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as err:
        sock.close()
        raise ContainerStartError(f"linux.seccomp.listenerPath: cannot connect to {path}: {err.strerror or err}") from None
    return sock.detach()


def process_state(seccomp: dict[str, Any], pid: int, state: dict[str, Any]) -> str:
    """runc's ContainerProcessState, sent to the listener with the notify fd."""
    from capsa import OCI_VERSION

    message: dict[str, Any] = {"ociVersion": OCI_VERSION, "fds": ["seccompFd"], "pid": pid}
    if seccomp.get("listenerMetadata"):
        message["metadata"] = seccomp["listenerMetadata"]
    message["state"] = state
    return jsonfast.dumps(message)


def uses_notify(seccomp: dict[str, Any]) -> bool:
    rules = seccomp.get("syscalls") or []
    return isinstance(rules, list) and any(isinstance(r, dict) and r.get("action") == NOTIFY for r in rules)


_last_valid: Any = None  # a copy of the last profile found valid (from the second one on)
_checked_one = False


def validate_profile(seccomp: dict[str, Any]) -> None:
    """Check the whole profile, types included, without building anything: create's early error,
    and what lets the filter builder in the init trust every field. A profile equal to the last
    one found valid is not checked again (a long-lived creator, the API's zygote, gets the same
    profile for every run); what is compared is a copy, so that changing the dict given does not
    fool it. A process's first check keeps none: the command line checks once and exits."""
    global _last_valid, _checked_one
    if seccomp == _last_valid:
        return
    _check_profile(seccomp)
    if not _checked_one:
        _checked_one = True
        return
    import marshal

    try:
        _last_valid = marshal.loads(marshal.dumps(seccomp))
    except ValueError:
        _last_valid = None  # not plain data: checked each time


def _check_profile(seccomp: dict[str, Any]) -> None:
    field = "linux.seccomp"
    if not isinstance(seccomp, dict):
        raise ConfigError(field, "must be an object")
    for key in ("listenerPath", "listenerMetadata", "defaultAction"):
        _check_type(seccomp.get(key, ""), str, f"{field}.{key}")
    if seccomp.get("defaultAction") == NOTIFY:
        raise ConfigError(f"{field}.defaultAction", "SCMP_ACT_NOTIFY cannot be used as default action")
    _action_name(seccomp.get("defaultAction", ""), f"{field}.defaultAction")
    _errno_value(seccomp.get("defaultErrnoRet"), f"{field}.defaultErrnoRet")
    for index, arch in enumerate(_list(seccomp, "architectures", field)):
        if arch not in ARCHITECTURES:
            raise ConfigError(f"{field}.architectures[{index}]", f"unknown architecture {arch!r}")
    for index, flag in enumerate(_list(seccomp, "flags", field)):
        _check_type(flag, str, f"{field}.flags[{index}]")
    for index, rule in enumerate(_list(seccomp, "syscalls", field)):
        _validate_rule(rule, f"{field}.syscalls[{index}]")
    if uses_notify(seccomp):
        if not seccomp.get("listenerPath"):
            raise ConfigError(f"{field}.listenerPath", "SCMP_ACT_NOTIFY needs a listenerPath to send the notify fd to")
        if not kernel_has_notify():
            raise UnsupportedError(f"{field}: SCMP_ACT_NOTIFY is not supported by the kernel of this host")


def _validate_rule(rule: Any, field: str) -> None:
    if not isinstance(rule, dict):
        raise ConfigError(field, "must be an object")
    names = _list(rule, "names", field)
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{field}.names[{index}]", "must be a syscall name")
    action = _action_name(rule.get("action"), f"{field}.action")
    if action == NOTIFY:
        refused = [name for name in NOTIFY_REFUSED if name in names]
        if refused:
            raise ConfigError(field, f"SCMP_ACT_NOTIFY cannot be used for the {refused[0]} syscall (the container's "
                                     "process makes it before the listener has the notify fd)")
    _errno_value(rule.get("errnoRet"), f"{field}.errnoRet")
    for index, arg in enumerate(_list(rule, "args", field)):
        where = f"{field}.args[{index}]"
        if not isinstance(arg, dict):
            raise ConfigError(where, "must be an object")
        if not isinstance(arg.get("op"), str) or arg["op"] not in OPERATORS:
            raise ConfigError(f"{where}.op", f"unknown seccomp operator {arg.get('op')!r}")
        index_value = arg.get("index", 0)
        if type(index_value) is not int or not 0 <= index_value <= 5:
            raise ConfigError(f"{where}.index", "must be 0 to 5")
        for key in ("value", "valueTwo"):
            value = arg.get(key, 0)
            if type(value) is not int or not 0 <= value < 2**64:
                raise ConfigError(f"{where}.{key}", "must be an integer from 0 to 2^64-1")


def _list(parent: dict[str, Any], key: str, field: str) -> list[Any]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{field}.{key}", "must be a list")
    return value


def _check_type(value: Any, kind: type, field: str) -> None:
    if not isinstance(value, kind):
        raise ConfigError(field, "must be a string" if kind is str else f"must be a {kind.__name__}")


def _action_name(name: Any, field: str) -> str:
    if not isinstance(name, str) or name not in ACTIONS:
        raise ConfigError(field, f"unknown seccomp action {name!r}")
    return name


def _errno_value(value: Any, field: str) -> None:
    if value is not None and (type(value) is not int or not 0 <= value <= 0xFFFF):
        raise ConfigError(field, "must be an errno number from 0 to 65535")
