"""runc-style logging: `--log FILE` and `--log-format text|json`.

JSON lines are {"level","msg","time"} as logrus writes them. podman reads the whole log file as ONE
JSON object after a failure, so nothing below warning level is written unless --debug is given.
"""

from __future__ import annotations

import posix
import sys
import time

from capsa import jsonfast

_LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3}


class Logger:
    def __init__(self, path: str | None = None, fmt: str = "text", debug: bool = False):
        self.path = path
        self.fmt = fmt
        self.threshold = _LEVELS["debug"] if debug else _LEVELS["warning"]

    def debug(self, message: str) -> None:
        self._log("debug", message)

    def warning(self, message: str) -> None:
        self._log("warning", message)

    def error(self, message: str) -> None:
        """Errors go to the log; stderr gets the plain message when a log file takes the entry."""
        self._log("error", message)
        if self.path:
            sys.stderr.write(message + "\n")

    def _log(self, level: str, message: str) -> None:
        if _LEVELS[level] < self.threshold:
            return
        line = self._format(level, message)
        if not self.path:
            sys.stderr.write(line)
            return
        try:
            fd = posix.open(self.path, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC, 0o644)
        except OSError:
            sys.stderr.write(line)
            return
        try:
            posix.write(fd, line.encode())
        finally:
            posix.close(fd)

    def _format(self, level: str, message: str) -> str:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.fmt == "json":
            return jsonfast.dumps({"level": level, "msg": message, "time": now}) + "\n"
        return f"time={jsonfast.dumps(now)} level={level} msg={jsonfast.dumps(message)}\n"
