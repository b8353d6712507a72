"""Reading and writing the kernel's pseudo-files: process identity from /proc that survives pid
reuse, and single-value writes to /proc and /sys files."""

from __future__ import annotations

import posix

from capsa import posixlite


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards), or None if gone."""
    try:
        raw = posixlite.read_bytes(f"/proc/{pid}/stat")
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: it ended between the open and the read
        return None
    if not raw:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(b")") + 2 :].decode().split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22), or None if there is no such pid."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None


_own: tuple[int, int | None] = (0, None)  # (pid, its start time): a fork has another pid


def own_identity() -> tuple[int, int | None]:
    """(this process's pid, its start time), read once per process: a long-lived creator (the
    API's zygote) names itself in every record it writes."""
    global _own
    pid = posix.getpid()
    if _own[0] != pid:
        _own = (pid, start_time(pid))
    return _own


def is_alive(pid: int, expected_start_time: int | None) -> bool:
    """True if `pid` still names the process that had `expected_start_time` and it is not a zombie."""
    if pid <= 0:
        return False
    fields = stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return expected_start_time is None or int(fields[19]) == expected_start_time


def reap_if_our_zombie(pid: int, expected_start_time: int | None) -> None:
    """Reap `pid` if it is a zombie child of ours that had `expected_start_time`: a container's
    init that ended unwaited-for (its pid is held by the zombie, so no other process can have
    it). Nothing otherwise: a live process, another's child, or one reaped already."""
    fields = stat_fields(pid) if pid > 0 else None
    if fields is None or fields[0] != "Z" or int(fields[1]) != posix.getpid():
        return
    if expected_start_time is not None and int(fields[19]) != expected_start_time:
        return
    try:
        posix.waitpid(pid, posix.WNOHANG)
    except ChildProcessError:
        pass


def in_user_namespace() -> bool:
    """True unless this process is in the initial user namespace (whose map is the identity)."""
    try:
        with open("/proc/self/uid_map") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return False  # a kernel without user namespaces
    return lines[0].split() != ["0", "0", "4294967295"]


def write_file(path: str, value: str) -> None:
    """One write(2) of `value`: what /proc and cgroup files expect (no buffering, no truncation)."""
    fd = posix.open(path, posix.O_WRONLY | posix.O_CLOEXEC)
    try:
        posix.write(fd, value.encode())
    finally:
        posix.close(fd)


_NET_DEV_FIELDS = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped", None, None, None, None,
                   "tx_bytes", "tx_packets", "tx_errors", "tx_dropped")


def network_interfaces(pid: int) -> list[dict]:
    """Counters of the interfaces in `pid`'s network namespace (/proc/PID/net/dev), as runc's
    events --stats reports them (loopback left out, as runc does)."""
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return []
    interfaces = []
    for line in lines:
        name, _, counters = line.partition(":")
        name = name.strip()
        if name == "lo":
            continue
        values = counters.split()
        entry: dict = {"name": name}
        for key, value in zip(_NET_DEV_FIELDS, values, strict=False):  # 16 counters; the first 12 named
            if key:
                entry[key] = int(value)
        interfaces.append(entry)
    return interfaces
