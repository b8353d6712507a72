"""capsa list: the containers under --root, as a table or JSON."""

from __future__ import annotations

import sys

from capsa.cli import command_usage, parse_command
from capsa.cli.flags import BOOL, STRING, Flag, UsageError

FLAGS = [
    Flag("format,f", STRING, "table", "select one of: table or json"),
    Flag("quiet,q", BOOL, help="display only container IDs"),
]


def usage() -> str:
    return command_usage("list", FLAGS, "")


def run(g, argv: list[str]) -> int:
    parsed = parse_command("list", argv, FLAGS)
    if parsed is None:
        return 0
    if parsed.format not in ("table", "json"):
        raise UsageError(f"invalid format option {parsed.format!r}: use table or json")
    from capsa.container import Container

    containers = Container.list(g.root, warn=g.warn)
    states = [c.state() for c in containers]
    owner = _owner_name()
    sandbox_of = _sandbox_finder(g.root, containers)
    for container, state in zip(containers, states, strict=True):
        state["owner"] = owner
        state["sandbox"] = sandbox_of(container)
    if parsed.quiet:
        sys.stdout.write("".join(s["id"] + "\n" for s in states))
    elif parsed.format == "json":
        from capsa import jsonfast

        sys.stdout.write(jsonfast.dumps(states) + "\n")
    else:
        sys.stdout.write(_table(states))
    return 0


def _sandbox_finder(root: str, containers):
    """container -> the id of its sandbox ("" if none); capsa.sandbox is loaded only where there
    are sandboxes (a record of one, or annotations that name one)."""
    from capsa import posixlite
    from capsa.cli import sandbox_annotated

    if not posixlite.isdir(posixlite.join(posixlite.abspath(root), "@sandbox")) and not any(
            sandbox_annotated(c.record.get("annotations")) for c in containers):
        return lambda container: ""
    from capsa import sandbox

    return lambda container: sandbox.sandbox_of(root, container.id, container.record.get("annotations")) or ""


def _owner_name() -> str:
    import posix
    import pwd

    try:
        return pwd.getpwuid(posix.geteuid()).pw_name
    except KeyError:
        return f"#{posix.geteuid()}"


def _table(states: list[dict]) -> str:
    header = ("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER", "SANDBOX")
    rows = [header] + [
        (s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"], s["sandbox"]) for s in states
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["".join(cell.ljust(widths[i] + 3) if i < len(header) - 1 else cell for i, cell in enumerate(row))
             for row in rows]
    return "\n".join(lines) + "\n"
