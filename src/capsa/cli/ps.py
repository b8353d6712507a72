"""capsa ps: the processes of a container, from its cgroup."""

from __future__ import annotations

import sys

from capsa.cli import command_usage, parse_command
from capsa.cli.flags import STRING, Flag, UsageError

FLAGS = [Flag("format,f", STRING, "table", "select one of: table or json")]


def usage() -> str:
    return command_usage("ps", FLAGS, "<container-id> [ps options]")


def run(g, argv: list[str]) -> int:
    parsed = parse_command("ps", argv, FLAGS)
    if parsed is None:
        return 0
    if not parsed.args:
        raise UsageError('"ps" requires at least 1 argument')
    if parsed.format not in ("table", "json"):
        raise UsageError(f"invalid format option {parsed.format!r}: use table or json")
    from capsa.container import Container

    pids = Container.load(g.root, parsed.args[0]).processes()
    if parsed.format == "json":
        from capsa import jsonfast

        sys.stdout.write(jsonfast.dumps(pids) + "\n")
        return 0
    sys.stdout.write(_ps_table(pids, parsed.args[1:] or ["-ef"]))
    return 0


def _ps_table(pids: list[int], ps_args: list[str]) -> str:
    """ps(1) with the caller's options, keeping the header and the container's lines (as runc)."""
    import subprocess

    try:
        output = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        from capsa.errors import CapsaError

        raise CapsaError(f"cannot run ps {' '.join(ps_args)}: {err}") from None
    lines = output.splitlines()
    header = lines[0].split()
    if "PID" not in header:
        raise UsageError("ps output has no PID column: keep it in the ps options")
    column = header.index("PID")
    wanted = {str(pid) for pid in pids}
    kept = [lines[0]] + [line for line in lines[1:] if line.split()[column:column + 1] and line.split()[column] in wanted]
    return "\n".join(kept) + "\n"
