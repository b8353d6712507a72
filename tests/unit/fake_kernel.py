"""A recording stand-in for the kernel calls of capsa.linux: the seam unit tests drive the runtime's
logic through, without root and without touching the host (as youki's test syscalls do).

Callers say `linux.mount(...)`, `tty.unlock_pty(...)`, `kernel.load_filter(...)`: the name is
looked up on the module when called, so replacing it there (monkeypatch, undone after the test)
replaces it for every caller. FakeKernel replaces every kernel call of the package: the ones
capsa.linux exports and those of the modules loaded on demand (tty, seccomp, bpf). Each call is
recorded in order with its arguments; it answers what the test scripted (a value, an OSError with
an errno, or a function of the arguments), else a harmless default. Tests may add their own
events to the same record with note(), to check the order of kernel calls against other steps.
"""

from __future__ import annotations

import posix
import types
from collections.abc import Callable
from typing import Any, NamedTuple

from capsa import linux
from capsa.linux import bpf, tty
from capsa.linux import seccomp as kernel_seccomp

# Module-level functions of the package that are not kernel calls: left as they are.
PURE = {"file_type"}
# Calls that return a new fd by default: a real one (of /dev/null), so that callers may close it.
RETURNS_FD = {"open_tree", "openat2", "inotify_watch", "open_pty_peer", "load_program"}
DEFAULTS: dict[str, Any] = {
    "capget_permitted": (1 << 41) - 1,  # every capability
    "prctl": 0,
    "clone_child": None,  # not possible here: the caller falls back to fork()
    "thread_count": 1,  # the capsa command's: single-threaded
    "pty_number": 0,
    "load_filter": 0,
    "filter_flags_known": True,
    "action_available": True,
}


class Call(NamedTuple):
    name: str
    args: tuple
    kwargs: dict


def _kernel_calls() -> dict[str, list[types.ModuleType]]:
    """Name -> the modules to replace it on: every function defined in capsa.linux's modules."""
    found: dict[str, list[types.ModuleType]] = {}
    for module in (linux, tty, kernel_seccomp, bpf):
        for name, value in vars(module).items():
            if (isinstance(value, types.FunctionType) and value.__module__.startswith("capsa.linux.")
                    and value.__module__ != "capsa.linux._abi" and not name.startswith("_") and name not in PURE):
                found.setdefault(name, []).append(module)
    return found


# Found once, at import: while a FakeKernel is in place the modules hold its recorders instead.
KERNEL_CALLS = _kernel_calls()


class FakeKernel:
    def __init__(self, monkeypatch: Any):
        self.calls: list[Call] = []
        self._scripts: dict[str, list[Any]] = {}
        self._fds: list[int] = []
        for name, modules in KERNEL_CALLS.items():
            for module in modules:
                monkeypatch.setattr(module, name, self._recorder(name))

    # -- scripting ---------------------------------------------------------------------------------
    def answer(self, name: str, *results: Any) -> None:
        """The results of the next calls of `name`, one per call: a value to return, an exception
        to raise, or a function to call with the call's arguments. Then the defaults again."""
        self._scripts.setdefault(name, []).extend(results)

    def fail(self, name: str, errno: int, times: int = 1) -> None:
        """The next `times` calls of `name` fail with OSError(errno), as _abi.check raises it."""
        self.answer(name, *[OSError(errno, f"{name}: {posix.strerror(errno)}") for _ in range(times)])

    def note(self, event: str, *args: Any) -> None:
        """Record a step of the test's own (a channel message, a fork) among the kernel calls."""
        self.calls.append(Call(event, args, {}))

    # -- reading the record ------------------------------------------------------------------------
    def names(self) -> list[str]:
        return [call.name for call in self.calls]

    def calls_of(self, name: str) -> list[tuple]:
        return [call.args for call in self.calls if call.name == name]

    def close(self) -> None:
        """Close the fds the default answers opened that the code under test left open."""
        for fd in self._fds:
            try:
                posix.close(fd)
            except OSError:
                pass

    # -- the replacement ---------------------------------------------------------------------------
    def _recorder(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(Call(name, args, kwargs))
            script = self._scripts.get(name)
            if script:
                result = script.pop(0)
                if isinstance(result, BaseException):
                    raise result
                return result(*args, **kwargs) if callable(result) else result
            if name in RETURNS_FD:
                fd = posix.open("/dev/null", posix.O_RDONLY | posix.O_CLOEXEC)
                self._fds.append(fd)
                return fd
            return DEFAULTS.get(name)

        call.__name__ = name
        return call


def fd_target(fd: int) -> str:
    """What an fd is open on, as /proc/self/fd shows it."""
    return posix.readlink(f"/proc/self/fd/{fd}")


def open_fds() -> set[int]:
    """This process's open fds (not the one the listing itself used)."""
    fds = set()
    for name in posix.listdir("/proc/self/fd"):
        try:
            posix.fstat(int(name))
        except OSError:
            continue
        fds.add(int(name))
    return fds
