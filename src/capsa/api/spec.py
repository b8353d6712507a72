"""The OCI spec of a run of capsa's Python API: runc's default config made stricter (user, pid,
network, IPC, UTS and mount namespaces; no capabilities; no_new_privs; seccomp; read-only root;
masked /proc; cgroup limits; tmpfs /work and /tmp)."""

from __future__ import annotations

import os

from capsa.api.arguments import Limits
from capsa.api.rootfs import API_DIR, Rootfs

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


def default_seccomp(machine: str | None = None) -> dict:
    """The default seccomp profile of a run: Docker's default allowlist for a process without
    capabilities (capsa.api.seccomp_profile says what it allows and where it is stricter)."""
    from capsa.api.seccomp_profile import profile

    return profile(machine)


def id_mappings() -> tuple[list[dict], list[dict]]:
    """Root inside is an unprivileged host id and the 65535 after it (as root); rootless, the
    caller and its subordinate ids (capsa.api.rootless)."""
    if os.geteuid() != 0:
        from capsa.api.rootless import id_mappings as rootless_mappings

        return rootless_mappings()
    host_id = host_id_range()
    return ([{"containerID": 0, "hostID": host_id, "size": ID_RANGE}],
            [{"containerID": 0, "hostID": host_id, "size": ID_RANGE}])


def root_host_ids() -> tuple[int, int]:
    """The host uid and gid of root inside a sandbox: who owns what a Sandbox's write_file writes."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    return host_id_range(), host_id_range()


def check_limits_possible(limits: Limits) -> None:
    """Rootless, cgroup limits need a cgroup delegated to the caller: refuse them (naming the
    argument) where there is none, rather than run without them."""
    if os.geteuid() == 0:
        return
    asked = [name for name in ("memory", "cpus", "pids") if getattr(limits, name) is not None]
    if not asked:
        return
    from capsa.api.rootless import delegated_cgroup

    if delegated_cgroup() is None:
        from capsa.api.errors import InvalidArgumentError

        raise InvalidArgumentError(asked[0], "a rootless sandbox's memory, cpus and pids limits need a cgroup v2 "
                                   "delegated to the user (memory, pids and cpu enabled in a cgroup it may write, as "
                                   "systemd's Delegate=yes gives): this host has none for it")


def can_limit_swap() -> bool:
    """The host accounts swap (v1: memory.memsw files; v2: memory.swap.max, where capsa accepts
    "no swap" even without accounting)."""
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers") or os.path.exists(
        "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")


def _resolv_conf(rootfs: Rootfs) -> list[dict]:
    """With the host's network, its DNS configuration too: /etc/resolv.conf bound read-only
    where the root has that file to mount it on (the sandbox's root is read-only: nothing is
    made in a caller's rootfs; HostTools' skeleton has it)."""
    source = os.path.realpath("/etc/resolv.conf")
    target = os.path.join(rootfs.path, "etc", "resolv.conf")
    if not os.path.isfile(source) or os.path.islink(target) or not os.path.isfile(target):
        return []
    return [{"destination": "/etc/resolv.conf", "type": "bind", "source": source,
             "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}]


# A /dev made once (as root) and bound read-only into every sandbox (see dev_template).
DEV_TEMPLATE = API_DIR + "/dev"
_DEV_NODES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))
_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
              ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))


def dev_template() -> str | None:
    """The sandboxes' /dev as root makes it once: runc's default devices (mode 0666), its links,
    and the pts, shm and mqueue directories the runs' own mounts go over; bound read-only into
    each sandbox, for a tmpfs, six device binds, seven links and three directories each run
    would make (0.4 ms). Read-only, a run can leave nothing in it for another. None rootless
    (no mknod): each run then makes its /dev. Made under another name and renamed into place,
    so that programs starting at once each see a whole one."""
    if os.geteuid() != 0:
        return None
    if _is_dev_template(DEV_TEMPLATE):
        return DEV_TEMPLATE
    import shutil
    import stat

    building = f"{DEV_TEMPLATE}.{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    os.mkdir(building, 0o755)
    try:
        for name, major, minor in _DEV_NODES:
            os.mknod(os.path.join(building, name), 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            os.chmod(os.path.join(building, name), 0o666)  # whatever the umask
        for name, target in _DEV_LINKS:
            os.symlink(target, os.path.join(building, name))
        for name in ("pts", "shm", "mqueue"):
            os.mkdir(os.path.join(building, name), 0o755)
        os.chmod(building, 0o755)
        os.rename(building, DEV_TEMPLATE)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
        if not _is_dev_template(DEV_TEMPLATE):  # else another program made it first
            raise
    return DEV_TEMPLATE


def _is_dev_template(path: str) -> bool:
    import stat

    try:
        null = os.lstat(os.path.join(path, "null"))
        pts = os.lstat(os.path.join(path, "mqueue"))
    except OSError:
        return False
    return stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3) and stat.S_ISDIR(pts.st_mode)


def _dev_mount(template: str | None, mount: dict) -> dict:
    """The spec's /dev tmpfs, or the template bound read-only where there is one."""
    if mount["destination"] != "/dev" or template is None:
        return mount
    return {"destination": "/dev", "type": "bind", "source": template, "options": ["bind", "ro", "nosuid", "noexec"]}


def build_spec(argv: list[str], rootfs: Rootfs, limits: Limits, env: list[str], cwd: str,
               work_source: str | None = None) -> dict:
    """The OCI spec of one run: runc's default config made stricter (see the module's doc).

    work_source: a host directory to bind at /work (a Sandbox's, kept across runs); without it
    /work is a fresh tmpfs."""
    from capsa.specgen import default_spec

    check_limits_possible(limits)
    spec = default_spec(cgroup_namespace=False)
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
    template = DEV_TEMPLATE if os.geteuid() == 0 and _is_dev_template(DEV_TEMPLATE) else None
    mounts = [_dev_mount(template, m) for m in spec["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    if limits.network:
        # A sysfs is mounted only by the owner of the network namespace: the host's /sys instead,
        # read-only, as rootless runc does (with its submounts: a user namespace may not bind a
        # tree without the mounts over it; the cgroups are masked below)
        mounts = [{"destination": "/sys", "type": "bind", "source": "/sys",
                   "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]} if m["destination"] == "/sys" else m
                  for m in mounts]
    mounts += rootfs.mounts
    if limits.network:
        mounts += _resolv_conf(rootfs)
    mounts.append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": list(scratch)})
    if work_source:
        mounts.append({"destination": "/work", "type": "bind", "source": work_source,
                       "options": ["rbind", "rw", "nosuid", "nodev"]})
    else:
        mounts.append({"destination": "/work", "type": "tmpfs", "source": "tmpfs", "options": list(scratch)})
    spec["mounts"] = mounts
    linux = spec["linux"]
    namespaces = ("pid", "ipc", "uts", "mount", "user") if limits.network else ("pid", "network", "ipc", "uts", "mount",
                                                                                "user")
    linux["namespaces"] = [{"type": t} for t in namespaces]
    linux["uidMappings"], linux["gidMappings"] = id_mappings()
    linux["maskedPaths"] = linux["maskedPaths"] + ["/proc/kallsyms", "/sys/devices/virtual/powercap"] + (
        ["/sys/fs/cgroup"] if limits.network else [])
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
