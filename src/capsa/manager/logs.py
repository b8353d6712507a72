"""Container logs in podman's k8s-file format: one line per record,

    2026-12-07T05:53:00.123456789+00:00 stdout F hello

RFC 3339 time with nanoseconds, the stream, F for a full line or P for a partial one (a line
longer than a read, or output that did not end with a newline), then the text.

Rotation (--log-opt max-size=SIZE,max-file=N; issue 18): when the next records would take the
log past max-size, the writer (the monitor) moves ctr.log to ctr.log.1 (ctr.log.1 to .2, ...,
keeping N files in all, the current one included) and starts a new ctr.log. No name is ever
missing: the current file is hard-linked to .1 first, then a new file is renamed over ctr.log.
A record is never split across two files.

Reading (`logs`): the files oldest first, every ctr.log.N there is (found by listing the
directory: max-file has no upper bound). Following (`logs -f`) across rotation without losing or
repeating a line: the follower identifies files by inode, not by name. It holds the file it reads
open (a rotated or deleted file stays readable) and, whenever it reaches the end, looks at the
names again for the files newer than its own, and holds them. Once a newer file exists, every
write to the older one has happened (the writer renames only after writing), so it reads the
older one to its end once more and moves on. A line is lost only if a whole file is written and
deleted while the follower does not run at all (max-file=1 or a follower stopped for longer than
N-1 rotations take), as with docker's json-file.

A look at the names is taken again until no rotation overlapped it (a look in the middle of the
renames can miss a file or see one twice, and two looks in a row can agree on the same wrong
picture when they keep pace with the renames). A rotation is seen without a lock: it begins by
creating .ctr.log.new and ends by renaming that over ctr.log. A look that opened ctr.log first
(and holds it, so that its inode is not reused), then finds no .ctr.log.new and ctr.log still
the file it holds, overlapped no rotation: one still going on when it ended has its .new, and one
that ended after its start replaced ctr.log.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator


def timestamp() -> str:
    now = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 10**9)) + f".{now % 10**9:09d}+00:00"


# -- options ------------------------------------------------------------------------------------
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
               "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    """A size as podman's --log-opt max-size takes it (go-units' FromHumanSize: decimal units,
    10mb = 10,000,000 bytes; KiB/MiB binary)."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"invalid size {text!r}: give a number with an optional unit (10k, 5mb, 1g)")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


class LogOptions:
    """--log-opt KEY=VALUE (podman's): max-size=SIZE, max-file=N (files kept, the current one
    included; default 1: a rotation starts an empty log, as conmon's log-size-max), path=FILE."""

    __slots__ = ("max_size", "max_files", "path")

    def __init__(self, max_size: int | None = None, max_files: int = 1, path: str | None = None):
        self.max_size = max_size
        self.max_files = max_files
        self.path = path

    @classmethod
    def parse(cls, options: list[str]) -> LogOptions:
        from capsa.manager.errors import ManagerError

        result = cls()
        for option in options:
            for item in option.split(","):
                key, eq, value = item.partition("=")
                key = key.strip()
                try:
                    if not eq:
                        raise ValueError("give KEY=VALUE")
                    if key == "max-size":
                        result.max_size = parse_size(value) if value not in ("-1", "") else None
                        if result.max_size is not None and result.max_size <= 0:
                            raise ValueError("must be positive")
                    elif key == "max-file":
                        result.max_files = int(value)
                        if result.max_files < 1:
                            raise ValueError("must be at least 1")
                    elif key == "path":
                        result.path = value
                    elif key not in ("tag", "mode"):
                        raise ValueError("unknown option: max-size, max-file and path are known")
                except ValueError as err:
                    raise ManagerError(f"--log-opt {item!r}: {err}") from None
        return result

    def as_dict(self) -> dict:
        return {"max_size": self.max_size, "max_files": self.max_files, "path": self.path}


# -- writing --------------------------------------------------------------------------------------
def rotated_name(path: str, number: int) -> str:
    return path if number == 0 else f"{path}.{number}"


def fresh_name(path: str) -> str:
    """Where a rotation makes the next ctr.log: it exists only while a rotation is going on."""
    return os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.new")


class LogWriter:
    """The monitor's writer: records appended with O_APPEND, rotated at max_size."""

    def __init__(self, path: str, max_size: int | None = None, max_files: int = 1):
        self.path = path
        self.max_size = max_size
        self.max_files = max(1, max_files)
        self.fd = -1
        self._open()

    def _open(self) -> None:
        try:  # left by a writer that died in a rotation: readers would take it for one going on
            os.unlink(fresh_name(self.path))
        except FileNotFoundError:
            pass
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self.fd).st_size

    def write(self, stream: str, data: bytes) -> None:
        stamp = timestamp().encode()
        name = stream.encode()
        lines = data.split(b"\n")
        records = [b"%s %s F %s\n" % (stamp, name, line) for line in lines[:-1]]
        if lines[-1]:
            records.append(b"%s %s P %s\n" % (stamp, name, lines[-1]))
        if self.max_size is None:
            self._append(b"".join(records))
            return
        batch: list[bytes] = []
        batch_size = 0
        for record in records:
            if self.size + batch_size + len(record) > self.max_size and self.size + batch_size > 0:
                self._append(b"".join(batch))
                batch, batch_size = [], 0
                self.rotate()
            batch.append(record)
            batch_size += len(record)
        self._append(b"".join(batch))

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            self.size += written
            view = view[written:]

    def rotate(self) -> None:
        """ctr.log -> ctr.log.1 -> ... -> ctr.log.<max_files - 1> (the oldest dropped); a new
        empty ctr.log. ctr.log always names a file: it is linked to .1 before being replaced.
        The fresh file is created first and renamed over ctr.log last: readers know a rotation
        is going on while it exists (see the module's docstring)."""
        fresh = fresh_name(self.path)
        fd = os.open(fresh, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        if self.max_files > 1:
            for number in range(self.max_files - 2, 0, -1):
                try:
                    os.rename(rotated_name(self.path, number), rotated_name(self.path, number + 1))
                except FileNotFoundError:
                    pass
            first = rotated_name(self.path, 1)
            try:
                os.unlink(first)  # only if max_files == 2 and the rename loop did not move it
            except FileNotFoundError:
                pass
            os.link(self.path, first)
        os.rename(fresh, self.path)
        os.close(self.fd)
        self.fd, self.size = fd, 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- reading --------------------------------------------------------------------------------------
class Record:
    """One k8s-file line: time (the text as written; `nanos` parses it), stream, partial flag, text."""

    __slots__ = ("time", "_nanos", "stream", "partial", "text")

    def __init__(self, time_text: str, stream: str, partial: bool, text: bytes, nanos: int | None = None):
        self.time = time_text
        self._nanos = nanos
        self.stream = stream
        self.partial = partial
        self.text = text

    @property
    def nanos(self) -> int:
        """The time in ns since the epoch (parsed on first use: following needs it only with
        --since/--until); 0 for a time that is not RFC 3339."""
        if self._nanos is None:
            from capsa.manager.times import parse_rfc3339

            self._nanos = parse_rfc3339(self.time) or 0
        return self._nanos

    def __repr__(self) -> str:
        return f"Record({self.time!r}, {self.stream!r}, {'P' if self.partial else 'F'}, {self.text!r})"


def parse_line(line: bytes) -> Record | None:
    """A record from one line (without or with its newline); None for a line that is not one."""
    if line.endswith(b"\n"):
        line = line[:-1]
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"F", b"P"):
        return None
    stamp = parts[0].decode(errors="replace")
    if len(stamp) < 20 or stamp[4] != "-" or stamp[10] != "T":
        return None
    return Record(stamp, parts[1].decode(), parts[2] == b"P", parts[3] if len(parts) == 4 else b"")


def join_partial(records) -> Iterator[Record]:
    """Records with each run of partial (P) records joined to the record that ends it, per
    stream: whole lines, as the container wrote them."""
    pending: dict[str, list[Record]] = {}
    for record in records:
        parts = pending.get(record.stream)
        if record.partial:
            pending.setdefault(record.stream, []).append(record)
            continue
        if parts:
            del pending[record.stream]
            record = Record(parts[0].time, record.stream, False, b"".join(p.text for p in parts) + record.text)
        yield record
    for parts in pending.values():
        yield Record(parts[0].time, parts[0].stream, True, b"".join(p.text for p in parts))


def _open_inode(name: str) -> tuple[int, int] | None:
    """(inode, fd) of a name opened for reading; None if it does not exist."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    return os.fstat(fd).st_ino, fd


def _inode(name: str) -> int | None:
    try:
        return os.stat(name).st_ino
    except FileNotFoundError:
        return None


def _rotated_numbers(path: str, max_names: int | None) -> list[int]:
    """The N of each ctr.log.N in the directory, highest (oldest) first."""
    directory, base = os.path.split(path)
    prefix = base + "."
    try:
        names = os.listdir(directory or ".")
    except FileNotFoundError:
        return []
    suffixes = (name[len(prefix):] for name in names if name.startswith(prefix))
    numbers = [int(suffix) for suffix in suffixes if suffix.isascii() and suffix.isdigit() and suffix[0] != "0"]
    return sorted((n for n in numbers if max_names is None or n <= max_names), reverse=True)


def _closed(files: list[tuple[int, int]]) -> None:
    for _, fd in files:
        os.close(fd)


_LOOK_ATTEMPTS = 200


def _steady_look(path: str, look: Callable[[tuple[int, int] | None], list[tuple[int, int]]]) -> list[tuple[int, int]]:
    """What look(current) finds, current being ctr.log opened before it: taken again until no
    rotation overlapped it (see the module's docstring; the fds of a look taken again are
    closed). A writer that died in a rotation leaves its .new behind: after about a second of
    looks the last one is taken as it is (nothing moves any more)."""
    fresh = fresh_name(path)
    attempt = 0
    while True:
        current = _open_inode(path)
        found = look(current)
        steady = _inode(fresh) is None and _inode(path) == (current[0] if current else None)
        if current is not None and current not in found:
            os.close(current[1])
        attempt += 1
        if steady or attempt == _LOOK_ATTEMPTS:
            return found
        _closed(found)
        time.sleep(0 if attempt < 10 else 0.005)  # a rotation is a few syscalls: let the writer end it


def snapshot(path: str, max_names: int | None = None) -> list[tuple[int, int]]:
    """The log's files (ctr.log.N up to max_names, all if None, and ctr.log), opened, oldest
    first, each inode once, as they were at one moment. The caller closes the fds."""

    def look(current: tuple[int, int] | None) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        seen: set[int] = set()
        for number in _rotated_numbers(path, max_names):
            opened = _open_inode(rotated_name(path, number))
            if opened is None or opened[0] in seen:
                if opened is not None:
                    os.close(opened[1])
                continue
            seen.add(opened[0])
            found.append(opened)
        if current is not None and current[0] not in seen:
            found.append(current)
        return found

    return _steady_look(path, look)


def newer_files(path: str, inode: int, max_names: int | None = None) -> list[tuple[int, int]]:
    """The log's files newer than the one with this inode, opened, oldest first: ctr.log,
    ctr.log.1, ... up to that inode (or to a name missing: that file is gone, all are newer).
    The follower's look at each poll: when nothing is new, ctr.log alone is opened. The caller
    closes the fds."""

    def look(current: tuple[int, int] | None) -> list[tuple[int, int]]:
        if current is not None and current[0] == inode:
            return []
        found = [current] if current is not None else []  # none: a rotation by rename (events)
        number = 1
        while max_names is None or number <= max_names:
            opened = _open_inode(rotated_name(path, number))
            if opened is None or opened[0] == inode:
                if opened is not None:
                    os.close(opened[1])
                break
            if any(opened[0] == other for other, _ in found):
                os.close(opened[1])  # only in a look taken as it is: ctr.log linked to .1
            else:
                found.append(opened)
            number += 1
        return found[::-1]

    return _steady_look(path, look)


def _records(chunk: bytes, parse: Callable = parse_line) -> Iterator:
    for line in chunk.split(b"\n"):
        if line:
            record = parse(line)
            if record is not None:
                yield record


def _read_all(fd: int) -> bytes:
    parts = []
    while True:
        data = os.read(fd, 1 << 16)
        if not data:
            return b"".join(parts)
        parts.append(data)


def read(path: str, *, since: int | None = None, until: int | None = None, tail: int | None = None) -> list[Record]:
    """The records of a log and its rotated files, oldest first, filtered by time (ns) and cut to
    the last `tail` (None or negative: all)."""
    return list(_filtered(_read_snapshot(snapshot(path)), since, until, tail))


def _read_snapshot(files: list[tuple[int, int]]) -> Iterator[Record]:
    try:
        for _, fd in files:
            data = _read_all(fd)
            end = data.rfind(b"\n") + 1  # a record being written is not complete yet
            yield from _records(data[:end])
    finally:
        for _, fd in files:
            os.close(fd)


def _filtered(records, since: int | None, until: int | None, tail: int | None) -> Iterator[Record]:
    records = (r for r in records if (since is None or r.nanos >= since) and (until is None or r.nanos <= until))
    if tail is not None and tail >= 0:
        from collections import deque

        records = iter(deque(records, maxlen=tail)) if tail > 0 else iter(())
    return records


class Follower:
    """Reads a log and then follows it, across rotations: see the module's docstring."""

    def __init__(self, path: str, poll_interval: float = 0.1, parse: Callable = parse_line,
                 max_names: int | None = None):
        self.path = path
        self.poll_interval = poll_interval
        self.parse = parse  # a line (without its newline) -> a record, or None to skip it
        self.max_names = max_names
        self.held: list[tuple[int, int]] = []  # (inode, fd), oldest first; held[0] is being read
        self.pending = b""  # the start of a line whose end is not written yet

    def _refresh(self) -> None:
        """Hold the files that are newer than the newest held one."""
        if not self.held:
            self.held = snapshot(self.path, self.max_names)
            return
        held_inodes = {inode for inode, _ in self.held}
        for inode, fd in newer_files(self.path, self.held[-1][0], self.max_names):
            if inode in held_inodes:
                os.close(fd)
            else:
                self.held.append((inode, fd))

    def _read_current(self) -> Iterator[Record]:
        """What the current file has, up to its last complete line."""
        data = self.pending + _read_all(self.held[0][1])
        end = data.rfind(b"\n") + 1
        self.pending = data[end:]
        yield from _records(data[:end], self.parse)

    def records(self, done: Callable[[], bool]) -> Iterator:
        """Every record, oldest first, until `done()` (the writer has ended) and all is read."""
        finishing = False
        try:
            self._refresh()
            while True:
                if not self.held:
                    if finishing:
                        return
                    finishing = done()
                    if not finishing:
                        time.sleep(self.poll_interval)
                    self._refresh()
                    continue
                yield from self._read_current()
                self._refresh()
                if len(self.held) > 1:
                    # A newer file exists: the writer is done with this one. Read what came
                    # in since our last read, then move on.
                    yield from self._read_current()
                    self.pending = b""
                    os.close(self.held.pop(0)[1])
                    continue
                if finishing:
                    return
                finishing = done()  # checked before the last read, so nothing written before it is missed
                if not finishing:
                    time.sleep(self.poll_interval)
        finally:
            for _, fd in self.held:
                os.close(fd)
            self.held = []

    def close(self) -> None:
        for _, fd in self.held:
            os.close(fd)
        self.held = []


def follow(path: str, done: Callable[[], bool], *, since: int | None = None, until: int | None = None,
           tail: int | None = None, poll_interval: float = 0.1) -> Iterator[Record]:
    """`logs -f`: the last `tail` records there are (all if None), then each new one until
    done() is true and the log is read to its end."""
    files = snapshot(path)
    existing: list[Record] = []
    for index, (_, fd) in enumerate(files):
        data = _read_all(fd)
        end = data.rfind(b"\n") + 1
        existing.extend(_records(data[:end]))
        if index == len(files) - 1:
            os.lseek(fd, end - len(data), os.SEEK_CUR)  # the follower goes on from the last full line
        else:
            os.close(fd)
    follower = Follower(path, poll_interval)
    follower.held = files[-1:]
    yield from _filtered(existing, since, until, tail)
    yield from _filtered(follower.records(done), since, until, None)
