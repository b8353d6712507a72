"""capsa events: resource statistics of a container as JSON (--stats once, or every --interval),
and OOM events ({"type": "oom"}) as they happen, in runc's shape."""

from __future__ import annotations

import sys

from capsa.cli import command_usage, parse_command, require_args
from capsa.cli.flags import BOOL, STRING, Flag, UsageError

FLAGS = [
    Flag("interval", STRING, "5s", "set the stats collection interval"),
    Flag("stats", BOOL, help="display the container's stats then exit"),
]


def usage() -> str:
    return command_usage("events", FLAGS)


def run(g, argv: list[str]) -> int:
    parsed = parse_command("events", argv, FLAGS)
    if parsed is None:
        return 0
    require_args(parsed, "events", 1)
    interval = _seconds(parsed.interval)
    from capsa import jsonfast
    from capsa.container import Container
    from capsa.errors import StateError
    from capsa.process import wait_for_oom

    container = Container.load(g.root, parsed.args[0])
    oom = None if parsed.stats else container.oom_watch()
    while True:
        try:
            data = container.stats()
        except StateError:
            if parsed.stats:
                raise
            return 0  # the stream ends when the container does
        _emit(jsonfast, {"type": "stats", "id": container.id, "data": data})
        if parsed.stats:
            return 0
        if wait_for_oom(oom, interval):
            _emit(jsonfast, {"type": "oom", "id": container.id})


def _emit(jsonfast, event: dict) -> None:
    sys.stdout.write(jsonfast.dumps(event) + "\n")
    sys.stdout.flush()


def _seconds(text: str) -> float:
    """Go durations as runc takes them: 5s, 500ms, 1m."""
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            try:
                value = float(text[: -len(suffix)]) * factor
            except ValueError:
                break
            if value > 0:
                return value
    raise UsageError(f"--interval {text!r}: give a duration such as 5s or 500ms")
