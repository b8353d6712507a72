"""capsa events: resource statistics of a container as JSON (--stats once, or every --interval)."""

from __future__ import annotations

import sys
import time

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

    container = Container.load(g.root, parsed.args[0])
    while True:
        try:
            data = container.stats()
        except StateError:
            if parsed.stats:
                raise
            return 0  # the stream ends when the container does
        sys.stdout.write(jsonfast.dumps({"type": "stats", "id": container.id, "data": data}) + "\n")
        sys.stdout.flush()
        if parsed.stats:
            return 0
        time.sleep(interval)


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
