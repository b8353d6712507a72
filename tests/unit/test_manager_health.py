"""Health-check configuration and status rules (capsa.manager.health)."""

import pytest

from capsa.manager.errors import ManagerError
from capsa.manager.health import (
    HEALTHY,
    STARTING,
    UNHEALTHY,
    HealthConfig,
    HealthState,
    parse_duration,
    parse_test,
)


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("0", 0),
                                           ("1.5s", 1.5)])
def test_durations(text, seconds):
    assert parse_duration(text, "x") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "s", "1x", "1m 30s", "-5s"])
def test_bad_durations_name_the_option(text):
    with pytest.raises(ManagerError, match="invalid --health-interval"):
        parse_duration(text, "--health-interval")


def test_command_forms():
    assert parse_test("curl -f localhost") == ["CMD-SHELL", "curl -f localhost"]
    assert parse_test('["/bin/check", "a b"]') == ["CMD", "/bin/check", "a b"]
    assert parse_test('["CMD-SHELL", "exit 0"]') == ["CMD-SHELL", "exit 0"]
    assert parse_test("none") == ["NONE"]
    assert HealthConfig(parse_test("exit 1")).command() == ["/bin/sh", "-c", "exit 1"]
    assert HealthConfig(parse_test('["/bin/true"]')).command() == ["/bin/true"]
    with pytest.raises(ManagerError, match="not a JSON array"):
        parse_test("[oops")


def test_flags_over_the_images_healthcheck():
    image = {"Test": ["CMD-SHELL", "check"], "Interval": 10 * 10**9, "Retries": 5}
    config = HealthConfig.from_flags(None, timeout="2s", image_healthcheck=image)
    assert (config.test, config.interval, config.timeout, config.retries) == (["CMD-SHELL", "check"], 10, 2, 5)
    assert HealthConfig.from_flags("none", image_healthcheck=image) is None
    assert HealthConfig.from_flags(None, image_healthcheck=image, no_healthcheck=True) is None
    assert HealthConfig.from_flags("true", interval="disable").interval is None
    again = HealthConfig.from_record(config.record())
    assert again.record() == config.record()


@pytest.mark.parametrize("flags, problem", [
    ({"cmd": None, "interval": "5s"}, "need --health-cmd"),
    ({"cmd": "true", "retries": 0}, "--health-retries"),
    ({"cmd": "true", "on_failure": "explode"}, "--health-on-failure"),
    ({"cmd": "true", "timeout": "0"}, "--health-timeout"),
])
def test_malformed_options(flags, problem):
    with pytest.raises(ManagerError, match=problem):
        HealthConfig.from_flags(**flags)


def test_status_rules():
    config = HealthConfig(["CMD", "x"], retries=2)
    state = HealthState()
    assert not state.add_result(config, 1, "boom", "t0", "t1", in_start_period=True)  # not counted
    assert (state.status, state.failing_streak) == (STARTING, 0)
    assert state.add_result(config, 0, "ok", "t", "t", in_start_period=False)
    assert state.status == HEALTHY
    state.add_result(config, 1, "", "t", "t", in_start_period=False)
    assert state.status == HEALTHY and state.failing_streak == 1
    assert state.add_result(config, 1, "x" * 1000, "t", "t", in_start_period=False)
    assert state.status == UNHEALTHY and len(state.log[-1]["Output"]) == 500
    for _ in range(10):
        state.add_result(config, 1, "", "t", "t", in_start_period=False)
    assert len(state.log) == 5
