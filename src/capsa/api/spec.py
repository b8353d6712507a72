"""The OCI spec of a run of capsa's Python API: runc's default config made stricter (user, pid,
network, IPC, UTS and mount namespaces; no capabilities; no_new_privs; seccomp; read-only root;
masked /proc; cgroup limits; tmpfs /work and /tmp)."""

from __future__ import annotations

import os

from capsa.api.arguments import Limits
from capsa.api.rootfs import Rootfs

# Root inside a sandbox is this host uid (and gid), the next 65535 ids follow: ids no host user
# has, so a process that escapes its namespaces owns nothing of the host. /etc/subuid's entry
# for "capsa" takes precedence.
DEFAULT_HOST_ID = 1_300_000_000
ID_RANGE = 65536

def host_id_range() -> int:
    """The first host id root inside a sandbox maps to: /etc/subuid's range for "capsa" (if it
    has ID_RANGE ids), else DEFAULT_HOST_ID."""
    try:
        with open("/etc/subuid") as f:
            for line in f:
                name, _, rest = line.strip().partition(":")
                start, _, count = rest.partition(":")
                if name == "capsa" and start.isdigit() and count.isdigit() and int(count) >= ID_RANGE:
                    return int(start)
    except OSError:
        pass
    return DEFAULT_HOST_ID


# A blocklist (default allow): the syscalls Docker's and podman's default profile refuse to a
# container without capabilities, plus namespace creation (a new user namespace would hand the
# process every capability over a fresh set of kernel code). Refused with EPERM; clone3 with
# ENOSYS so that libc falls back to clone, whose flags the filter can see, as Docker does.
_DENIED_SYSCALLS = [
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module", "finit_module",
    "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "get_mempolicy", "init_module", "ioperm", "iopl",
    "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount", "mount_setattr",
    "move_mount", "move_pages", "name_to_handle_at", "nfsservctl", "open_by_handle_at", "open_tree",
    "perf_event_open", "personality", "pivot_root", "process_vm_readv", "process_vm_writev", "ptrace",
    "query_module", "quotactl", "quotactl_fd", "reboot", "request_key", "set_mempolicy", "setns", "settimeofday",
    "stime", "swapoff", "swapon", "sysfs", "syslog", "_sysctl", "umount", "umount2", "unshare", "uselib",
    "userfaultfd", "ustat", "vm86", "vm86old", "fanotify_init", "pidfd_getfd",
]
_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)


def default_seccomp() -> dict:
    clone_rules = [{"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                    "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]}
                   for flag in _NAMESPACE_FLAGS]
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": [
            {"names": list(_DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            *clone_rules,
        ],
    }


def can_limit_swap() -> bool:
    """The host accounts swap (v1: memory.memsw files; v2: memory.swap.max, where capsa accepts
    "no swap" even without accounting)."""
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers") or os.path.exists(
        "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")


def build_spec(argv: list[str], rootfs: Rootfs, limits: Limits, env: list[str], cwd: str,
               work_source: str | None = None) -> dict:
    """The OCI spec of one run: runc's default config made stricter (see the module's doc).

    work_source: a host directory to bind at /work (a Sandbox's, kept across runs); without it
    /work is a fresh tmpfs."""
    from capsa.specgen import default_spec

    spec = default_spec(cgroup_namespace=False)
    host_id = host_id_range()
    process = spec["process"]
    process.update(terminal=False, args=argv, env=env, cwd=cwd, noNewPrivileges=True,
                   capabilities={kind: [] for kind in ("bounding", "effective", "permitted", "ambient", "inheritable")})
    rlimits = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}, {"type": "RLIMIT_CORE", "hard": 0, "soft": 0}]
    if limits.cpu_time:
        # The soft limit sends SIGXCPU, the hard one a second later SIGKILL.
        rlimits.append({"type": "RLIMIT_CPU", "soft": limits.cpu_time, "hard": limits.cpu_time + 1})
    if limits.file_size:
        rlimits.append({"type": "RLIMIT_FSIZE", "soft": limits.file_size, "hard": limits.file_size})
    process["rlimits"] = rlimits
    spec["root"] = {"path": rootfs.path, "readonly": True}
    spec["hostname"] = "sandbox"
    scratch = ["nosuid", "nodev", "mode=1777", f"size={limits.scratch}"]
    mounts = [m for m in spec["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    mounts += rootfs.mounts
    mounts.append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": list(scratch)})
    if work_source:
        mounts.append({"destination": "/work", "type": "bind", "source": work_source,
                       "options": ["rbind", "rw", "nosuid", "nodev"]})
    else:
        mounts.append({"destination": "/work", "type": "tmpfs", "source": "tmpfs", "options": list(scratch)})
    spec["mounts"] = mounts
    linux = spec["linux"]
    linux["namespaces"] = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "user")]
    linux["uidMappings"] = [{"containerID": 0, "hostID": host_id, "size": ID_RANGE}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": host_id, "size": ID_RANGE}]
    linux["maskedPaths"] = linux["maskedPaths"] + ["/proc/kallsyms", "/sys/devices/virtual/powercap"]
    linux["seccomp"] = default_seccomp()
    resources = linux.setdefault("resources", {})
    if limits.memory:
        resources["memory"] = {"limit": limits.memory}
        if can_limit_swap():
            resources["memory"]["swap"] = limits.memory  # memory + swap: no swap, so the OOM killer acts
    if limits.cpus:
        resources["cpu"] = {"quota": int(limits.cpus * 100_000), "period": 100_000}
    if limits.pids:
        resources["pids"] = {"limit": limits.pids}
    return spec
