"""Times as podman reads and writes them, in nanoseconds since the epoch (UTC).

podman's --since/--until (logs, events) take what its ParseInputTime takes: an RFC 3339 time
(with or without fraction and offset; without an offset the local time), a date or a date with
an hour or minutes, a unix time (seconds, with a fraction), or a Go duration ("10m", "1h30m",
"1.5s") counted back from now for --since and forward for --until.
"""

from __future__ import annotations

import calendar
import re
import time

_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?)?"
                      r"\s*(Z|z|[+-]\d{2}:?\d{2})?$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIX_TIME = re.compile(r"(-?\d+)(?:\.(\d+))?$")
_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_rfc3339(text: str) -> int | None:
    """An RFC 3339 time (or a prefix of one: a date, a date and hour, ...) in ns; None if it is
    not one. Without an offset the time is local, as Go's time.ParseInLocation(..., time.Local)."""
    match = _RFC3339.match(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    fields = (int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    if not (1 <= fields[1] <= 12 and 1 <= fields[2] <= 31 and fields[3] < 24 and fields[4] < 60 and fields[5] < 61):
        return None
    nanos = int((fraction or "").ljust(9, "0")) if fraction else 0
    if offset is None:
        seconds = int(time.mktime((*fields, 0, 0, -1)))
    else:
        seconds = calendar.timegm((*fields, 0, 0, 0))
        if offset not in ("Z", "z"):
            sign = -1 if offset[0] == "-" else 1
            digits = offset[1:].replace(":", "")
            seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds * 10**9 + nanos


def parse_duration(text: str) -> int | None:
    """A Go duration ("300ms", "1h30m", "-1.5h") in ns; None if it is not one."""
    text = text.strip()
    sign = 1
    if text[:1] in ("+", "-"):
        sign, text = (-1 if text[0] == "-" else 1), text[1:]
    if text == "0":
        return 0
    total, position = 0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += int(float(match.group(1)) * _UNIT_NS[match.group(2)])
        position = match.end()
    if position == 0 or position != len(text):
        return None
    return sign * total


def parse_input_time(text: str, since: bool, now_ns: int | None = None) -> int:
    """podman's ParseInputTime: --since/--until's value in ns; ValueError naming what it takes."""
    value = parse_rfc3339(text)
    if value is not None:
        return value
    unix = _UNIX_TIME.match(text.strip())
    if unix is not None:
        whole, fraction = unix.groups()
        sign = -1 if whole.startswith("-") else 1
        return int(whole) * 10**9 + sign * int((fraction or "")[:9].ljust(9, "0"))
    duration = parse_duration(text)
    if duration is None:
        raise ValueError(f"invalid time {text!r}: give an RFC 3339 time (2006-01-02T15:04:05Z), a unix time "
                         f"(1700000000) or a duration (10m, 1h30m)")
    now_ns = time.time_ns() if now_ns is None else now_ns
    return now_ns - duration if since else now_ns + duration


def format_rfc3339_nano(nanos: int) -> str:
    """Go's time.RFC3339Nano in UTC: trailing zeros of the fraction dropped, Z for the offset."""
    seconds, fraction = divmod(nanos, 10**9)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def format_go_time(nanos: int) -> str:
    """Go's time.Time.String() in UTC, as podman prints event times:
    2026-12-07 06:05:19.706707511 +0000 UTC."""
    seconds, fraction = divmod(nanos, 10**9)
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + " +0000 UTC"
