"""Command-line flags the way runc (Go's flag package via urfave/cli) reads them.

`-flag` and `--flag` are the same, values come as `--flag=value` or `--flag value`, booleans take
an optional `=true|false`, and flag parsing stops at the first positional argument or at `--`.
argparse is not used: it cannot read single-dash long flags and costs ~6 ms to import.
"""

from __future__ import annotations

from capsa.errors import CapsaError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

BOOL = "bool"
STRING = "string"
INT = "int"
LIST = "list"  # repeatable string flag


class UsageError(CapsaError):
    pass


class Flag:
    __slots__ = ("names", "kind", "default", "help")

    def __init__(self, names: str, kind: str = BOOL, default: Any = None, help: str = ""):
        self.names = tuple(names.split(","))
        self.kind = kind
        self.default = [] if kind == LIST else (False if kind == BOOL and default is None else default)
        self.help = help

    @property
    def key(self) -> str:
        return self.names[0].replace("-", "_")


class Parsed:
    """Flag values by name (dashes become underscores) plus the positional arguments."""

    def __init__(self, values: dict[str, Any], args: list[str]):
        self.__dict__.update(values)
        self.args = args


def parse(argv: list[str], flags: list[Flag], interspersed: bool = False) -> Parsed:
    """Parse `argv` against `flags`. With interspersed=True flags may follow positionals (runc's kill)."""
    by_name = {name: flag for flag in flags for name in flag.names}
    values = {flag.key: (list(flag.default) if flag.kind == LIST else flag.default) for flag in flags}
    args: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--":
            args.extend(argv[i:])
            break
        if not word.startswith("-") or word == "-":
            args.append(word)
            if not interspersed:
                args.extend(argv[i:])
                break
            continue
        name, has_value, value = word.lstrip("-").partition("=")
        flag = by_name.get(name)
        if flag is None:
            if name in ("h", "help"):
                values["help"] = True
                continue
            raise UsageError(f"flag provided but not defined: -{name}")
        if flag.kind == BOOL:
            values[flag.key] = _bool(name, value) if has_value else True
            continue
        if not has_value:
            if i >= len(argv):
                raise UsageError(f"flag needs an argument: -{name}")
            value = argv[i]
            i += 1
        if flag.kind == INT:
            try:
                values[flag.key] = int(value)
            except ValueError:
                raise UsageError(f'invalid value "{value}" for flag -{name}: parse error') from None
        elif flag.kind == LIST:
            values[flag.key].append(value)
        else:
            values[flag.key] = value
    values.setdefault("help", False)
    return Parsed(values, args)


def _bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise UsageError(f'invalid boolean value "{value}" for -{name}')


def usage(command: str, summary: str, flags: list[Flag], arguments: str = "") -> str:
    lines = [f"Usage: capsa {command} [command options] {arguments}".rstrip(), "", summary, ""]
    if flags:
        lines.append("Options:")
        for flag in flags:
            spelled = ", ".join(("-" if len(n) == 1 else "--") + n for n in flag.names)
            value = "" if flag.kind == BOOL else " value"
            lines.append(f"   {spelled}{value}\t{flag.help}")
    return "\n".join(lines) + "\n"
