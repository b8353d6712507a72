"""capsa sandbox: act on a sandbox (a pod: an infra container and its members) as a whole.

    capsa sandbox list [--format table|json]
    capsa sandbox state <sandbox-id>
    capsa sandbox pause|resume <sandbox-id>
    capsa sandbox kill <sandbox-id> [SIGNAL]
    capsa sandbox delete [--force] <sandbox-id>

The OCI subcommands (create, start, kill, delete, ...) keep acting on one container, as CRI
expects; these call capsa.sandbox.
"""

from __future__ import annotations

import sys

from capsa.cli import parse_command, require_args
from capsa.cli.flags import BOOL, STRING, Flag, UsageError

SUBCOMMANDS = {
    "list": "list the sandboxes under --root",
    "state": "output the sandbox's record: id, state, members and their states, parent cgroup",
    "pause": "pause every member of the sandbox, then the sandbox",
    "resume": "resume every member of the sandbox, then the sandbox",
    "kill": "send a signal (default: SIGTERM) to every member of the sandbox",
    "delete": "delete the sandbox (--force: kill and delete its members first)",
}
LIST_FLAGS = [Flag("format,f", STRING, "table", "select one of: table or json")]
DELETE_FLAGS = [Flag("force,f", BOOL, help="kill and delete every member, then the sandbox")]


def usage() -> str:
    lines = ["NAME:", "   capsa sandbox - act on a sandbox (pod) as a whole", "",
             "USAGE:", "   capsa sandbox command [command options] [arguments...]", "", "COMMANDS:"]
    lines += [f"   {name:<8}{summary}" for name, summary in SUBCOMMANDS.items()]
    return "\n".join(lines) + "\n"


def run(g, argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        raise UsageError(f"unknown sandbox command {command!r}: use one of {', '.join(SUBCOMMANDS)}")
    return globals()[f"_{command}"](g, rest)


def _parse(name: str, argv: list[str], flags: list[Flag], count: int, exact: bool = True):
    parsed = parse_command("sandbox", argv, flags)
    if parsed is not None:
        require_args(parsed, f"sandbox {name}", count, exact)
    return parsed


def _list(g, argv: list[str]) -> int:
    parsed = _parse("list", argv, LIST_FLAGS, 0)
    if parsed is None:
        return 0
    if parsed.format not in ("table", "json"):
        raise UsageError(f"invalid format option {parsed.format!r}: use table or json")
    from capsa.sandbox import Sandbox

    states = [s.state() for s in Sandbox.list(g.root)]
    if parsed.format == "json":
        from capsa import jsonfast

        sys.stdout.write(jsonfast.dumps(states) + "\n")
        return 0
    rows = [("ID", "STATE", "PID", "MEMBERS", "CGROUP PARENT")] + [
        (s["id"], s["state"], str(s["pid"]), ",".join(m["id"] for m in s["members"]) or "-", s["cgroupParent"] or "-")
        for s in states]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    sys.stdout.write("".join("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n"
                             for row in rows))
    return 0


def _state(g, argv: list[str]) -> int:
    parsed = _parse("state", argv, [], 1)
    if parsed is None:
        return 0
    from capsa import jsonfast
    from capsa.sandbox import Sandbox

    sys.stdout.write(jsonfast.dumps_indent(Sandbox.load(g.root, parsed.args[0]).state()) + "\n")
    return 0


def _pause(g, argv: list[str]) -> int:
    parsed = _parse("pause", argv, [], 1)
    if parsed is not None:
        from capsa.sandbox import Sandbox

        Sandbox.load(g.root, parsed.args[0]).pause()
    return 0


def _resume(g, argv: list[str]) -> int:
    parsed = _parse("resume", argv, [], 1)
    if parsed is not None:
        from capsa.sandbox import Sandbox

        Sandbox.load(g.root, parsed.args[0]).resume()
    return 0


def _kill(g, argv: list[str]) -> int:
    parsed = _parse("kill", argv, [], 1, exact=False)
    if parsed is None:
        return 0
    if len(parsed.args) > 2:
        raise UsageError('"sandbox kill" takes a sandbox id and at most one signal')
    from capsa.cli.kill import parse_signal
    from capsa.sandbox import Sandbox

    signal = parse_signal(parsed.args[1]) if len(parsed.args) == 2 else 15
    Sandbox.load(g.root, parsed.args[0]).kill(signal)
    return 0


def _delete(g, argv: list[str]) -> int:
    parsed = _parse("delete", argv, DELETE_FLAGS, 1)
    if parsed is None:
        return 0
    from capsa.sandbox import delete_sandbox

    delete_sandbox(g.root, parsed.args[0], force=parsed.force, warn=g.warn)
    return 0
