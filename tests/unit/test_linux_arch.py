"""capsa.linux.arch: one syscall table per architecture, checked against libseccomp's, and every
raw syscall of the package numbered through it."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import pathlib
import re

import pytest

from capsa import linux
from capsa.linux import _abi, arch, bpf, tty  # noqa: F401 - tty: loaded for the fake's check
from capsa.linux import seccomp as kernel_seccomp

PACKAGE = pathlib.Path(linux.__file__).parent
# AUDIT_ARCH_* tokens libseccomp knows the architectures by.
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7, "riscv64": 0xC00000F3}


def _called_by_name() -> set[str]:
    """Every syscall the package makes through syscall("name", ...) or arch.number("name")."""
    names = set()
    for source in PACKAGE.glob("*.py"):
        names |= set(re.findall(r'(?:\bsyscall|arch\.number)\("([a-z0-9_]+)"', source.read_text()))
    return names


def test_every_architecture_numbers_every_call_the_package_makes():
    called = _called_by_name()
    assert {"pivot_root", "openat2", "seccomp", "bpf", "clone3", "gettid", "capset"} <= called  # the scan works
    for machine, numbers in arch.SYSCALLS.items():
        assert called <= set(numbers), f"{machine} lacks {sorted(called - set(numbers))}"
        assert set(numbers) <= called, f"{machine} numbers calls capsa never makes: {sorted(set(numbers) - called)}"


def test_numbers_are_the_kernels_as_libseccomp_knows_them():
    path = ctypes.util.find_library("seccomp")
    if path is None:
        pytest.skip("libseccomp is not installed")
    lib = ctypes.CDLL(path)
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    for machine, numbers in arch.SYSCALLS.items():
        for name, number in numbers.items():
            assert lib.seccomp_syscall_resolve_name_arch(AUDIT_ARCH[machine], name.encode()) == number, (machine, name)


@pytest.fixture
def raw_syscalls(monkeypatch):
    """syscall(2) itself replaced: the (number, args) of every raw syscall the package makes."""
    made = []

    def record(number, *args):
        made.append((number, args))
        return 0

    monkeypatch.setattr(_abi, "_syscall", record)
    return made


def _on(monkeypatch, machine: str) -> None:
    monkeypatch.setattr(arch, "MACHINE", machine)
    monkeypatch.setattr(arch, "_NUMBERS", arch.SYSCALLS.get(machine, {}))


def test_an_aarch64_host_gets_its_own_numbers(monkeypatch, raw_syscalls):
    """Before the table, pivot_root, keyctl, capset and seccomp were made with x86-64's numbers everywhere."""
    _on(monkeypatch, "aarch64")
    linux.pivot_root("/new", "/new/old")
    linux.join_session_keyring("c1")
    linux.capset(0, 0, 0)
    linux.close_range_cloexec(3)
    kernel_seccomp.load_filter(0, b"")
    bpf.attach_to_cgroup(3, 4)
    assert [number for number, _ in raw_syscalls] == [41, 219, 91, 436, 277, 280]


def test_an_unknown_machine_gets_enosys_naming_the_call_and_the_machine(monkeypatch, raw_syscalls):
    _on(monkeypatch, "sparc64")
    with pytest.raises(OSError) as caught:
        linux.pivot_root("/new", "/new/old")
    assert caught.value.errno == errno.ENOSYS
    assert "pivot_root" in str(caught.value) and "sparc64" in str(caught.value)
    with pytest.raises(OSError, match="seccomp: no syscall number known for sparc64"):
        kernel_seccomp.load_filter(0, b"")
    assert not kernel_seccomp.filter_flags_known(1)  # a feature probe says "no", it does not raise
    assert linux.clone_child(3) is None  # no clone3 here: the caller forks
    assert raw_syscalls == []


def test_errno_values_named_in_capsa_errors_are_the_kernels():
    from capsa import errors

    for name in ("EPERM", "E2BIG", "EACCES", "EFAULT", "EBUSY", "EEXIST", "EINVAL", "EROFS", "ENOSYS", "ENOTEMPTY", "ELOOP",
                 "EOPNOTSUPP"):
        assert getattr(errors, name) == getattr(errno, name), name


def test_the_fake_kernel_replaces_every_kernel_call(kernel):
    """The seam of tests/unit/fake_kernel.py: every function of the package's modules is faked
    (file_type, pure arithmetic, excepted), and a faked call is recorded and reaches no kernel."""
    from fake_kernel import KERNEL_CALLS, PURE

    faked = set(KERNEL_CALLS)
    for module in (linux.fs, linux.namespaces, linux.process, linux.tty, kernel_seccomp, bpf):
        for name, value in vars(module).items():
            if callable(value) and getattr(value, "__module__", "") in (module.__name__, "fake_kernel") \
                    and not name.startswith("_"):
                assert name in faked or name in PURE, f"{module.__name__}.{name} is not faked"
    assert linux.pivot_root("/new", "/new/old") is None
    linux.unshare(linux.CLONE_NEWNS)
    assert kernel.calls_of("pivot_root") == [("/new", "/new/old")] and kernel.names() == ["pivot_root", "unshare"]
