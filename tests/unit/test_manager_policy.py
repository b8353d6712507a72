"""Restart policies and dependency order (capsa.manager.policy)."""

import pytest

from capsa.manager.errors import ManagerError
from capsa.manager.policy import RestartPolicy, backoff, required_by, start_order


@pytest.mark.parametrize("text, name, retries", [
    (None, "no", 0), ("no", "no", 0), ("always", "always", 0), ("unless-stopped", "unless-stopped", 0),
    ("on-failure", "on-failure", 0), ("on-failure:3", "on-failure", 3),
])
def test_parse(text, name, retries):
    policy = RestartPolicy.parse(text)
    assert (policy.name, policy.max_retries) == (name, retries)


@pytest.mark.parametrize("text", ["sometimes", "always:3", "on-failure:x", "on-failure:-1", "On-Failure"])
def test_malformed_policies_are_refused_by_name(text):
    with pytest.raises(ManagerError, match="invalid restart policy"):
        RestartPolicy.parse(text)


def test_on_failure_counts_retries_and_ignores_success():
    policy = RestartPolicy.parse("on-failure:2")
    assert policy.should_restart(1, 0, False) and policy.should_restart(1, 1, False)
    assert not policy.should_restart(1, 2, False)
    assert policy.gave_up(1, 2, False)
    assert not policy.should_restart(0, 0, False)
    assert RestartPolicy.parse("on-failure").should_restart(3, 1000, False)


def test_user_stop_ends_restarts_and_unless_stopped_at_boot():
    for name in ("always", "unless-stopped", "on-failure"):
        assert not RestartPolicy.parse(name).should_restart(1, 0, stopped_by_user=True)
    assert RestartPolicy.parse("always").starts_at_boot(stopped_by_user=True)
    assert not RestartPolicy.parse("unless-stopped").starts_at_boot(stopped_by_user=True)
    assert RestartPolicy.parse("unless-stopped").starts_at_boot(stopped_by_user=False)
    assert not RestartPolicy.parse("no").starts_at_boot(stopped_by_user=False)


def test_backoff_grows_and_is_capped():
    delays = [backoff(n) for n in range(12)]
    assert delays == sorted(delays) and delays[0] == 0.1 and delays[1] == 0.2
    assert backoff(100) == 60.0


def test_dependencies_start_first_in_graph_order():
    requires = {"web": ["db", "cache"], "db": ["volume-init"], "cache": [], "volume-init": []}
    assert start_order("web", requires) == ["volume-init", "db", "cache", "web"]
    assert required_by("db", requires) == ["web"]


def test_cycle_and_missing_dependency_name_the_containers():
    with pytest.raises(ManagerError, match="a -> b -> c -> a"):
        start_order("a", {"a": ["b"], "b": ["c"], "c": ["a"]})
    with pytest.raises(ManagerError, match="web requires db, which does not exist"):
        start_order("web", {"web": ["db"]})
