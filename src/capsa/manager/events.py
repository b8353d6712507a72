"""The event log: one JSON object per line in <graph root>/events/events.log, appended with
O_APPEND (a line is one write, so parallel writers do not interleave), podman's file backend.

(First cut: emit. Reading, filters, --since/--until, following and rotation: issue 17.)
"""

from __future__ import annotations

import json
import os
import time


def emit(paths, status: str, kind: str = "container", *, id: str = "", name: str = "", image: str = "",
         attributes: dict | None = None) -> None:
    """Record one lifecycle event: `status` is podman's word (create, init, start, died, stop,
    pause, unpause, remove, pull, push, tag, untag, ...), `kind` container, image, volume or pod."""
    event = {"Type": kind, "Status": status, "ID": id, "Name": name, "Image": image,
             "Time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z",
             "TimeNano": time.time_ns()}
    if attributes:
        event["Attributes"] = attributes
    line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
    os.makedirs(os.path.dirname(paths.events_log), mode=0o700, exist_ok=True)
    fd = os.open(paths.events_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
