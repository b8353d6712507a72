"""Container logs in podman's k8s-file format: one line per record,

    2026-12-07T05:53:00.123456789+00:00 stdout F hello

RFC 3339 time with nanoseconds, the stream, F for a full line or P for a partial one (a line
longer than a read, or output that did not end with a newline), then the text.

(First cut: the writer. Reading with --since/--tail/-t, following across rotation, max-size and
max-file rotation: issue 17's logs work.)
"""

from __future__ import annotations

import os
import time


def timestamp() -> str:
    now = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 10**9)) + f".{now % 10**9:09d}+00:00"


class LogWriter:
    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, stream: str, data: bytes) -> None:
        stamp = timestamp().encode()
        records = []
        lines = data.split(b"\n")
        for line in lines[:-1]:
            records.append(b"%s %s F %s\n" % (stamp, stream.encode(), line))
        if lines[-1]:
            records.append(b"%s %s P %s\n" % (stamp, stream.encode(), lines[-1]))
        os.write(self.fd, b"".join(records))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
