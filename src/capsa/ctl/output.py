"""Output as podman writes it: sizes, times ago, tables and --format."""

from __future__ import annotations

import time


def human_size(size: int) -> str:
    """podman's (go-units') decimal sizes: 4.1 MB, 1.23 GB."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.4g} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1000
    return f"{size} B"


def human_time(rfc3339: str) -> str:
    """'3 minutes ago' from an RFC 3339 UTC time (the store's form)."""
    import calendar

    try:
        then = calendar.timegm(time.strptime(rfc3339[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return rfc3339
    seconds = max(0, int(time.time() - then))
    for unit, length in (("year", 31536000), ("month", 2592000), ("week", 604800), ("day", 86400),
                         ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = seconds // length
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return f"{seconds} seconds ago" if seconds != 1 else "1 second ago"
