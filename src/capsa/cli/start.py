"""capsa start: run the user's process in a created container."""

from __future__ import annotations

from capsa.cli import command_usage, parse_command, require_args


def usage() -> str:
    return command_usage("start", [])


def run(g, argv: list[str]) -> int:
    parsed = parse_command("start", argv, [])
    if parsed is None:
        return 0
    require_args(parsed, "start", 1)
    from capsa.container import Container

    Container.load(g.root, parsed.args[0]).start(warn=g.warn)
    return 0
