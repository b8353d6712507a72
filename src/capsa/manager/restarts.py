"""Restart policies at work (issue 18): what the exit hook does after recording an exit, and the
restarter process that brings the container back (the rules themselves: capsa.manager.policy).

After the exit is recorded (Containers.exited, in the monitor's hook or in an attached client),
`decide` asks the container's policy (config RestartPolicy) whether to restart it:
    - yes: the state gets RestartPending, and a restarter is spawned: a detached process of its
      own (a new session, no fd of the caller's), since neither the monitor (it removes its own
      files once its hook returns) nor a foreground `run` (it returns the exit code) can wait.
      It (capsa.manager.restarter) sleeps the back-off (policy.backoff of the streak of quick restarts), then starts the
      container "by policy" (Containers.start by_policy: RestartCount + 1, a `restart` event),
      unless meanwhile the user stopped, killed, started or removed it (the claim checks
      RestartPending and StoppedByUser in the store's transaction, so it is atomic);
    - on-failure:N that used its N restarts: a `restart-gave-up` event says so.
A start by policy that fails (its command gone: 127) is an exit like any other: decided again.

The streak (state RestartStreak) counts the restarts since the container last ran for
policy.RESET_AFTER seconds: the back-off is 100 ms, 200 ms, ... up to 1 min, and starts over
after a good run.
"""

from __future__ import annotations

import os

from capsa.manager import events, policy

# The restarter's entry, run by a fresh `python -I -S` (as the lean monitor's): the package's
# parent directory first on its path.
_BOOT = ("import sys; sys.path[:0] = [sys.argv[1]]; "
         "from capsa.manager.restarter import main; main(sys.argv[2:])")


def policy_of(container) -> policy.RestartPolicy:
    return policy.RestartPolicy.parse(container.config.get("RestartPolicy") or "no")


def ran_for(state: dict) -> float:
    """Seconds between StartedAt and FinishedAt (0 when either is unknown)."""
    from capsa.manager.times import parse_rfc3339

    started = parse_rfc3339(state.get("StartedAt") or "")
    finished = parse_rfc3339(state.get("FinishedAt") or "")
    if started is None or finished is None:
        return 0.0
    return max(0.0, (finished - started) / 1e9)


def next_streak(streak: int, seconds_run: float) -> int:
    """The back-off's step for the next restart: a good run (RESET_AFTER seconds) starts over."""
    return 0 if seconds_run >= policy.RESET_AFTER else streak


def decide(manager, container, seconds_run: float | None = None) -> None:
    """Called once an exit is recorded (status exited): restart, give up, or nothing.
    seconds_run: how long it ran (a failed start: 0), else from StartedAt and FinishedAt."""
    rule = policy_of(container)
    if rule.name == "no":
        return
    state = container.state
    stopped = bool(state.get("StoppedByUser"))
    code = state.get("ExitCode", 0)
    count = state.get("RestartCount", 0)
    if rule.should_restart(code, count, stopped):
        streak = next_streak(state.get("RestartStreak", 0), ran_for(state) if seconds_run is None else seconds_run)
        if manager.mark_restart_pending(container.id, streak):
            spawn(manager.paths, container.id)
    elif rule.gave_up(code, count, stopped):
        events.emit(manager.paths, "restart-gave-up", id=container.id, name=container.name,
                    image=container.config.get("ImageName", ""),
                    attributes={"restartPolicy": str(rule), "restartCount": str(count),
                                "containerExitCode": str(code)})


def spawn(paths, container_id: str) -> None:
    """The restarter, detached: a session of its own, stdio on /dev/null but its errors, which
    go to <run root>/restarts/<id>.log (kept only if not empty)."""
    import subprocess
    import sys

    import capsa

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(capsa.__file__)))
    log_dir = os.path.join(paths.run_root, "restarts")
    os.makedirs(log_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(log_dir, f"{container_id}.log"), "ab") as log:
        subprocess.Popen([sys.executable, "-I", "-S", "-c", _BOOT, package_parent, paths.graph_root, paths.run_root,
                          paths.state_root, container_id],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, close_fds=True,
                         start_new_session=True, cwd="/")
