"""capsa spec: write a default config.json (runc's example) into the bundle."""

from __future__ import annotations

from capsa.cli import command_usage, parse_command
from capsa.cli.flags import BOOL, STRING, Flag

FLAGS = [
    Flag("bundle,b", STRING, "", "path to the root of the bundle directory"),
    Flag("rootless", BOOL, help="generate a configuration for a rootless container"),
]


def usage() -> str:
    return command_usage("spec", FLAGS, "")


def run(g, argv: list[str]) -> int:
    parsed = parse_command("spec", argv, FLAGS)
    if parsed is None:
        return 0
    from capsa.specgen import write_spec

    write_spec(parsed.bundle or ".", parsed.rootless)
    return 0
