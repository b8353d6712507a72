"""Loading and validating config.json (OCI runtime-spec 1.x).

`validate` checks the type and the basic meaning of every field capsa reads, and names the JSON
path of the first bad value (``process.args``, ``mounts[2].destination``, ...), so that the rest
of capsa can trust the dict it gets.
"""

from __future__ import annotations

import posix

from capsa import jsonfast, posixlite
from capsa.errors import CapsaError, ConfigError, UnsupportedError
from capsa.mountopts import PROPAGATION, is_idmapped

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
CAPABILITIES: dict[str, int] = {
    name: number
    for number, name in enumerate(
        "CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID CAP_KILL CAP_SETGID CAP_SETUID "
        "CAP_SETPCAP CAP_LINUX_IMMUTABLE CAP_NET_BIND_SERVICE CAP_NET_BROADCAST CAP_NET_ADMIN CAP_NET_RAW "
        "CAP_IPC_LOCK CAP_IPC_OWNER CAP_SYS_MODULE CAP_SYS_RAWIO CAP_SYS_CHROOT CAP_SYS_PTRACE CAP_SYS_PACCT "
        "CAP_SYS_ADMIN CAP_SYS_BOOT CAP_SYS_NICE CAP_SYS_RESOURCE CAP_SYS_TIME CAP_SYS_TTY_CONFIG CAP_MKNOD "
        "CAP_LEASE CAP_AUDIT_WRITE CAP_AUDIT_CONTROL CAP_SETFCAP CAP_MAC_OVERRIDE CAP_MAC_ADMIN CAP_SYSLOG "
        "CAP_WAKE_ALARM CAP_BLOCK_SUSPEND CAP_AUDIT_READ CAP_PERFMON CAP_BPF CAP_CHECKPOINT_RESTORE".split()
    )
}
RLIMITS: dict[str, int] = {
    name: number
    for number, name in enumerate(
        "RLIMIT_CPU RLIMIT_FSIZE RLIMIT_DATA RLIMIT_STACK RLIMIT_CORE RLIMIT_RSS RLIMIT_NPROC RLIMIT_NOFILE "
        "RLIMIT_MEMLOCK RLIMIT_AS RLIMIT_LOCKS RLIMIT_SIGPENDING RLIMIT_MSGQUEUE RLIMIT_NICE RLIMIT_RTPRIO "
        "RLIMIT_RTTIME".split()
    )
}
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
ROOTFS_PROPAGATION = PROPAGATION
HOOK_PHASES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
DEVICE_TYPES = ("c", "b", "u", "p")
# process.scheduler (sched_setattr(2)): policy and flag numbers of the kernel's uapi sched.h.
SCHED_POLICIES = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3, "SCHED_ISO": 4, "SCHED_IDLE": 5,
                  "SCHED_DEADLINE": 6}
SCHED_FLAGS = {"SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02, "SCHED_FLAG_DL_OVERRUN": 0x04,
               "SCHED_FLAG_KEEP_POLICY": 0x08, "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
               "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40}
# process.ioPriority (ioprio_set(2)) classes.
IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
# linux.memoryPolicy (set_mempolicy(2)): modes and the mode flags.
MEMORY_POLICY_MODES = {"MPOL_DEFAULT": 0, "MPOL_PREFERRED": 1, "MPOL_BIND": 2, "MPOL_INTERLEAVE": 3, "MPOL_LOCAL": 4,
                       "MPOL_PREFERRED_MANY": 5, "MPOL_WEIGHTED_INTERLEAVE": 6}
MEMORY_POLICY_FLAGS = {"MPOL_F_NUMA_BALANCING": 1 << 13, "MPOL_F_RELATIVE_NODES": 1 << 14, "MPOL_F_STATIC_NODES": 1 << 15}
_MAX_NUMA_NODE = 4095  # as crun: a 4096-bit node mask (the kernel's MAX_NUMNODES is at most 1024)
_NGROUPS_MAX = 65536  # the kernel's NGROUPS_MAX (setgroups(2) refuses more)
_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
# Sysctls that belong to a namespace, and which one (runc's validator).
_IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
                "kernel.shmmni", "kernel.shm_rmid_forced")


def load_bundle(bundle: str) -> dict[str, Any]:
    """Read and validate `<bundle>/config.json`."""
    try:
        is_dir = posixlite.isdir(posixlite.realpath(bundle)) if posix.stat(bundle) else False
    except FileNotFoundError:
        raise CapsaError(f"bundle {bundle} does not exist") from None
    except OSError as err:
        raise CapsaError(f"cannot access bundle {bundle}: {err.strerror}") from None
    if not is_dir:
        raise CapsaError(f"bundle {bundle} is not a directory")
    return validate(load_json_file(posixlite.join(bundle, "config.json")))


def load_json_file(path: str) -> Any:
    """A JSON document from a file ("-" for stdin), with errors that name the file."""
    try:
        if path == "-":
            import sys

            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except FileNotFoundError:
        raise CapsaError(f"{path} does not exist") from None
    except OSError as err:
        raise CapsaError(f"cannot read {path}: {err.strerror}") from None
    try:
        return jsonfast.loads(raw)
    except jsonfast.JSONError as err:
        raise ConfigError("", f"{path} is not valid JSON: {err}") from None


# -- small type checks, each naming the field ---------------------------------------------------
def _obj(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(field, "must be an object")
    return value


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(field, "must be an array")
    return value


def _str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(field, "must be a string")
    if "\0" in value:
        # Every string ends up in a syscall or an exec, where NUL ends it (or Python refuses it).
        raise ConfigError(field, "must not contain a NUL byte")
    return value


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(field, "must be true or false")
    return value


def _int(value: Any, field: str, low: int | None = None, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(field, "must be an integer")
    if low is not None and value < low:
        raise ConfigError(field, f"must be at least {low}, not {value}")
    if high is not None and value > high:
        raise ConfigError(field, f"must be at most {high}, not {value}")
    return value


def _strings(value: Any, field: str) -> list[str]:
    for index, item in enumerate(_list(value, field)):
        _str(item, f"{field}[{index}]")
    return value


def _abs_path(value: Any, field: str) -> str:
    if not _str(value, field).startswith("/"):
        raise ConfigError(field, f"must be an absolute path, not {value!r}")
    if "\0" in value:
        raise ConfigError(field, "must not contain a NUL byte")
    return value


def _optional(spec: dict[str, Any], key: str, check: Any, field: str, *args: Any) -> Any:
    if key in spec and spec[key] is not None:
        return check(spec[key], f"{field}.{key}" if field else key, *args)
    return None


# -- the document -------------------------------------------------------------------------------
def validate(spec: Any) -> dict[str, Any]:
    _obj(spec, "config.json")
    version = _str(spec.get("ociVersion"), "ociVersion") if "ociVersion" in spec else None
    if version is None:
        raise ConfigError("ociVersion", "is required")
    if version.split(".")[0] != "1":
        raise ConfigError("ociVersion", f"{version} is not supported: capsa implements runtime-spec 1.x")
    root = _obj(spec.get("root"), "root") if "root" in spec else None
    if root is None:
        raise ConfigError("root", "is required")
    _str(root.get("path"), "root.path")
    if not root["path"]:
        raise ConfigError("root.path", "must not be empty")
    _optional(root, "readonly", _bool, "root")
    if "process" not in spec or spec["process"] is None:
        raise ConfigError("process", "is required to create a container")
    validate_process(spec["process"])
    _optional(spec, "hostname", _str, "")
    _optional(spec, "domainname", _str, "")
    for index, mount in enumerate(_optional(spec, "mounts", _list, "") or []):
        _validate_mount(mount, f"mounts[{index}]")
    _validate_hooks(spec.get("hooks"))
    annotations = _optional(spec, "annotations", _obj, "") or {}
    for key, value in annotations.items():
        _str(value, f"annotations.{key}")
    _validate_linux(spec)
    return spec


def with_joined_namespaces(spec: dict[str, Any], joins: dict[str, str]) -> dict[str, Any]:
    """A copy of `spec` that joins each namespace type of `joins` by its path (a sandbox's),
    whatever its own linux.namespaces says of that type; validated again, since what a config
    may ask depends on its namespaces (a hostname needs a uts namespace of its own)."""
    for kind, path in joins.items():
        if kind not in NAMESPACE_TYPES:
            raise ConfigError("join_namespaces", f"unknown namespace type {kind!r}")
        _abs_path(path, f"join_namespaces.{kind}")
    linux = dict(spec.get("linux") or {})
    namespaces = [dict(ns) for ns in linux.get("namespaces") or []]
    for ns in namespaces:
        if ns["type"] in joins:
            ns["path"] = joins[ns["type"]]
    present = {ns["type"] for ns in namespaces}
    namespaces += [{"type": kind, "path": path} for kind, path in joins.items() if kind not in present]
    linux["namespaces"] = namespaces
    return validate(dict(spec, linux=linux))


def validate_process(process: Any, field: str = "process") -> dict[str, Any]:
    _obj(process, field)
    args = _strings(process.get("args"), f"{field}.args") if "args" in process else None
    if not args:
        raise ConfigError(f"{field}.args", "must be a non-empty array of strings")
    if "cwd" not in process:
        raise ConfigError(f"{field}.cwd", "is required")
    _abs_path(process["cwd"], f"{field}.cwd")
    for index, entry in enumerate(_optional(process, "env", _strings, field) or []):
        if "=" not in entry or entry.startswith("="):
            raise ConfigError(f"{field}.env[{index}]", f"must be KEY=VALUE, not {entry!r}")
    _optional(process, "terminal", _bool, field)
    size = _optional(process, "consoleSize", _obj, field)
    if size is not None:
        for key in ("height", "width"):
            if key in size:
                _int(size[key], f"{field}.consoleSize.{key}", 0, 65535)
    _validate_user(process.get("user"), f"{field}.user")
    _validate_capabilities(process.get("capabilities"), f"{field}.capabilities")
    _validate_rlimits(process.get("rlimits"), f"{field}.rlimits")
    _optional(process, "noNewPrivileges", _bool, field)
    _optional(process, "oomScoreAdj", _int, field, -1000, 1000)
    _optional(process, "apparmorProfile", _str, field)
    _optional(process, "selinuxLabel", _str, field)
    _validate_io_priority(process.get("ioPriority"), f"{field}.ioPriority")
    _validate_scheduler(process.get("scheduler"), f"{field}.scheduler")
    _optional(process, "execCPUAffinity", _obj, field)
    return process


def _validate_user(user: Any, field: str) -> None:
    if user is None:
        return
    _obj(user, field)
    for key in ("uid", "gid"):
        if key in user:
            _int(user[key], f"{field}.{key}", 0, _UINT32_MAX)
    if user.get("umask") is not None:
        _int(user["umask"], f"{field}.umask", 0, 0o7777)
    gids = _optional(user, "additionalGids", _list, field) or []
    if len(gids) > _NGROUPS_MAX:
        raise ConfigError(f"{field}.additionalGids", f"{len(gids)} groups: the kernel allows at most {_NGROUPS_MAX}")
    for index, gid in enumerate(gids):
        _int(gid, f"{field}.additionalGids[{index}]", 0, _UINT32_MAX)
    if _optional(user, "username", _str, field) and "uid" not in user:
        # A Windows-only field: on Linux it would silently run the process as uid 0.
        raise ConfigError(f"{field}.username", "Linux processes run by numeric uid: give user.uid (capsa does not "
                                               "look names up in the image's /etc/passwd)")


def _known_name(value: Any, field: str, known: dict[str, int]) -> str:
    if _str(value, field) not in known:
        raise ConfigError(field, f"unknown value {value!r} (known: {', '.join(known)})")
    return value


def _validate_scheduler(scheduler: Any, field: str) -> None:
    """process.scheduler, with the rules runc checks and those the kernel would refuse with a bare EINVAL."""
    if scheduler is None:
        return
    _obj(scheduler, field)
    if scheduler.get("policy") is None:
        raise ConfigError(f"{field}.policy", "is required")
    policy = _known_name(scheduler["policy"], f"{field}.policy", SCHED_POLICIES)
    nice = _optional(scheduler, "nice", _int, field, _INT32_MIN, _INT32_MAX) or 0
    if policy in ("SCHED_OTHER", "SCHED_BATCH") and not -20 <= nice <= 19:
        raise ConfigError(f"{field}.nice", f"must be between -20 and 19 with {policy}, not {nice}")
    priority = _optional(scheduler, "priority", _int, field, _INT32_MIN, _INT32_MAX) or 0
    if policy in ("SCHED_FIFO", "SCHED_RR"):
        if not 1 <= priority <= 99:
            raise ConfigError(f"{field}.priority", f"{policy} needs a priority between 1 and 99, not {priority}")
    elif priority:
        raise ConfigError(f"{field}.priority", f"only SCHED_FIFO and SCHED_RR have a static priority, not {policy}")
    times = {key: _optional(scheduler, key, _int, field, 0, _UINT64_MAX) or 0 for key in ("runtime", "deadline", "period")}
    if policy == "SCHED_DEADLINE":
        _check_deadline(times, field)
    elif any(times.values()):
        key = next(key for key, value in times.items() if value)
        raise ConfigError(f"{field}.{key}", f"runtime, deadline and period are for SCHED_DEADLINE only, not {policy}")
    for index, flag in enumerate(_optional(scheduler, "flags", _strings, field) or []):
        _known_name(flag, f"{field}.flags[{index}]", SCHED_FLAGS)


def _check_deadline(times: dict[str, int], field: str) -> None:
    """sched(7): runtime <= deadline <= period (period 0 means the deadline), runtime at least
    1024 ns, none 2^63 or more. The bounds on the period are sysctls, left to the kernel."""
    runtime, deadline, period = times["runtime"], times["deadline"], times["period"]
    if runtime < 1024:
        raise ConfigError(f"{field}.runtime", f"SCHED_DEADLINE needs a runtime of at least 1024 ns, not {runtime}")
    for key in ("deadline", "period"):
        if times[key] >= 2**63:
            raise ConfigError(f"{field}.{key}", f"must be below 2^63 ns, not {times[key]}")
    if deadline < runtime:
        raise ConfigError(f"{field}.deadline", f"SCHED_DEADLINE needs runtime <= deadline, not {runtime} > {deadline}")
    if period and period < deadline:
        raise ConfigError(f"{field}.period", f"SCHED_DEADLINE needs deadline <= period, not {deadline} > {period}")


def _validate_io_priority(io_priority: Any, field: str) -> None:
    if io_priority is None:
        return
    _obj(io_priority, field)
    for key in ("class", "priority"):
        if io_priority.get(key) is None:
            raise ConfigError(f"{field}.{key}", "is required")
    _known_name(io_priority["class"], f"{field}.class", IOPRIO_CLASSES)
    _int(io_priority["priority"], f"{field}.priority", 0, 7)


def parse_node_list(text: str, field: str) -> list[int]:
    """NUMA nodes written as cpusets are, "0-3,7": the sorted node numbers; "" is none."""
    nodes: set[int] = set()
    for part in text.split(",") if text.strip() else ():
        first, dash, last = part.strip().partition("-")
        if not (_decimal(first) and (_decimal(last) or not dash)):
            raise ConfigError(field, f"{text!r} is not a list of nodes such as \"0-3,7\"")
        low, high = int(first), int(last) if dash else int(first)
        if low > high:
            raise ConfigError(field, f"{text!r}: the range {part.strip()} runs backwards")
        if high > _MAX_NUMA_NODE:
            raise ConfigError(field, f"{text!r}: node {high} is beyond the highest node capsa can name ({_MAX_NUMA_NODE})")
        nodes.update(range(low, high + 1))
    return sorted(nodes)


def _decimal(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _validate_memory_policy(policy: Any, field: str = "linux.memoryPolicy") -> None:
    """linux.memoryPolicy, with the rules of set_mempolicy(2) that do not depend on the host."""
    if policy is None:
        return
    _obj(policy, field)
    if policy.get("mode") is None:
        raise ConfigError(f"{field}.mode", "is required")
    mode = _known_name(policy["mode"], f"{field}.mode", MEMORY_POLICY_MODES)
    nodes = parse_node_list(_optional(policy, "nodes", _str, field) or "", f"{field}.nodes")
    flags = [_known_name(flag, f"{field}.flags[{index}]", MEMORY_POLICY_FLAGS)
             for index, flag in enumerate(_optional(policy, "flags", _strings, field) or [])]
    if mode in ("MPOL_DEFAULT", "MPOL_LOCAL") and nodes:
        raise ConfigError(f"{field}.nodes", f"{mode} takes no nodes")
    if mode not in ("MPOL_DEFAULT", "MPOL_LOCAL", "MPOL_PREFERRED") and not nodes:
        raise ConfigError(f"{field}.nodes", f"{mode} needs at least one node")
    if "MPOL_F_STATIC_NODES" in flags and "MPOL_F_RELATIVE_NODES" in flags:
        raise ConfigError(f"{field}.flags", "MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude each other")
    if mode == "MPOL_LOCAL" and ({"MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"} & set(flags)):
        raise ConfigError(f"{field}.flags", "MPOL_LOCAL takes no node flags")


def _validate_capabilities(capabilities: Any, field: str) -> None:
    # Only the types: a name capsa does not know is logged and ignored at create/exec
    # (capsa.caps.unavailable), not refused, as runtime-spec 1.1+ says and runc does.
    if capabilities is None:
        return
    _obj(capabilities, field)
    for kind in CAPABILITY_SETS:
        _optional(capabilities, kind, _strings, field)


def _validate_rlimits(rlimits: Any, field: str) -> None:
    if rlimits is None:
        return
    seen: set[str] = set()
    for index, rlimit in enumerate(_list(rlimits, field)):
        where = f"{field}[{index}]"
        _obj(rlimit, where)
        kind = _str(rlimit.get("type"), f"{where}.type")
        if kind not in RLIMITS:
            raise ConfigError(f"{where}.type", f"unknown rlimit {kind!r}")
        if kind in seen:
            raise ConfigError(f"{where}.type", f"{kind} is given twice")
        seen.add(kind)
        soft = _int(rlimit.get("soft"), f"{where}.soft", 0, _UINT64_MAX)
        hard = _int(rlimit.get("hard"), f"{where}.hard", 0, _UINT64_MAX)
        if soft > hard:
            raise ConfigError(where, f"soft limit {soft} is above hard limit {hard}")


def _validate_mount(mount: Any, field: str) -> None:
    _obj(mount, field)
    if "destination" not in mount:
        raise ConfigError(f"{field}.destination", "is required")
    _abs_path(mount["destination"], f"{field}.destination")
    _optional(mount, "type", _str, field)
    _optional(mount, "source", _str, field)
    _optional(mount, "options", _strings, field)
    for key in ("uidMappings", "gidMappings"):
        _validate_mappings(mount.get(key), f"{field}.{key}")
    if bool(mount.get("uidMappings")) != bool(mount.get("gidMappings")):
        given, missing = ("uidMappings", "gidMappings") if mount.get("uidMappings") else ("gidMappings", "uidMappings")
        raise ConfigError(f"{field}.{missing}", f"an idmapped mount needs both uidMappings and gidMappings ({given} is given)")


def _validate_idmapped_mounts(mounts: list[dict[str, Any]], types: set[str]) -> None:
    """idmap or ridmap without mappings of its own takes the container's user namespace's: there must be one."""
    for index, mount in enumerate(mounts):
        if is_idmapped(mount) and not mount.get("uidMappings") and "user" not in types:
            raise ConfigError(f"mounts[{index}].uidMappings", "idmap and ridmap without uidMappings/gidMappings use the "
                                                             "container's user namespace, and linux.namespaces has none")


def _validate_hooks(hooks: Any) -> None:
    if hooks is None:
        return
    _obj(hooks, "hooks")
    for phase, entries in hooks.items():
        if phase not in HOOK_PHASES:
            raise ConfigError(f"hooks.{phase}", f"unknown hook phase (known: {', '.join(HOOK_PHASES)})")
        for index, hook in enumerate(_list(entries, f"hooks.{phase}")):
            where = f"hooks.{phase}[{index}]"
            _obj(hook, where)
            if "path" not in hook:
                raise ConfigError(f"{where}.path", "is required")
            _abs_path(hook["path"], f"{where}.path")
            _optional(hook, "args", _strings, where)
            _optional(hook, "env", _strings, where)
            _optional(hook, "timeout", _int, where, 1)


def _validate_mappings(mappings: Any, field: str) -> None:
    if mappings is None:
        return
    for index, mapping in enumerate(_list(mappings, field)):
        where = f"{field}[{index}]"
        _obj(mapping, where)
        for key in ("containerID", "hostID"):
            _int(mapping.get(key), f"{where}.{key}", 0, _UINT32_MAX)
        _int(mapping.get("size"), f"{where}.size", 1, _UINT32_MAX)


def _validate_linux(spec: dict[str, Any]) -> None:
    if spec.get("linux") is None:
        spec["linux"] = {}
    linux = _obj(spec["linux"], "linux")
    types = _validate_namespaces(linux)
    new_types = {ns["type"] for ns in linux.get("namespaces") or [] if not ns.get("path")}
    _validate_mappings(linux.get("uidMappings"), "linux.uidMappings")
    _validate_mappings(linux.get("gidMappings"), "linux.gidMappings")
    has_mappings = bool(linux.get("uidMappings") or linux.get("gidMappings"))
    if has_mappings and "user" not in types:
        raise ConfigError("linux.uidMappings", "id mappings need a user namespace in linux.namespaces")
    if "user" in new_types and not (linux.get("uidMappings") and linux.get("gidMappings")):
        raise ConfigError("linux.uidMappings", "a new user namespace needs uidMappings and gidMappings")
    # As runc: a name may be set in a uts namespace of the container's own, new or joined, never in the host's.
    if spec.get("hostname") and "uts" not in types:
        raise ConfigError("hostname", "setting the hostname needs a uts namespace in linux.namespaces")
    if spec.get("domainname") and "uts" not in types:
        raise ConfigError("domainname", "setting the domainname needs a uts namespace in linux.namespaces")
    _validate_time_offsets(linux.get("timeOffsets"), new_types)
    for index, device in enumerate(_optional(linux, "devices", _list, "linux") or []):
        _validate_device(device, f"linux.devices[{index}]")
    _validate_sysctl(linux.get("sysctl"), types)
    for key in ("maskedPaths", "readonlyPaths"):
        for index, path in enumerate(_optional(linux, key, _list, "linux") or []):
            _abs_path(path, f"linux.{key}[{index}]")
    propagation = _optional(linux, "rootfsPropagation", _str, "linux")
    if propagation and propagation not in ROOTFS_PROPAGATION:
        raise ConfigError("linux.rootfsPropagation", f"unknown propagation {propagation!r}")
    for key in ("mountLabel", "cgroupsPath"):
        _optional(linux, key, _str, "linux")
    _validate_resources(_optional(linux, "resources", _obj, "linux"))
    for key in ("seccomp", "personality", "intelRdt", "netDevices"):
        _optional(linux, key, _obj, "linux")
    _validate_memory_policy(linux.get("memoryPolicy"))
    _validate_idmapped_mounts(spec.get("mounts") or [], types)


_RESOURCE_INTS = {
    "memory": ("limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness"),
    "cpu": ("shares", "quota", "burst", "period", "realtimeRuntime", "realtimePeriod", "idle"),
    "pids": ("limit",),
    "blockIO": ("weight", "leafWeight"),
    "network": ("classID",),
}


def _validate_resources(resources: dict[str, Any] | None) -> None:
    """Types of linux.resources, deep enough that the cgroup driver can trust them."""
    if not resources:
        return
    field = "linux.resources"
    for section, keys in _RESOURCE_INTS.items():
        values = _optional(resources, section, _obj, field) or {}
        for key in keys:
            _optional(values, key, _int, f"{field}.{section}")
    memory = resources.get("memory") or {}
    for key in ("disableOOMKiller", "useHierarchy", "checkBeforeUpdate"):
        _optional(memory, key, _bool, f"{field}.memory")
    cpu = resources.get("cpu") or {}
    for key in ("cpus", "mems"):
        _optional(cpu, key, _str, f"{field}.cpu")
    for index, rule in enumerate(_optional(resources, "devices", _list, field) or []):
        where = f"{field}.devices[{index}]"
        _obj(rule, where)
        _bool(rule.get("allow"), f"{where}.allow")
        if rule.get("type") is not None and rule["type"] not in ("a", "c", "b", "u", "p"):
            raise ConfigError(f"{where}.type", f"unknown device type {rule['type']!r}")
        for key in ("major", "minor"):
            _optional(rule, key, _int, where)
        access = _optional(rule, "access", _str, where)
        if access and not set(access) <= set("rwm"):
            raise ConfigError(f"{where}.access", f"must be made of r, w and m, not {access!r}")
    block = resources.get("blockIO") or {}
    for key in ("weightDevice", "throttleReadBpsDevice", "throttleWriteBpsDevice", "throttleReadIOPSDevice",
                "throttleWriteIOPSDevice"):
        for index, device in enumerate(_optional(block, key, _list, f"{field}.blockIO") or []):
            where = f"{field}.blockIO.{key}[{index}]"
            _obj(device, where)
            for number in ("major", "minor"):
                _int(device.get(number), f"{where}.{number}", 0)
            _optional(device, "rate" if key != "weightDevice" else "weight", _int, where, 0)
    for index, limit in enumerate(_optional(resources, "hugepageLimits", _list, field) or []):
        where = f"{field}.hugepageLimits[{index}]"
        _obj(limit, where)
        _str(limit.get("pageSize"), f"{where}.pageSize")
        _int(limit.get("limit"), f"{where}.limit")
    network = resources.get("network") or {}
    for index, priority in enumerate(_optional(network, "priorities", _list, f"{field}.network") or []):
        where = f"{field}.network.priorities[{index}]"
        _obj(priority, where)
        _str(priority.get("name"), f"{where}.name")
        _int(priority.get("priority"), f"{where}.priority")
    for name, limits in (_optional(resources, "rdma", _obj, field) or {}).items():
        _obj(limits, f"{field}.rdma.{name}")
    for key, value in (_optional(resources, "unified", _obj, field) or {}).items():
        _str(value, f"{field}.unified.{key}")


def _validate_namespaces(linux: dict[str, Any]) -> set[str]:
    types: set[str] = set()
    for index, ns in enumerate(_optional(linux, "namespaces", _list, "linux") or []):
        where = f"linux.namespaces[{index}]"
        _obj(ns, where)
        kind = _str(ns.get("type"), f"{where}.type")
        if kind not in NAMESPACE_TYPES:
            raise ConfigError(f"{where}.type", f"unknown namespace type {kind!r}")
        if kind in types:
            raise ConfigError(f"{where}.type", f"namespace {kind} is given twice")
        types.add(kind)
        if ns.get("path") is not None:
            _abs_path(ns["path"], f"{where}.path")
    return types


def _validate_time_offsets(offsets: Any, new_types: set[str]) -> None:
    if offsets is None:
        return
    _obj(offsets, "linux.timeOffsets")
    if offsets and "time" not in new_types:
        raise ConfigError("linux.timeOffsets", "clock offsets need a new time namespace")
    for clock, offset in offsets.items():
        if clock not in ("monotonic", "boottime"):
            raise ConfigError(f"linux.timeOffsets.{clock}", "unknown clock (monotonic or boottime)")
        _obj(offset, f"linux.timeOffsets.{clock}")
        _optional(offset, "secs", _int, f"linux.timeOffsets.{clock}")
        _optional(offset, "nanosecs", _int, f"linux.timeOffsets.{clock}", 0, 999_999_999)


def _validate_device(device: Any, field: str) -> None:
    _obj(device, field)
    if "path" not in device:
        raise ConfigError(f"{field}.path", "is required")
    # Anywhere in the rootfs, as runc: a path outside /dev is created there too.
    if posixlite.basename(_abs_path(device["path"], f"{field}.path")) in ("", ".", ".."):
        raise ConfigError(f"{field}.path", f"{device['path']!r} does not name a file")
    kind = _str(device.get("type"), f"{field}.type")
    if kind not in DEVICE_TYPES:
        raise ConfigError(f"{field}.type", f"unknown device type {kind!r} (c, b, u or p)")
    if kind != "p":
        for key in ("major", "minor"):
            if key not in device:
                raise ConfigError(f"{field}.{key}", f"is required for a type {kind} device")
            _int(device[key], f"{field}.{key}", 0)
    _optional(device, "fileMode", _int, field, 0, 0o7777)
    _optional(device, "uid", _int, field, 0, _UINT32_MAX)
    _optional(device, "gid", _int, field, 0, _UINT32_MAX)


def _validate_sysctl(sysctl: Any, types: set[str]) -> None:
    """Only namespaced sysctls, and only with their namespace: anything else would change the host."""
    if sysctl is None:
        return
    _obj(sysctl, "linux.sysctl")
    for key, value in sysctl.items():
        field = f"linux.sysctl.{key}"
        _str(value, field)
        # The key becomes a path under /proc/sys: "net.x/../../kernel/core_pattern" would pass the
        # namespace check below and write a host-wide sysctl.
        if any(part in ("", ".", "..") for part in key.replace("/", ".").split(".")):
            raise ConfigError(field, "is not a sysctl name (empty, '.' or '..' components)")
        if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
            if "ipc" not in types:
                raise ConfigError(field, "needs an ipc namespace")
        elif key.startswith("net."):
            if "network" not in types:
                raise ConfigError(field, "needs a network namespace (it would change the host's)")
        elif key == "kernel.hostname":
            # As runc and crun, whatever the namespaces: two places to set one name.
            raise ConfigError(field, "conflicts with the hostname field: set the hostname there")
        elif key == "kernel.domainname":
            # As runc and crun (and the domainname field): a uts namespace of the container's own,
            # new or joined by path; without one the container shares the host's.
            if "uts" not in types:
                raise ConfigError(field, "needs a uts namespace in linux.namespaces (it would change the host's)")
        else:
            raise ConfigError(field, "is not namespaced: a container must not change it on the host")


# -- what this version cannot honour ------------------------------------------------------------
def refuse_unsupported(spec: dict[str, Any]) -> None:
    """Features this version cannot honour fail clearly instead of being ignored."""
    linux_spec = spec.get("linux") or {}
    if linux_spec.get("seccomp"):
        from capsa.seccomp import validate_profile

        validate_profile(linux_spec["seccomp"])
    refuse_unsupported_process(spec.get("process") or {}, "process")
    for key in ("intelRdt", "netDevices"):
        if linux_spec.get(key):
            raise UnsupportedError(f"linux.{key} is not supported by this version of capsa")
    personality = linux_spec.get("personality")
    if personality and (personality.get("domain") not in (None, "LINUX") or personality.get("flags")):
        raise UnsupportedError("linux.personality: domains other than LINUX, and flags, are not supported by this version of capsa")
    if linux_spec.get("mountLabel"):
        from capsa import lsm

        lsm.check_available({}, linux_spec["mountLabel"])
    for index, mount in enumerate(spec.get("mounts") or []):
        if "tmpcopyup" in (mount.get("options") or []):
            raise UnsupportedError(f"mounts[{index}]: tmpcopyup (copy-up mounts) not supported by this version of capsa")
        if is_idmapped(mount):
            _refuse_unsupported_idmap(mount, f"mounts[{index}]")


def _refuse_unsupported_idmap(mount: dict[str, Any], field: str) -> None:
    """What capsa cannot do with an idmapped mount (capsa.idmapped makes the others)."""
    from capsa import mountopts

    if not (mount.get("type") == "bind" or mountopts.parse_mount_options(mount.get("options") or []).is_bind):
        raise UnsupportedError(f"{field}: idmapped mounts are supported for bind mounts only (as runc), not for a new "
                               f"{mount.get('type') or 'untyped'} filesystem")
    if posix.geteuid() != 0:
        raise UnsupportedError(f"{field}: idmapped mounts need root: mount_setattr(MOUNT_ATTR_IDMAP) needs "
                               "CAP_SYS_ADMIN over the source's filesystem (runc refuses them in rootless containers too)")


def refuse_unsupported_process(process: dict[str, Any], field: str) -> None:
    if process.get("execCPUAffinity"):
        raise UnsupportedError(f"{field}.execCPUAffinity is not supported by this version of capsa")
    if process.get("apparmorProfile") or process.get("selinuxLabel"):
        from capsa import lsm

        lsm.check_available(process, None, field)
