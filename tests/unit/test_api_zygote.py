"""The zygote's seccomp filter, built before the fork and found made by the sandbox's init."""

from __future__ import annotations

import pytest

from capsa import init
from capsa.api import zygote


@pytest.fixture(autouse=True)
def _no_prebuilt(monkeypatch):
    monkeypatch.setattr(init, "prebuilt_seccomp", None)
    monkeypatch.setattr(zygote, "_filters", {})


def test_the_init_takes_the_filter_built_for_its_very_profile(monkeypatch):
    profile = {"defaultAction": "SCMP_ACT_ALLOW"}
    made = object()
    monkeypatch.setattr(init, "prebuilt_seccomp", (profile, made))
    assert init.build_seccomp(profile) is made


def test_another_profile_is_built_as_before(monkeypatch):
    built = []
    monkeypatch.setattr("capsa.seccomp.Filter", lambda profile, cache_dir: built.append(profile) or "new")
    monkeypatch.setattr(init, "prebuilt_seccomp", ({"defaultAction": "SCMP_ACT_ALLOW"}, "old"))
    other = {"defaultAction": "SCMP_ACT_ALLOW"}  # equal, but not the same object
    assert init.build_seccomp(other) == "new"
    assert built == [other]


def test_the_zygote_builds_one_filter_per_profile_and_none_without_one(monkeypatch):
    built = []
    monkeypatch.setattr("capsa.seccomp.Filter", lambda profile, cache_dir: built.append(cache_dir) or object())
    first = {"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}}}
    second = {"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}}}
    profile, made = zygote._seccomp_filter(first, "/run/x")
    assert profile is first["linux"]["seccomp"]
    again, made_again = zygote._seccomp_filter(second, "/run/x")
    assert again is second["linux"]["seccomp"] and made_again is made
    assert built == ["/run/x/@seccomp-bpf"]
    assert zygote._seccomp_filter({"linux": {}}, "/run/x") is None


def test_a_profile_the_zygote_cannot_build_is_left_to_the_init_to_report(monkeypatch):
    from capsa.errors import ConfigError

    def refuse(profile, cache_dir):
        raise ConfigError("linux.seccomp.defaultAction", "bad")

    monkeypatch.setattr("capsa.seccomp.Filter", refuse)
    assert zygote._seccomp_filter({"linux": {"seccomp": {"defaultAction": "NOPE"}}}, "/run/x") is None
