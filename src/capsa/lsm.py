"""Linux security modules: AppArmor profiles and SELinux labels for the container's process.

Detected, never guessed: AppArmor counts as present when the module says it is enabled
(/sys/module/apparmor/parameters/enabled is Y) and securityfs shows /sys/kernel/security/apparmor,
as runc checks; SELinux when a selinuxfs is mounted. A profile or label asked for on a host
without the LSM is an error naming the field, never silently dropped.

Both are applied "on exec": the process writes "exec <profile>" (AppArmor) or the label
(SELinux) to its attr/exec file right before execve. That execve is capsa's sealed trampoline
(capsa.trampoline), so the trampoline runs confined and its own execve of the program is checked
against the profile: the profile must allow it (`file,` or `/** ix,`), where runc's next exec is
the program itself (docs/security.md; shown with a real AppArmor in the guest tier). The file is reached through a directory fd
of the *host's* procfs, opened before the container's mounts exist (the init) or before joining
the container's mount namespace (exec), and checked to be procfs: a /proc that the image or the
container controls (a fake procfs, a bind mount of another procfs file, CVE-2025-52881 class)
is never where the label goes.
"""

from __future__ import annotations

import posix

from capsa import posixlite
from capsa.errors import ContainerStartError, UnsupportedError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

APPARMOR_ENABLED = "/sys/module/apparmor/parameters/enabled"
APPARMOR_SECURITYFS = "/sys/kernel/security/apparmor"


def apparmor_enabled() -> bool:
    try:
        with open(APPARMOR_ENABLED, "rb") as f:
            enabled = f.read(1) == b"Y"
    except OSError:
        return False
    return enabled and posixlite.isdir(APPARMOR_SECURITYFS)


def selinuxfs_mount() -> str | None:
    """Where selinuxfs is mounted, None without SELinux."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        _, _, rest = line.partition(" - ")
        if rest.split(" ", 1)[0] == "selinuxfs":
            return line.split(" ")[4].replace("\\040", " ")
    return None


def selinux_enabled() -> bool:
    return selinuxfs_mount() is not None


def check_available(process: dict[str, Any], mount_label: str | None, field: str = "process") -> None:
    """A clear error for a profile or label that this host cannot apply."""
    if process.get("apparmorProfile") and not apparmor_enabled():
        raise UnsupportedError(
            f"{field}.apparmorProfile: this host has no AppArmor ({APPARMOR_ENABLED} is not Y or "
            f"{APPARMOR_SECURITYFS} is missing): cannot apply profile {process['apparmorProfile']!r}"
        )
    for name, value in ((f"{field}.selinuxLabel", process.get("selinuxLabel")), ("linux.mountLabel", mount_label)):
        if value and not selinux_enabled():
            raise UnsupportedError(f"{name}: this host has no SELinux (no selinuxfs is mounted): cannot apply label {value!r}")


class ExecLabels:
    """The AppArmor profile and SELinux label to write to attr/exec just before exec."""

    def __init__(self, process: dict[str, Any]):
        self.apparmor = process.get("apparmorProfile") or ""
        self.selinux = process.get("selinuxLabel") or ""
        self.proc_fd = -1
        if self.apparmor or self.selinux:
            self.proc_fd = open_host_procfs()

    def apply(self) -> None:
        """Write the labels; must run in the process that will exec (attr files act on their task)."""
        if self.apparmor:
            # AppArmor answers ENOENT for a profile that is not loaded ("label not found").
            not_loaded = f"AppArmor profile {self.apparmor!r} is not loaded (load it with apparmor_parser -r)"
            write_attr(self.proc_fd, ("apparmor/exec", "exec"), f"exec {self.apparmor}", "process.apparmorProfile",
                       not_loaded)
        if self.selinux:
            write_attr(self.proc_fd, ("exec",), self.selinux, "process.selinuxLabel")
        if self.proc_fd >= 0:
            posix.close(self.proc_fd)
            self.proc_fd = -1


def open_host_procfs(path: str = "/proc") -> int:
    from capsa import linux

    fd = posix.open(path, posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
    if linux.fstatfs_type(fd) != linux.PROC_SUPER_MAGIC:
        posix.close(fd)
        raise ContainerStartError(f"{path} is not a procfs: refusing to write security labels through it")
    return fd


def write_attr(proc_fd: int, names: tuple[str, ...], value: str, field: str, enoent: str | None = None) -> None:
    """Write thread-self/attr/<name> (the first that exists) under the procfs `proc_fd`, after
    checking that what was opened is on procfs. `enoent`: what the LSM means by ENOENT on write."""
    from capsa import linux

    resolve = linux.RESOLVE_BENEATH | linux.RESOLVE_NO_MAGICLINKS | linux.RESOLVE_NO_XDEV
    fd = -1
    for name in names:
        try:
            fd = linux.openat2(proc_fd, f"thread-self/attr/{name}", posix.O_WRONLY, resolve)
            break
        except FileNotFoundError:
            continue
        except OSError as err:
            # EXDEV: something is mounted over the attr file (RESOLVE_NO_XDEV); never write through it.
            raise ContainerStartError(f"{field}: cannot open attr/{name} in procfs: {posix.strerror(err.errno)}") from None
    if fd < 0:
        raise ContainerStartError(f"{field}: this kernel has no attr/{names[-1]} in procfs")
    try:
        if linux.fstatfs_type(fd) != linux.PROC_SUPER_MAGIC:
            raise ContainerStartError(f"{field}: attr/{name} is not on a procfs: refusing to write {value!r} to it")
        posix.write(fd, value.encode())
    except OSError as err:
        if enoent and isinstance(err, FileNotFoundError):
            raise ContainerStartError(f"{field}: {enoent}") from None
        raise ContainerStartError(f"{field}: cannot apply {value!r}: {err.strerror or err}") from None
    finally:
        posix.close(fd)


def mount_data(data: str, fstype: str, mount_label: str | None) -> str:
    """linux.mountLabel as the context= option of the filesystems that take one (runc labels the
    same ones; proc, sysfs, cgroup and bind mounts keep their own)."""
    if not mount_label or fstype not in ("tmpfs", "devpts", "ramfs"):
        return data
    context = f'context="{mount_label}"'
    return f"{data},{context}" if data else context
