"""capsa resume: thaw a paused container."""

from __future__ import annotations

from capsa.cli import command_usage, pause


def usage() -> str:
    return command_usage("resume", [])


def run(g, argv: list[str]) -> int:
    return pause.run(g, argv, resume=True)
