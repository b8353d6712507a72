"""capsactl events: the event log as podman prints it.

    capsactl events [--since T] [--until T] [--filter KEY=VALUE]... [--format json|TEMPLATE] [--stream=false]

Streams by default (the recorded events, then new ones as they come, until interrupted or past
--until); --stream=false prints what is recorded and ends.
"""

from __future__ import annotations

import argparse
import sys

from capsa.ctl.flags import boolean as _boolean
from capsa.manager.errors import ManagerError


def events(ctx, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="capsactl events", description="Show podman-style events")
    parser.add_argument("-f", "--filter", action="append", default=[], help="KEY=VALUE: type, event, container, "
                        "image, label, volume, pod (values of one key: any; different keys: all)")
    parser.add_argument("--format", help="'json' or a Go template ({{.Status}} {{.Name}})")
    parser.add_argument("--since", help="show events since TIMESTAMP (RFC 3339, unix time or a duration: 10m)")
    parser.add_argument("--until", help="show events until TIMESTAMP")
    parser.add_argument("--stream", type=_boolean, nargs="?", const=True, default=True,
                        help="stream new events (default true); --stream=false prints what is recorded")
    parser.add_argument("--no-trunc", type=_boolean, nargs="?", const=True, default=True, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from capsa.manager import events as event_log
    from capsa.manager.times import parse_input_time

    try:
        filters = event_log.parse_filters(args.filter)
        since = parse_input_time(args.since, since=True) if args.since else None
        until = parse_input_time(args.until, since=False) if args.until else None
    except ValueError as err:
        raise ManagerError(str(err)) from None
    render = _renderer(args.format)
    if args.stream:
        records = event_log.follow(ctx.paths, since=since, until=until, filters=filters)
    else:
        records = event_log.read(ctx.paths, since=since, until=until, filters=filters)
    out = sys.stdout
    for event in records:
        out.write(render(event))
        if args.stream:
            out.flush()
    out.flush()
    return 0


def _renderer(fmt: str | None):
    from capsa.manager import events as event_log

    if fmt is None:
        return lambda event: event_log.human(event) + "\n"
    if fmt.strip() in ("json", "{{json .}}"):
        import json

        return lambda event: json.dumps(event_log.podman_json(event), separators=(",", ":")) + "\n"
    try:
        from capsa.ctl import format as go_format
    except ImportError:  # ctl/format.py (the Go templates of every command) not there: {{.Field}} only
        go_format = None

    def render(event: dict) -> str:
        fields = event_log.podman_json(event)
        fields.setdefault("Image", "")
        fields["Time"] = _go_time(event)
        if go_format is not None:
            return go_format.render(fmt, [fields])
        return _minimal_template(fmt, fields)

    return render


def _go_time(event: dict) -> str:
    from capsa.manager.times import format_go_time

    return format_go_time(event.get("TimeNano") or 0)


def _minimal_template(fmt: str, fields: dict) -> str:
    """{{.Field}} replaced by the field; anything else in braces is an error."""
    import re

    def field(match) -> str:
        name = match.group(1)
        if name not in fields:
            raise ManagerError(f"template: {fmt!r}: the events have no field {name!r}: "
                               f"{', '.join(sorted(fields))}")
        value = fields[name]
        return value if isinstance(value, str) else str(value)

    text = fmt.replace("\\t", "\t").replace("\\n", "\n")
    if re.search(r"\{\{(?!\s*\.\w+\s*\}\})", text):
        raise ManagerError(f"template: {fmt!r}: only {{{{.Field}}}} is understood here")
    text = re.sub(r"\{\{\s*\.(\w+)\s*\}\}", field, text)
    return text if text.endswith("\n") else text + "\n"
