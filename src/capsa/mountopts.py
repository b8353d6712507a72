"""Mount options of config.json, read as runc reads them (libcontainer/specconv parseMountOptions).

Pure logic, no syscalls: which MS_* flags to set or clear, which propagation changes to make,
which recursive (mount_setattr) attributes to apply, and what goes to the filesystem as data.
"""

from __future__ import annotations

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_I_VERSION = 1 << 23
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

# option -> (clear?, flag): set the flag, or clear it.
FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC),
    "iversion": (False, MS_I_VERSION),
    "lazytime": (False, MS_LAZYTIME),
    "loud": (True, MS_SILENT),
    "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "noiversion": (True, MS_I_VERSION),
    "nolazytime": (True, MS_LAZYTIME),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "nosymfollow": (False, MS_NOSYMFOLLOW),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "silent": (False, MS_SILENT),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "symfollow": (True, MS_NOSYMFOLLOW),
    "sync": (False, MS_SYNCHRONOUS),
}

PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}

# option -> (clear?, MOUNT_ATTR_* bit) for mount_setattr(AT_RECURSIVE).
RECURSIVE: dict[str, tuple[bool, int]] = {
    "rrw": (True, MOUNT_ATTR_RDONLY),
    "rro": (False, MOUNT_ATTR_RDONLY),
    "rnosuid": (False, MOUNT_ATTR_NOSUID),
    "rsuid": (True, MOUNT_ATTR_NOSUID),
    "rnodev": (False, MOUNT_ATTR_NODEV),
    "rdev": (True, MOUNT_ATTR_NODEV),
    "rnoexec": (False, MOUNT_ATTR_NOEXEC),
    "rexec": (True, MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, MOUNT_ATTR_NODIRATIME),
    "rdiratime": (True, MOUNT_ATTR_NODIRATIME),
    "rnosymfollow": (False, MOUNT_ATTR_NOSYMFOLLOW),
    "rsymfollow": (True, MOUNT_ATTR_NOSYMFOLLOW),
}
# Access-time modes are one field: setting one means clearing the whole field first.
RECURSIVE_ATIME: dict[str, int] = {
    "rrelatime": MOUNT_ATTR_RELATIME,
    "rnoatime": MOUNT_ATTR_NOATIME,
    "rstrictatime": MOUNT_ATTR_STRICTATIME,
}
RECURSIVE_ATIME_CLEAR = ("rnorelatime", "ratime", "rnostrictatime")

# runc's own extensions: handled by the runtime, never passed to the kernel.
EXTENSIONS = ("tmpcopyup", "idmap", "ridmap")


class MountOptions:
    """What one mount's `options` list asks for."""

    __slots__ = ("flags", "clear", "propagation", "recursive_set", "recursive_clear", "data", "extensions")

    def __init__(self) -> None:
        self.flags = 0
        self.clear = 0
        self.propagation: list[int] = []
        self.recursive_set = 0
        self.recursive_clear = 0
        self.data = ""
        self.extensions: list[str] = []

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & MS_BIND)

    @property
    def recursive_bind(self) -> bool:
        return self.is_bind and bool(self.flags & MS_REC)


def parse_mount_options(options: list[str]) -> MountOptions:
    parsed = MountOptions()
    data: list[str] = []
    for option in options:
        if option in FLAGS:
            clear, flag = FLAGS[option]
            if clear:
                parsed.flags &= ~flag
                parsed.clear |= flag
            else:
                parsed.flags |= flag
                parsed.clear &= ~flag
        elif option in PROPAGATION:
            parsed.propagation.append(PROPAGATION[option])
        elif option in RECURSIVE:
            clear, attr = RECURSIVE[option]
            if clear:
                parsed.recursive_clear |= attr
                parsed.recursive_set &= ~attr
            else:
                parsed.recursive_set |= attr
                parsed.recursive_clear &= ~attr
        elif option in RECURSIVE_ATIME:
            parsed.recursive_set = (parsed.recursive_set & ~MOUNT_ATTR__ATIME) | RECURSIVE_ATIME[option]
            parsed.recursive_clear |= MOUNT_ATTR__ATIME
        elif option in RECURSIVE_ATIME_CLEAR:
            parsed.recursive_clear |= MOUNT_ATTR__ATIME
        elif option in EXTENSIONS:
            parsed.extensions.append(option)
        else:
            data.append(option)
    parsed.data = ",".join(data)
    return parsed


def is_idmapped(mount: dict) -> bool:
    """An idmapped mount: mappings of its own, or the idmap/ridmap option (then the container's
    user namespace's). Mappings without either option are an idmap mount, as runc reads them."""
    return bool(mount.get("uidMappings") or mount.get("gidMappings")) or bool(
        {"idmap", "ridmap"} & set(mount.get("options") or ()))


def known_options() -> list[str]:
    """Every option name capsa interprets (the features document's mountOptions)."""
    return sorted(
        set(FLAGS) | set(PROPAGATION) | set(RECURSIVE) | set(RECURSIVE_ATIME) | set(RECURSIVE_ATIME_CLEAR)
        | {"idmap", "ridmap"}
    )
