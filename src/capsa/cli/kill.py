"""capsa kill: send a signal to the container's init (or, with --all, to all its processes)."""

from __future__ import annotations

from capsa.cli import command_usage, parse_command, require_args
from capsa.cli.flags import BOOL, Flag, UsageError

FLAGS = [Flag("all,a", BOOL, help="send the specified signal to all processes inside the container")]


def usage() -> str:
    return command_usage("kill", FLAGS, "<container-id> [signal]")


def run(g, argv: list[str]) -> int:
    parsed = parse_command("kill", argv, FLAGS, interspersed=True)
    if parsed is None:
        return 0
    require_args(parsed, "kill", 1, exact=False)
    if len(parsed.args) > 2:
        raise UsageError('"kill" requires at most 2 arguments')
    signal = parse_signal(parsed.args[1] if len(parsed.args) > 1 else "SIGTERM")
    from capsa.container import Container

    Container.load(g.root, parsed.args[0]).kill(signal, all_processes=parsed.all)
    return 0


def signal_numbers() -> dict[str, int]:
    """Signal names (SIGTERM, ...) to numbers, from _signal: the signal module would import enum."""
    import _signal

    numbers = {name: getattr(_signal, name) for name in dir(_signal)
               if name.startswith("SIG") and not name.startswith("SIG_") and isinstance(getattr(_signal, name), int)}
    rtmin, rtmax = numbers.pop("SIGRTMIN", 34), numbers.pop("SIGRTMAX", 64)
    for offset in range(rtmax - rtmin + 1):
        numbers[f"SIGRTMIN+{offset}"] = rtmin + offset
        numbers[f"SIGRTMAX-{offset}"] = rtmax - offset
    numbers["SIGRTMIN"], numbers["SIGRTMAX"] = rtmin, rtmax
    return numbers


def parse_signal(text: str) -> int:
    """A signal by number, or by name with or without the SIG prefix, in any case."""
    if text.isdigit():
        number = int(text)
        if 0 < number < 65:
            return number
        raise UsageError(f"invalid signal: {text}")
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    number = signal_numbers().get(name)
    if number is None:
        raise UsageError(f"unknown signal {text!r}")
    return number
