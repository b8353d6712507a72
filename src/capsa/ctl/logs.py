"""capsactl logs: a container's k8s-file log as podman prints it.

    capsactl logs [-f] [--since T] [--until T] [--tail N] [-t] [-n] CONTAINER...

Records are printed as they were written: stdout's to stdout, stderr's to stderr, a partial
record (P) without a newline, so that a line split across records is whole again. With -t each
record starts with its time (RFC 3339 with nanoseconds, podman's); with more than one container
each starts with the container's short id (its name with -n). -f follows the log (across
rotations) until the container's monitor has ended, i.e. the container has exited.
"""

from __future__ import annotations

import argparse
import os
import sys

from capsa.manager.errors import AmbiguousId, ManagerError, NoSuchContainer


class ContainerRef:
    """What logs/attach/events need of a managed container: its id, name, config and state
    (the store's JSON columns), its log's path."""

    __slots__ = ("id", "name", "config", "state", "status")

    def __init__(self, row):
        from capsa.manager.store import loads

        self.id = row["id"]
        self.name = row["name"]
        self.status = row["status"]
        self.config = loads(row["config"], f"container {self.name}") or {}
        self.state = loads(row["state"], f"container {self.name}") or {}

    def log_path(self, paths) -> str:
        return self.config.get("LogPath") or os.path.join(paths.container(self.id), "userdata", "ctr.log")

    @property
    def runtime_path(self) -> str | None:
        return self.config.get("OCIRuntime")


def find_container(ctx, text: str) -> ContainerRef:
    """A container by full id, name, or unique id prefix (the store's containers table)."""
    rows = ctx.store.query("SELECT id, name, status, config, state FROM containers WHERE id = ? OR name = ?",
                           (text, text))
    if not rows and text and all(c in "0123456789abcdef" for c in text):
        rows = ctx.store.query("SELECT id, name, status, config, state FROM containers WHERE id LIKE ?",
                               (text + "%",))
        if len(rows) > 1:
            raise AmbiguousId("container", text, [row["id"] for row in rows])
    if not rows:
        raise NoSuchContainer(text)
    return ContainerRef(rows[0])


def _parse_time(text: str | None, flag: str, since: bool) -> int | None:
    if text is None:
        return None
    from capsa.manager.times import parse_input_time

    try:
        return parse_input_time(text, since=since)
    except ValueError as err:
        raise ManagerError(f"{flag}: {err}") from None


def logs(ctx, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="capsactl logs", description="Fetch the logs of one or more containers")
    parser.add_argument("-f", "--follow", action="store_true", help="follow log output")
    parser.add_argument("--since", help="show logs since TIMESTAMP (RFC 3339, unix time or a duration: 10m)")
    parser.add_argument("--until", help="show logs until TIMESTAMP")
    parser.add_argument("--tail", type=int, default=-1, help="output the last N lines (-1: all)")
    parser.add_argument("-t", "--timestamps", action="store_true", help="output the timestamps")
    parser.add_argument("-n", "--names", action="store_true", help="prefix each line with the container's name")
    parser.add_argument("containers", nargs="+", metavar="CONTAINER")
    args = parser.parse_args(argv)
    since = _parse_time(args.since, "--since", since=True)
    until = _parse_time(args.until, "--until", since=False)
    containers = [find_container(ctx, text) for text in args.containers]
    printer = _Printer(args.timestamps, len(containers) > 1, args.names)
    tail = args.tail if args.tail >= 0 else None
    if not args.follow:
        from capsa.manager.logs import read

        for container in containers:
            for record in read(container.log_path(ctx.paths), since=since, until=until, tail=tail):
                printer.print(container, record)
        printer.flush()
        return 0
    return _follow(ctx, containers, printer, since, until, tail)


def _follow(ctx, containers: list[ContainerRef], printer: _Printer, since, until, tail) -> int:
    from capsa.manager import logs as log_files
    from capsa.manager import monitor

    def follow_one(container: ContainerRef) -> None:
        records = log_files.follow(container.log_path(ctx.paths),
                                   lambda: not monitor.is_running(ctx.paths, container.id),
                                   since=since, until=until, tail=tail)
        for record in records:
            printer.print(container, record, flush=True)

    if len(containers) == 1:
        follow_one(containers[0])
        return 0
    import threading

    threads = [threading.Thread(target=follow_one, args=(c,), daemon=True) for c in containers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0


class _Printer:
    """podman's LogLine.String: [id or name ][time ]text, P records without their newline."""

    def __init__(self, timestamps: bool, several: bool, names: bool):
        import threading

        self.timestamps = timestamps
        self.several = several
        self.names = names
        self.lock = threading.Lock()
        self.out = sys.stdout.buffer
        self.err = sys.stderr.buffer

    def print(self, container: ContainerRef, record, flush: bool = False) -> None:
        prefix = b""
        if self.several:
            prefix = (container.name if self.names else container.id[:12]).encode() + b" "
        if self.timestamps:
            prefix += record.time.encode() + b" "
        stream = self.err if record.stream == "stderr" else self.out
        with self.lock:
            stream.write(prefix + record.text + (b"" if record.partial else b"\n"))
            if flush:
                stream.flush()

    def flush(self) -> None:
        self.out.flush()
        self.err.flush()
