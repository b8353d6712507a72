"""capsa pause / capsa resume: freeze and thaw every process of a container (cgroup freezer)."""

from __future__ import annotations

from capsa.cli import command_usage, parse_command, require_args


def usage() -> str:
    return command_usage("pause", [])


def run(g, argv: list[str], resume: bool = False) -> int:
    name = "resume" if resume else "pause"
    parsed = parse_command(name, argv, [])
    if parsed is None:
        return 0
    require_args(parsed, name, 1)
    from capsa.container import Container

    container = Container.load(g.root, parsed.args[0])
    container.resume() if resume else container.pause()
    return 0
