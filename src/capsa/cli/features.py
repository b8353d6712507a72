"""capsa features: the OCI features document (what this runtime and host support)."""

from __future__ import annotations

import sys

from capsa.cli import command_usage, parse_command


def usage() -> str:
    return command_usage("features", [], "")


def run(g, argv: list[str]) -> int:
    if parse_command("features", argv, []) is None:
        return 0
    from capsa import jsonfast
    from capsa.features import features

    sys.stdout.write(jsonfast.dumps_indent(features()) + "\n")
    return 0
