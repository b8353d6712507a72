"""seccomp.shared_filter: one Filter for equal profiles (built by the parent before each fork:
a program making container after container with one profile builds it once)."""

from __future__ import annotations

import pytest

from capsa import init, seccomp
from capsa.errors import ConfigError


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setattr(seccomp, "_last_shared", None)


class FakeFilter:
    def __init__(self, profile, cache_dir=None, notifies=False):
        self.profile, self.cache_dir, self.notifies = profile, cache_dir, notifies


def test_equal_profiles_share_one_filter_and_a_changed_one_is_built_again(monkeypatch):
    built = []
    monkeypatch.setattr(seccomp, "Filter", lambda profile, cache_dir: built.append(profile) or FakeFilter(profile))
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}
    first = init.build_seccomp(profile, "/run/x")
    assert init.build_seccomp({**profile}, "/run/x") is first  # equal, another object
    profile["syscalls"][0]["names"].append("write")  # the caller's dict, changed afterwards
    assert init.build_seccomp(profile, "/run/x") is not first
    assert len(built) == 2


def test_another_cache_directory_is_another_filter(monkeypatch):
    monkeypatch.setattr(seccomp, "Filter", lambda profile, cache_dir: FakeFilter(profile, cache_dir))
    profile = {"defaultAction": "SCMP_ACT_ERRNO"}
    assert init.build_seccomp(profile, "/run/a") is not init.build_seccomp(profile, "/run/b")


def test_a_notifying_filter_is_never_shared(monkeypatch):
    monkeypatch.setattr(seccomp, "Filter", lambda profile, cache_dir: FakeFilter(profile, notifies=True))
    profile = {"defaultAction": "SCMP_ACT_ERRNO"}
    assert init.build_seccomp(profile) is not init.build_seccomp(profile)


def test_no_profile_no_filter():
    assert init.build_seccomp(None) is None and init.build_seccomp({}) is None


def test_a_profile_equal_to_the_last_valid_one_is_not_checked_again_and_a_changed_one_is(monkeypatch):
    monkeypatch.setattr(seccomp, "_last_valid", None)
    monkeypatch.setattr(seccomp, "_checked_one", False)
    checked = []
    real = seccomp._check_profile
    monkeypatch.setattr(seccomp, "_check_profile", lambda profile: (checked.append(1), real(profile)))
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}
    for _ in range(4):
        seccomp.validate_profile(profile)
    assert len(checked) == 2  # the first (the command line's only one) keeps no copy; the second does
    profile["syscalls"][0]["action"] = "SCMP_ACT_NO_SUCH_ACTION"  # the same dict, changed in place
    with pytest.raises(ConfigError, match="syscalls"):
        seccomp.validate_profile(profile)
