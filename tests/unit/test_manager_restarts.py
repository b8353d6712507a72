"""The restart part's pure logic (capsa.manager.restarts and the restart bookkeeping of
capsa.manager.containers); the rules themselves are test_manager_policy's."""

from __future__ import annotations

import pytest

from capsa.manager import containers, restarts
from capsa.manager.errors import InvalidState, ManagerError


def container(state: dict | None = None, policy: str = "always"):
    import json

    return containers.Container({"id": "c" * 64, "name": "c", "image_id": "i", "status": "exited",
                                 "config": json.dumps({"Spec": {}, "RestartPolicy": policy}),
                                 "state": json.dumps(state or {}), "created": "now"})


def test_ran_for_is_finished_minus_started():
    state = {"StartedAt": "2026-01-01T00:00:00.5Z", "FinishedAt": "2026-01-01T00:00:12Z"}
    assert restarts.ran_for(state) == 11.5
    assert restarts.ran_for({}) == 0.0
    assert restarts.ran_for({"StartedAt": "2026-01-01T00:00:00Z", "FinishedAt": "junk"}) == 0.0


def test_a_good_run_starts_the_backoff_over():
    assert restarts.next_streak(5, 0.2) == 5
    assert restarts.next_streak(5, 10.0) == 0


def test_policy_of_reads_the_config():
    assert str(restarts.policy_of(container(policy="on-failure:3"))) == "on-failure:3"
    assert restarts.policy_of(container(policy=None)).name == "no"


@pytest.mark.parametrize("text,expected", [(None, "no"), ("", "no"), ("always", "always"),
                                           ("on-failure", "on-failure"), ("on-failure:0", "on-failure"),
                                           ("on-failure:4", "on-failure:4"), ("unless-stopped", "unless-stopped")])
def test_the_restart_option_is_kept_canonical(text, expected):
    assert containers._restart_policy_option({"restart": text}) == expected


@pytest.mark.parametrize("options", [{"restart": "often"}, {"restart": "always:2"}, {"restart": "on-failure:x"},
                                     {"restart": "always", "rm": True}])
def test_bad_restart_options_are_errors(options):
    with pytest.raises(ManagerError):
        containers._restart_policy_option(options)


def test_rm_with_no_policy_is_fine():
    assert containers._restart_policy_option({"restart": "no", "rm": True}) == "no"


def test_the_restarters_start_counts_and_needs_a_pending_restart():
    pending = container({"RestartPending": True, "RestartCount": 2, "RestartStreak": 1})
    containers._restart_bookkeeping(pending, by_policy=True)
    assert pending.state == {"RestartCount": 3, "RestartStreak": 2}
    with pytest.raises(InvalidState):
        containers._restart_bookkeeping(container({}), by_policy=True)  # started or stopped meanwhile
    with pytest.raises(InvalidState):
        containers._restart_bookkeeping(container({"RestartPending": True, "StoppedByUser": True}), by_policy=True)


def test_the_users_start_is_a_new_life():
    stopped = container({"StoppedByUser": True, "RestartCount": 4, "RestartStreak": 3, "RestartPending": True})
    containers._restart_bookkeeping(stopped, by_policy=False)
    assert stopped.state == {"RestartCount": 0, "RestartStreak": 0}


def test_inspect_record_of_the_policy():
    assert containers._restart_policy_record("on-failure:2") == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert containers._restart_policy_record(None) == {"Name": "", "MaximumRetryCount": 0}
    assert containers._restart_policy_record("garbage") == {"Name": "", "MaximumRetryCount": 0}
