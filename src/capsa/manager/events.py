"""The event log: one JSON object per line in <graph root>/events/events.log, appended with
O_APPEND (a line is one write, so parallel writers do not interleave), podman's file backend.
It lives under the graph root, so it survives reboots.

Rotation: once the log passes MAX_SIZE (podman's events_logfile_max_size, 1 MB), the writer
that took it there moves it to events.log.1 (the one older file kept, as podman keeps one) and
starts a new one; writers rotate under a lock file (two must not both rotate), readers never
lock: they read events.log.1 then events.log and follow across rotations as `logs -f` does
(capsa.manager.logs.Follower: by inode, each line once).

Reading (`capsactl events`): --since/--until (capsa.manager.times), --filter KEY=VALUE with
podman's keys (type, event/status, container, image, label, volume, pod): values of one key are
alternatives, different keys must all match.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator

MAX_SIZE = 1_000_000


def emit(paths, status: str, kind: str = "container", *, id: str = "", name: str = "", image: str = "",
         attributes: dict | None = None, max_size: int | None = None) -> None:
    """Record one lifecycle event: `status` is podman's word (create, init, start, died, stop,
    pause, unpause, remove, pull, push, tag, untag, ...), `kind` container, image, volume or pod.
    A died event carries the exit code as attributes={"containerExitCode": "N"}."""
    now = time.time_ns()
    event = {"Type": kind, "Status": status, "ID": id, "Name": name, "Image": image,
             "Time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 10**9)) + f".{now % 10**9:09d}Z",
             "TimeNano": now}
    if attributes:
        event["Attributes"] = attributes
    line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
    path = paths.events_log
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line)
        status_after = os.fstat(fd)
    finally:
        os.close(fd)
    if status_after.st_size > (MAX_SIZE if max_size is None else max_size):
        _rotate(path, status_after.st_ino)


def _rotate(path: str, inode: int) -> None:
    """events.log -> events.log.1 (replacing it), a new empty events.log; once, under a lock:
    of several writers that passed the size together, the first rotates, the others find a
    new file and leave it."""
    import fcntl

    lock = os.open(path + ".lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino != inode:
                return
        except FileNotFoundError:
            return
        fresh = path + ".new"
        os.close(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600))
        old = path + ".1"
        try:
            os.unlink(old)
        except FileNotFoundError:
            pass
        os.link(path, old)  # events.log always names a file: linked first, then replaced
        os.rename(fresh, path)
    finally:
        os.close(lock)


# -- reading --------------------------------------------------------------------------------------
def parse_event(line: bytes) -> dict | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or "Status" not in event:
        return None
    if "TimeNano" not in event:
        from capsa.manager.times import parse_rfc3339

        event["TimeNano"] = parse_rfc3339(str(event.get("Time", ""))) or 0
    return event


FILTER_KEYS = ("type", "event", "status", "container", "image", "label", "volume", "pod")


def parse_filters(filters: list[str]) -> dict[str, list[str]]:
    """--filter KEY=VALUE (repeated) into {key: [values]}; ValueError naming a bad one."""
    parsed: dict[str, list[str]] = {}
    for item in filters:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not value:
            raise ValueError(f"--filter {item!r}: give KEY=VALUE")
        if key not in FILTER_KEYS:
            raise ValueError(f"--filter {item!r}: unknown key {key!r}: use {', '.join(FILTER_KEYS)}")
        parsed.setdefault("event" if key == "status" else key, []).append(value)
    return parsed


def _matches_one(event: dict, key: str, value: str) -> bool:
    kind = event.get("Type", "")
    if key == "type":
        return kind == value
    if key == "event":
        return event.get("Status") == value
    if key in ("container", "pod", "volume"):
        if kind != key:
            return False
        return event.get("Name") == value or (bool(value) and str(event.get("ID", "")).startswith(value))
    if key == "image":
        if kind == "image":
            return event.get("Name") == value or str(event.get("ID", "")).startswith(value)
        image = event.get("Image", "")
        return image == value or image.rsplit(":", 1)[0] == value or image.split("/")[-1] == value
    if key == "label":
        label, eq, label_value = value.partition("=")
        attributes = event.get("Attributes") or {}
        if label not in attributes:
            return False
        return not eq or attributes[label] == label_value
    return False


def matches(event: dict, filters: dict[str, list[str]]) -> bool:
    return all(any(_matches_one(event, key, value) for value in values) for key, values in filters.items())


def _selected(events, since: int | None, until: int | None, filters: dict[str, list[str]]) -> Iterator[dict]:
    for event in events:
        if event is None:
            continue
        stamp = event.get("TimeNano", 0)
        if (since is not None and stamp < since) or (until is not None and stamp > until):
            continue
        if matches(event, filters):
            yield event


def read(paths, *, since: int | None = None, until: int | None = None,
         filters: dict[str, list[str]] | None = None) -> list[dict]:
    """The events recorded (events.log.1, then events.log), selected."""
    from capsa.manager.logs import snapshot

    def lines():
        for _, fd in files:
            with os.fdopen(fd, "rb") as f:
                for line in f:
                    if line.endswith(b"\n"):
                        yield parse_event(line)

    files = snapshot(paths.events_log, max_names=1)
    return list(_selected(lines(), since, until, filters or {}))


def follow(paths, *, since: int | None = None, until: int | None = None, filters: dict[str, list[str]] | None = None,
           done: Callable[[], bool] | None = None, poll_interval: float = 0.2) -> Iterator[dict]:
    """The events recorded, then each new one as it is written, until done() (never, by default:
    `events` streams until it is interrupted) or past --until."""
    from capsa.manager.logs import Follower

    def stop() -> bool:
        return (done is not None and done()) or (until is not None and time.time_ns() > until)

    follower = Follower(paths.events_log, poll_interval, parse=parse_event, max_names=1)
    return _selected(follower.records(stop), since, until, filters or {})


# -- output ---------------------------------------------------------------------------------------
def podman_json(event: dict) -> dict:
    """The keys and order podman's `events --format json` prints."""
    result: dict = {}
    attributes = dict(event.get("Attributes") or {})
    if event.get("Status") == "died" and "containerExitCode" in attributes:
        try:
            result["ContainerExitCode"] = int(attributes["containerExitCode"])
        except ValueError:
            pass
    result["ID"] = event.get("ID", "")
    if event.get("Image"):
        result["Image"] = event["Image"]
    result["Name"] = event.get("Name", "")
    result["Status"] = event.get("Status", "")
    result["Time"] = event.get("Time", "")
    result["Type"] = event.get("Type", "")
    result["Attributes"] = attributes
    return result


def human(event: dict) -> str:
    """podman's default line (ToHumanReadable)."""
    from capsa.manager.times import format_go_time

    stamp = format_go_time(event.get("TimeNano") or 0)
    kind, status, event_id, name = event.get("Type", ""), event.get("Status", ""), event.get("ID", ""), event.get("Name", "")
    if kind in ("container", "pod"):
        text = f"{stamp} {kind} {status} {event_id} (image={event.get('Image', '')}, name={name}"
        for key, value in sorted((event.get("Attributes") or {}).items()):
            text += f", {key}={value}"
        return text + ")"
    if kind == "image":
        return f"{stamp} {kind} {status} {event_id} {name}"
    if kind == "volume":
        return f"{stamp} {kind} {status} {name or event_id}"
    return f"{stamp} {kind} {status} {event_id} {name}".rstrip()
