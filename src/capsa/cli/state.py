"""capsa state: print the OCI state JSON of a container."""

from __future__ import annotations

import sys

from capsa.cli import command_usage, parse_command, require_args


def usage() -> str:
    return command_usage("state", [])


def run(g, argv: list[str]) -> int:
    parsed = parse_command("state", argv, [])
    if parsed is None:
        return 0
    require_args(parsed, "state", 1)
    from capsa import jsonfast
    from capsa.container import Container

    state = Container.load(g.root, parsed.args[0]).state()
    sys.stdout.write(jsonfast.dumps_indent(state) + "\n")
    return 0
