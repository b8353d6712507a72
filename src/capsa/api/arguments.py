"""The arguments of capsa's Python API, checked before anything is made: sizes, limits, argv,
environment, cwd, stdin, timeout. A bad one is an InvalidArgumentError naming it."""

from __future__ import annotations

from dataclasses import dataclass

from capsa.api.errors import InvalidArgumentError

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_OUTPUT_LIMIT = 16 * 1024 * 1024
DEFAULT_SCRATCH = 64 * 1024 * 1024

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
          "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}


def parse_size(value, name: str = "size") -> int:
    """Bytes from an int or a string such as "256M", "1.5G", "64KiB" (binary units)."""
    if isinstance(value, bool):
        raise InvalidArgumentError(name, f"expected a size (bytes or a string like '256M'), not {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip().upper()
        digits = text.rstrip("KMGIB")
        unit = text[len(digits):]
        try:
            number = int(float(digits) * _UNITS[unit])
        except (ValueError, KeyError):
            raise InvalidArgumentError(name, f"cannot read {value!r} as a size (bytes or a string like '256M')") from None
    else:
        raise InvalidArgumentError(name, f"expected a size (bytes or a string like '256M'), not {type(value).__name__}")
    if number <= 0:
        raise InvalidArgumentError(name, f"must be positive, not {value!r}")
    return number


def _positive(value, name: str, kind=float):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidArgumentError(name, f"must be a positive number, not {value!r}")
    if kind is int and int(value) != value:
        raise InvalidArgumentError(name, f"must be a whole number, not {value!r}")
    return kind(value)


@dataclass(frozen=True)
class Limits:
    memory: int | None = None  # bytes (memory cgroup); the OOM killer ends a run above it
    cpus: float | None = None  # CPU quota in CPUs (1.5: one and a half CPUs' time per period)
    pids: int | None = None  # processes and threads at once
    cpu_time: int | None = None  # seconds of CPU per process (RLIMIT_CPU)
    file_size: int | None = None  # bytes per file written (RLIMIT_FSIZE)
    scratch: int = DEFAULT_SCRATCH  # bytes of /work and of /tmp (tmpfs size)
    network: bool = False

    @classmethod
    def from_arguments(cls, memory=None, cpus=None, pids=None, cpu_time=None, file_size=None, scratch=None,
                       network=False) -> Limits:
        if network not in (False, True):
            raise InvalidArgumentError("network", f"must be False or True, not {network!r}")
        if network:
            raise InvalidArgumentError("network", "network=True is not implemented yet: sandboxes have loopback only")
        return cls(
            memory=None if memory is None else parse_size(memory, "memory"),
            cpus=_positive(cpus, "cpus"),
            pids=_positive(pids, "pids", int),
            cpu_time=None if cpu_time is None else max(1, int(-(-_positive(cpu_time, "cpu_time") // 1))),
            file_size=None if file_size is None else parse_size(file_size, "file_size"),
            scratch=DEFAULT_SCRATCH if scratch is None else parse_size(scratch, "scratch"),
            network=network,
        )


def check_argv(argv) -> list[str]:
    if isinstance(argv, (str, bytes)) or not isinstance(argv, (list, tuple)) or not argv:
        raise InvalidArgumentError("argv", f"expected a non-empty list of strings, not {argv!r}")
    if not all(isinstance(a, str) and "\0" not in a for a in argv):
        raise InvalidArgumentError("argv", "every argument must be a string without NUL")
    return list(argv)


def check_env(env) -> list[str]:
    if env is None:
        return [PATH]
    if not isinstance(env, dict):
        raise InvalidArgumentError("env", f"expected a dict of strings, not {type(env).__name__}")
    result = [PATH] if "PATH" not in env else []
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key or not isinstance(value, str) or "\0" in value:
            raise InvalidArgumentError("env", f"bad entry {key!r}: names are non-empty strings without '=', values strings")
        result.append(f"{key}={value}")
    return result


def check_cwd(cwd) -> str:
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise InvalidArgumentError("cwd", f"must be an absolute path inside the sandbox, not {cwd!r}")
    return cwd


def check_stdin(stdin) -> bytes | None:
    if stdin is None:
        return None
    if isinstance(stdin, str):
        return stdin.encode()
    if isinstance(stdin, (bytes, bytearray, memoryview)):
        return bytes(stdin)
    raise InvalidArgumentError("stdin", f"expected bytes or str, not {type(stdin).__name__}")


def check_timeout(timeout) -> float | None:
    return _positive(timeout, "timeout")


def check_output_limit(limit) -> int:
    return DEFAULT_OUTPUT_LIMIT if limit is None else parse_size(limit, "output_limit")
