"""Restart policies and dependency order: the pure rules of issue 18 (libpod's
handleRestartPolicy and startDependencies), applied by the monitor and the container manager.

Restart policies (podman's meaning; docker's for unless-stopped after a reboot):
    no                 never restart
    on-failure[:N]     restart when the exit code is not 0, at most N times (N omitted: no limit)
    always             restart whatever the exit code
    unless-stopped     as always; and after a reboot, only if the user had not stopped it
A container the user stopped or killed (stop, kill, rm) is never restarted by its monitor.
Between restarts the monitor waits a growing back-off: 100 ms doubled each time, at most 1 min
(docker's daemon uses the same shape), reset once the container ran for 10 s.
"""

from __future__ import annotations

from capsa.manager.errors import ManagerError

POLICIES = ("no", "on-failure", "always", "unless-stopped")
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 60.0
RESET_AFTER = 10.0  # seconds of running that count as a good start: the back-off starts over


class RestartPolicy:
    __slots__ = ("name", "max_retries")

    def __init__(self, name: str = "no", max_retries: int = 0):
        self.name = name
        self.max_retries = max_retries  # on-failure only; 0: no limit

    @classmethod
    def parse(cls, text: str | None) -> RestartPolicy:
        """`--restart` as podman takes it: no, on-failure[:N], always, unless-stopped."""
        if text is None or text == "":
            return cls()
        name, colon, count = text.partition(":")
        if name not in POLICIES:
            raise ManagerError(f"invalid restart policy {text!r}: use no, on-failure[:N], always or unless-stopped")
        if colon:
            if name != "on-failure":
                raise ManagerError(f"invalid restart policy {text!r}: only on-failure takes a retry count")
            if not count.isdigit() or int(count) < 0:
                raise ManagerError(f"invalid restart policy {text!r}: the retry count must be a number >= 0")
            return cls(name, int(count))
        return cls(name)

    def __str__(self) -> str:
        if self.name == "on-failure" and self.max_retries:
            return f"on-failure:{self.max_retries}"
        return self.name

    def record(self) -> dict:
        """podman inspect's HostConfig.RestartPolicy."""
        return {"Name": "" if self.name == "no" else self.name, "MaximumRetryCount": self.max_retries}

    def should_restart(self, exit_code: int, restart_count: int, stopped_by_user: bool) -> bool:
        """Does the monitor restart a container that just exited with `exit_code`, after
        `restart_count` restarts so far?"""
        if stopped_by_user or self.name == "no":
            return False
        if self.name == "on-failure":
            if exit_code == 0:
                return False
            return self.max_retries == 0 or restart_count < self.max_retries
        return True

    def gave_up(self, exit_code: int, restart_count: int, stopped_by_user: bool) -> bool:
        """on-failure:N that exhausted its retries (said in events and inspect)."""
        return (self.name == "on-failure" and not stopped_by_user and exit_code != 0
                and self.max_retries != 0 and restart_count >= self.max_retries)

    def starts_at_boot(self, stopped_by_user: bool) -> bool:
        """Is the container brought back by `start --all --filter restart-policy=...` at boot?"""
        return self.name == "always" or (self.name == "unless-stopped" and not stopped_by_user)


def backoff(restart_count: int) -> float:
    """Seconds to wait before restart number `restart_count + 1`."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * (2 ** min(restart_count, 20)))


def start_order(target: str, requires: dict[str, list[str]]) -> list[str]:
    """The containers to start for `target`, dependencies first (depth-first, in the order they
    are listed), `target` last. `requires` maps a container to the ones it requires; a name
    missing from it is a missing dependency. A cycle is an error naming its containers."""
    order: list[str] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str, needed_by: str | None) -> None:
        if name in done:
            return
        if name in path:
            cycle = path[path.index(name):] + [name]
            raise ManagerError(f"dependency cycle: {' -> '.join(cycle)}")
        if name not in requires:
            raise ManagerError(f"container {needed_by} requires {name}, which does not exist")
        path.append(name)
        for dependency in requires[name]:
            visit(dependency, name)
        path.pop()
        done.add(name)
        order.append(name)

    visit(target, None)
    return order


def required_by(name: str, requires: dict[str, list[str]]) -> list[str]:
    """The containers that require `name` (rm refuses while there are any)."""
    return sorted(other for other, dependencies in requires.items() if name in dependencies and other != name)
