"""capsa update: change the cgroup limits of a running container (runc's flags, or --resources)."""

from __future__ import annotations

from capsa.cli import command_usage, parse_command, require_args
from capsa.cli.flags import STRING, Flag, UsageError

# flag -> (resources section, key, parser)
_SETTINGS = {
    "blkio-weight": ("blockIO", "weight", "int"),
    "cpu-period": ("cpu", "period", "int"),
    "cpu-quota": ("cpu", "quota", "int"),
    "cpu-burst": ("cpu", "burst", "int"),
    "cpu-rt-period": ("cpu", "realtimePeriod", "int"),
    "cpu-rt-runtime": ("cpu", "realtimeRuntime", "int"),
    "cpu-share": ("cpu", "shares", "int"),
    "cpuset-cpus": ("cpu", "cpus", "str"),
    "cpuset-mems": ("cpu", "mems", "str"),
    "kernel-memory": ("memory", "kernel", "size"),
    "kernel-memory-tcp": ("memory", "kernelTCP", "size"),
    "memory": ("memory", "limit", "size"),
    "memory-reservation": ("memory", "reservation", "size"),
    "memory-swap": ("memory", "swap", "size"),
    "pids-limit": ("pids", "limit", "int"),
}
FLAGS = [Flag("resources,r", STRING, None, "path to a file with LinuxResources JSON, or - for stdin")] + [
    Flag(name, STRING, None, f"{section}.{key}") for name, (section, key, _) in _SETTINGS.items()
] + [Flag("l3-cache-schema", STRING, None, "not supported"), Flag("mem-bw-schema", STRING, None, "not supported")]

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3,
          "t": 1024**4, "tb": 1024**4}


def usage() -> str:
    return command_usage("update", FLAGS)


def run(g, argv: list[str]) -> int:
    parsed = parse_command("update", argv, FLAGS)
    if parsed is None:
        return 0
    require_args(parsed, "update", 1)
    if parsed.l3_cache_schema or parsed.mem_bw_schema:
        raise UsageError("Intel RDT (--l3-cache-schema, --mem-bw-schema) is not supported by this version of capsa")
    resources = _from_file(parsed.resources) if parsed.resources else {}
    for name, (section, key, kind) in _SETTINGS.items():
        value = getattr(parsed, name.replace("-", "_"))
        if value is not None:
            resources.setdefault(section, {})[key] = _parse(name, value, kind)
    if not resources:
        raise UsageError("update: give --resources or at least one limit flag")
    from capsa.container import Container

    Container.load(g.root, parsed.args[0]).update(resources, warn=g.warn)
    return 0


def _from_file(path: str) -> dict:
    from capsa.errors import ConfigError
    from capsa.spec import load_json_file

    resources = load_json_file(path)
    if not isinstance(resources, dict):
        raise ConfigError("resources", "must be an object (OCI LinuxResources)")
    return resources


def _parse(name: str, value: str, kind: str):
    if kind == "str":
        return value
    text = value.strip().lower()
    if kind == "int" or text.lstrip("-").isdigit():
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"--{name}: {value!r} is not a number") from None
    number = text.rstrip("kmgtb")
    unit = text[len(number):]
    try:
        return int(float(number) * _UNITS[unit])
    except (ValueError, KeyError):
        raise UsageError(f"--{name}: {value!r} is not a size (e.g. 512m, 1g)") from None
