"""Running health checks (capsa.manager.healthcheck), the monitor's schedule of them and their
status in ps: the pure parts, and the kill of a process tree at a check's timeout."""

import os
import subprocess
import time

from capsa.ctl.containers import _matches, health_status, status_text
from capsa.manager.containers import _health_interval, _healthcheck_record, _reset_health, health_inspect
from capsa.manager.health import HealthConfig
from capsa.manager.healthcheck import descendants, in_start_period, kill_tree
from capsa.manager.monitor import _HealthTimer
from capsa.manager.paths import Paths


class FakeContainer:
    def __init__(self, status="running", healthcheck=None, health=None):
        self.id, self.name, self.status, self.image_id = "c" * 64, "c", status, ""
        self.config = {"Healthcheck": healthcheck, "ImageName": "busybox", "Labels": {}}
        self.state = {"StartedAt": "2026-01-01T00:00:00.000000000Z"}
        if health is not None:
            self.state["Health"] = health
        self.exit_code = 0


def test_start_period():
    started = "2026-01-01T00:00:00Z"
    start_ns = 1767225600 * 10**9
    assert in_start_period(started, 10, start_ns + 5 * 10**9)
    assert not in_start_period(started, 10, start_ns + 11 * 10**9)
    assert not in_start_period(started, 0, start_ns)
    assert not in_start_period(None, 10, start_ns)


def test_descendants_follow_parent_links():
    parents = {2: 1, 3: 2, 4: 3, 5: 1, 6: 5, 7: 2}
    assert descendants(2, parents) == {3, 4, 7}
    assert descendants(4, parents) == set()


def test_kill_tree_leaves_nothing_running():
    shell = subprocess.Popen(["sh", "-c", "sleep 1000 & sleep 1000 & wait"])
    time.sleep(0.2)
    from capsa.manager.healthcheck import _parents

    children = descendants(shell.pid, _parents())
    assert len(children) == 2
    kill_tree(shell.pid)
    shell.wait(10)
    for pid in children:
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] == "Z":
                    break
            time.sleep(0.05)
        else:
            assert not os.path.exists(f"/proc/{pid}"), f"{pid} still running"


def test_healthcheck_record_from_flags_and_image():
    image = {"Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 2 * 10**9}}
    record = _healthcheck_record(image, {"healthcheck": {"retries": 5}})
    assert record["Test"] == ["CMD-SHELL", "true"] and record["Interval"] == 2 * 10**9 and record["Retries"] == 5
    assert _healthcheck_record(image, {"healthcheck": {"none": True}}) is None
    assert _healthcheck_record({}, {}) is None
    assert _healthcheck_record({}, {"healthcheck": {"cmd": '["ls", "/"]'}})["Test"] == ["CMD", "ls", "/"]


def test_interval_for_the_monitor():
    every = HealthConfig(["CMD", "true"], interval=1.5).record()
    assert _health_interval(FakeContainer(healthcheck=every)) == 1.5
    disabled = HealthConfig(["CMD", "true"], interval=None).record()
    assert _health_interval(FakeContainer(healthcheck=disabled)) is None
    assert _health_interval(FakeContainer()) is None


def test_a_new_run_starts_over():
    record = HealthConfig(["CMD", "true"]).record()
    container = FakeContainer(healthcheck=record, health={"Status": "unhealthy", "FailingStreak": 3,
                                                          "Log": [{"ExitCode": 1}]})
    _reset_health(container)
    assert container.state["Health"] == {"Status": "starting", "FailingStreak": 0, "Log": [{"ExitCode": 1}]}
    plain = FakeContainer(health={"Status": "healthy"})
    _reset_health(plain)
    assert "Health" not in plain.state
    assert health_inspect(plain) == {"Status": "", "FailingStreak": 0, "Log": None}


def test_ps_shows_and_filters_the_health():
    record = HealthConfig(["CMD", "true"]).record()
    healthy = FakeContainer(healthcheck=record, health={"Status": "healthy"})
    assert status_text(healthy).endswith(" (healthy)") and status_text(healthy).startswith("Up")
    assert health_status(FakeContainer(healthcheck=record)) == "starting"
    assert "(" not in status_text(FakeContainer())
    assert _matches(healthy, ["health=healthy"]) and not _matches(healthy, ["health=unhealthy"])
    assert _matches(FakeContainer(), ["health=none"])


def test_the_monitors_timer_is_due_every_interval_after_the_last_check():
    timer = _HealthTimer(30.0, Paths("/g", "/r", "/s"), "c" * 64)
    assert 29 < timer.timeout(None) <= 30
    assert timer.timeout(0.5) == 0.5
    spawned = []
    timer._spawn = lambda: spawned.append(1)
    timer.tick([])
    assert not spawned
    timer.due = time.monotonic() - 1
    timer.tick([])
    assert spawned == [1]


def test_a_stuck_scheduled_checker_is_ended_by_its_watchdog():
    """The monitor runs one check at a time: a checker stuck past its check's timeout (plus the
    grace) must end, or no check would run again."""
    import os
    import signal
    import time

    from capsa.manager.healthcheck import _watchdog

    pid = os.fork()
    if pid == 0:
        try:
            _watchdog(0.5)
            time.sleep(30)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM
