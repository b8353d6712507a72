"""Progress of long image work (pull, push, load, save): podman's "Copying blob" lines.

On a terminal each blob gets a bar that is redrawn in place (one line per blob, left when it is
done); otherwise (a pipe, a log, a test) one plain line when a blob starts and one when it ends,
so that nothing but whole lines is ever written. `Progress(None)` says nothing (--quiet).
"""

from __future__ import annotations

import time


class Progress:
    def __init__(self, stream, terminal: bool | None = None):
        self.stream = stream
        if terminal is None:
            try:
                terminal = bool(stream) and stream.isatty()
            except (AttributeError, ValueError):
                terminal = False
        self.terminal = terminal

    def say(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text + "\n")
            self.stream.flush()

    def blob(self, digest: str, size: int | None, verb: str = "Copying blob") -> Bar:
        return Bar(self, f"{verb} {digest[7:19] if self.terminal else digest}", size)

    def skipped(self, digest: str, verb: str = "Copying blob") -> None:
        self.say(f"{verb} {digest[7:19] if self.terminal else digest} skipped: already exists")


class Bar:
    """One blob's progress: update(n) as bytes pass, done() at the end."""

    WIDTH = 30

    def __init__(self, progress: Progress, label: str, size: int | None):
        self.progress = progress
        self.label = label
        self.size = size
        self.count = 0
        self.last_draw = 0.0
        if progress.stream is not None and not progress.terminal:
            progress.say(label)

    def update(self, n: int) -> None:
        self.count += n
        if not self.progress.terminal or self.progress.stream is None:
            return
        current = time.monotonic()
        if current - self.last_draw >= 0.1:
            self.last_draw = current
            self._draw()

    def _draw(self, end: str = "") -> None:
        if self.size:
            filled = min(self.WIDTH, self.WIDTH * self.count // max(self.size, 1))
            bar = "[" + "=" * filled + ">" * (filled < self.WIDTH) + " " * (self.WIDTH - filled - 1) + "]"
            text = f"{self.label} {bar} {_size(self.count)} / {_size(self.size)}"
        else:
            text = f"{self.label} {_size(self.count)}"
        self.progress.stream.write("\r\x1b[K" + text + end)
        self.progress.stream.flush()

    def done(self, status: str = "done") -> None:
        if self.progress.stream is None:
            return
        if self.progress.terminal:
            self._draw(end=f" {status}\n")
        else:
            self.progress.say(f"{self.label} {status}")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f}{unit}" if unit != "B" else f"{int(value)}B"
        value /= 1024
    return f"{n}B"


class Counting:
    """A file object reading through that reports to a Bar."""

    def __init__(self, raw, bar: Bar | None):
        self.raw = raw
        self.bar = bar

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if self.bar is not None and data:
            self.bar.update(len(data))
        return data


QUIET = Progress(None)
