"""Health checks: configuration and the status rules (podman's healthcheck), applied by the
monitor, which runs the checks on its own schedule (no systemd timer needed).

Configuration, from `run` flags or the image's Healthcheck (durations in nanoseconds there):
    test          ["CMD-SHELL", "curl -f localhost"] (a string: through /bin/sh -c),
                  ["CMD", "prog", "arg"] (a JSON array: run directly), ["NONE"]: disabled
    interval      between checks (default 30s; "disable": only `capsactl healthcheck run`)
    timeout       a check running longer fails (default 30s)
    retries       consecutive failures that make the container unhealthy (default 3)
    start_period  failures during it do not count (default 0s)
    on_failure    none, kill, restart or stop: what to do once unhealthy

Status: "starting" until the first success (or `retries` counted failures), then "healthy" or
"unhealthy"; the last 5 results are kept (start, end, exit code, output up to 500 bytes).
"""

from __future__ import annotations

import json
import re

from capsa.manager.errors import ManagerError

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
ON_FAILURE_ACTIONS = ("none", "kill", "restart", "stop")
KEPT_RESULTS = 5
MAX_OUTPUT = 500

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str, what: str) -> float:
    """A Go duration ("1m30s", "500ms", "2h") in seconds; "0" is 0."""
    if text == "0":
        return 0.0
    position, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ManagerError(f"invalid {what} {text!r}: a duration such as 30s, 1m30s or 500ms")
    return total


class HealthConfig:
    __slots__ = ("test", "interval", "timeout", "retries", "start_period", "on_failure")

    def __init__(self, test: list[str], interval: float | None = DEFAULT_INTERVAL, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, start_period: float = 0.0, on_failure: str = "none"):
        self.test = test
        self.interval = interval  # None: no schedule ("disable")
        self.timeout = timeout
        self.retries = retries
        self.start_period = start_period
        self.on_failure = on_failure

    @classmethod
    def from_flags(cls, cmd: str | None, interval: str | None = None, timeout: str | None = None,
                   retries: int | None = None, start_period: str | None = None, on_failure: str | None = None,
                   image_healthcheck: dict | None = None, no_healthcheck: bool = False) -> HealthConfig | None:
        """The container's health check: the flags over the image's Healthcheck; None: none."""
        if no_healthcheck:
            return None
        base = cls.from_image(image_healthcheck) if image_healthcheck else None
        if cmd is None and base is None:
            if any(v is not None for v in (interval, timeout, retries, start_period, on_failure)):
                raise ManagerError("health check options need --health-cmd (or an image with a Healthcheck)")
            return None
        config = base or cls(parse_test(cmd))
        if cmd is not None:
            config.test = parse_test(cmd)
            if config.test == ["NONE"]:
                return None
        if interval is not None:
            config.interval = None if interval == "disable" else parse_duration(interval, "--health-interval")
            if config.interval is not None and config.interval <= 0:
                raise ManagerError(f"invalid --health-interval {interval!r}: it must be positive (or disable)")
        if timeout is not None:
            config.timeout = parse_duration(timeout, "--health-timeout")
            if config.timeout <= 0:
                raise ManagerError(f"invalid --health-timeout {timeout!r}: it must be positive")
        if retries is not None:
            if retries < 1:
                raise ManagerError(f"invalid --health-retries {retries}: it must be at least 1")
            config.retries = retries
        if start_period is not None:
            config.start_period = parse_duration(start_period, "--health-start-period")
        if on_failure is not None:
            if on_failure not in ON_FAILURE_ACTIONS:
                raise ManagerError(f"invalid --health-on-failure {on_failure!r}: use {', '.join(ON_FAILURE_ACTIONS)}")
            config.on_failure = on_failure
        return config

    @classmethod
    def from_image(cls, healthcheck: dict) -> HealthConfig | None:
        """An image config's Healthcheck (Test, Interval, Timeout, StartPeriod in ns, Retries)."""
        test = healthcheck.get("Test") or []
        if not test or test == ["NONE"]:
            return None
        if test[0] not in ("CMD", "CMD-SHELL"):
            test = ["CMD", *test]
        seconds = lambda key, default: healthcheck[key] / 1e9 if healthcheck.get(key) else default  # noqa: E731
        return cls(list(test), seconds("Interval", DEFAULT_INTERVAL), seconds("Timeout", DEFAULT_TIMEOUT),
                   int(healthcheck.get("Retries") or DEFAULT_RETRIES), seconds("StartPeriod", 0.0))

    def command(self) -> list[str]:
        """The argv to exec in the container."""
        if self.test[0] == "CMD-SHELL":
            return ["/bin/sh", "-c", " ".join(self.test[1:])]
        return list(self.test[1:])

    def record(self) -> dict:
        """podman inspect's Config.Healthcheck (durations in ns)."""
        ns = lambda s: int(round(s * 1e9)) if s is not None else 0  # noqa: E731
        return {"Test": self.test, "Interval": ns(self.interval), "Timeout": ns(self.timeout),
                "Retries": self.retries, "StartPeriod": ns(self.start_period), "OnFailure": self.on_failure}

    @classmethod
    def from_record(cls, record: dict) -> HealthConfig:
        interval = record.get("Interval", 0) / 1e9 or None
        return cls(record["Test"], interval, record.get("Timeout", 0) / 1e9 or DEFAULT_TIMEOUT,
                   record.get("Retries", DEFAULT_RETRIES), record.get("StartPeriod", 0) / 1e9,
                   record.get("OnFailure", "none"))


def parse_test(cmd: str) -> list[str]:
    """--health-cmd: a JSON array runs directly (["CMD", ...] or a bare argv), anything else
    through the shell; "none" disables the image's."""
    text = cmd.strip()
    if text.lower() == "none":
        return ["NONE"]
    if not text:
        raise ManagerError("--health-cmd is empty")
    if text.startswith("["):
        try:
            argv = json.loads(text)
        except ValueError as err:
            raise ManagerError(f"invalid --health-cmd {cmd!r}: not a JSON array ({err})") from None
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ManagerError(f"invalid --health-cmd {cmd!r}: a JSON array of strings is needed")
        if argv[0] in ("CMD", "CMD-SHELL"):
            if len(argv) < 2:
                raise ManagerError(f"invalid --health-cmd {cmd!r}: {argv[0]} needs a command")
            return argv
        return ["CMD", *argv]
    return ["CMD-SHELL", text]


class HealthState:
    """podman inspect's State.Health: Status, FailingStreak, Log."""

    __slots__ = ("status", "failing_streak", "log")

    def __init__(self, status: str = STARTING, failing_streak: int = 0, log: list[dict] | None = None):
        self.status, self.failing_streak, self.log = status, failing_streak, log or []

    @classmethod
    def from_record(cls, record: dict | None) -> HealthState:
        if not record:
            return cls()
        return cls(record.get("Status", STARTING), record.get("FailingStreak", 0), list(record.get("Log") or []))

    def record(self) -> dict:
        return {"Status": self.status, "FailingStreak": self.failing_streak, "Log": self.log}

    def add_result(self, config: HealthConfig, exit_code: int, output: str, start: str, end: str,
                   in_start_period: bool) -> bool:
        """Count one check's result; True when the status changed (a health_status event)."""
        before = self.status
        self.log = [*self.log, {"Start": start, "End": end, "ExitCode": exit_code,
                                "Output": output[:MAX_OUTPUT]}][-KEPT_RESULTS:]
        if exit_code == 0:
            self.failing_streak = 0
            self.status = HEALTHY
        elif not in_start_period or self.status != STARTING:
            self.failing_streak += 1
            if self.failing_streak >= config.retries:
                self.status = UNHEALTHY
        return self.status != before
